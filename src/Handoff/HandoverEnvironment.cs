using System.Globalization;
using System.Text;

namespace Handoff;

/// <summary>
/// The one environment variable that marks a process as a new generation started by Handoff,
/// and tells it which inherited descriptors carry what. See docs/protocol.md.
/// </summary>
/// <remarks>
/// Format: <c>HANDOFF_HANDOVER=v1;parent=PID;generation=N;listen=3,4;ready=5</c>.
/// <list type="bullet">
/// <item><c>parent</c>: the pid of the generation that started this one. The new generation
/// checks it against <c>getppid()</c>, which rejects a variable copied into some other
/// process (stale) or set by hand (forged).</item>
/// <item><c>generation</c>: this process's generation number, 1 for the first start.</item>
/// <item><c>listen</c>: the listening sockets, placed at consecutive descriptors from 3 on in
/// the order the old generation claimed them (possibly empty).</item>
/// <item><c>ready</c>: the write end of a pipe, the descriptor right after the listeners, on
/// which the new generation reports ready or failed.</item>
/// </list>
/// </remarks>
internal sealed record HandoverEnvironment(int ParentPid, int Generation, IReadOnlyList<int> ListenFds, int ReadyFd)
{
    /// <summary>The variable's name.</summary>
    public const string VariableName = "HANDOFF_HANDOVER";

    /// <summary>The first descriptor after stdin, stdout and stderr, where listeners start
    /// (the systemd socket-activation layout).</summary>
    public const int FirstFd = 3;

    private const string Version = "v1";

    // A bound that a real deployment never reaches and a forged value cannot push past.
    private const int MaxListeners = 512;

    /// <summary>The layout for a new generation that receives <paramref name="listenerCount"/>
    /// listeners.</summary>
    public static HandoverEnvironment ForChild(int parentPid, int generation, int listenerCount) =>
        new(parentPid, generation, [.. Enumerable.Range(FirstFd, listenerCount)], FirstFd + listenerCount);

    public string Format()
    {
        var text = new StringBuilder(Version);
        text.Append(CultureInfo.InvariantCulture, $";parent={ParentPid};generation={Generation};listen=");
        text.AppendJoin(',', ListenFds);
        text.Append(CultureInfo.InvariantCulture, $";ready={ReadyFd}");
        return text.ToString();
    }

    /// <summary>Parses the variable's value, checking its syntax and layout; the descriptors
    /// themselves are checked by <see cref="Inheritance"/>.</summary>
    /// <exception cref="HandoffProtocolException">The value is malformed.</exception>
    public static HandoverEnvironment Parse(string value)
    {
        string[] parts = value.Split(';');
        if (parts.Length != 5 || parts[0] != Version)
        {
            throw Malformed(value, $"expected '{Version};parent=PID;generation=N;listen=FD,...;ready=FD'");
        }

        int parent = ParsePositive(value, Field(value, parts[1], "parent"), "parent");
        int generation = ParsePositive(value, Field(value, parts[2], "generation"), "generation");
        string listenText = Field(value, parts[3], "listen");
        int ready = ParsePositive(value, Field(value, parts[4], "ready"), "ready");

        var listen = new List<int>();
        if (listenText.Length > 0)
        {
            foreach (string fd in listenText.Split(','))
            {
                listen.Add(ParsePositive(value, fd, "listen"));
            }
        }

        if (generation < 2)
        {
            throw Malformed(value, "generation must be 2 or more in an inherited environment");
        }

        if (listen.Count > MaxListeners)
        {
            throw Malformed(value, $"more than {MaxListeners} listeners");
        }

        var expected = ForChild(parent, generation, listen.Count);
        if (!listen.SequenceEqual(expected.ListenFds) || ready != expected.ReadyFd)
        {
            throw Malformed(value, $"descriptors must be consecutive from {FirstFd}: listeners first, then the ready pipe");
        }

        return expected;
    }

    private static string Field(string value, string part, string key)
    {
        string prefix = key + "=";
        return part.StartsWith(prefix, StringComparison.Ordinal)
            ? part[prefix.Length..]
            : throw Malformed(value, $"expected '{key}=' but found '{part}'");
    }

    private static int ParsePositive(string value, string text, string key) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int number) && number > 0
            ? number
            : throw Malformed(value, $"'{key}' must be a positive integer, not '{text}'");

    private static HandoffProtocolException Malformed(string value, string why) =>
        new($"The environment variable {VariableName}='{value}' is malformed: {why}. It is set by Handoff for a new generation only; remove it from the environment to start a first generation.");
}
