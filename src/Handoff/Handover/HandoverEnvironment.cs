using System.Globalization;
using System.Text;

namespace Handoff;

/// <summary>
/// The one environment variable that marks a process as a new generation started by Handoff,
/// and tells it which inherited descriptors carry what. See docs/protocol.md.
/// </summary>
/// <remarks>
/// Format: <c>HANDOFF_HANDOVER=v3;parent=PID;generation=N;listen=3,4;ready=5;ids=11,12,13;older=PID:START,...;activated=3;detached=0</c>
/// (<c>v2</c>, written by earlier builds, is the same without <c>activated</c> and <c>detached</c>).
/// <list type="bullet">
/// <item><c>parent</c>: the pid of the generation that started this one. When
/// <c>getppid()</c> differs, the parent died before the new generation started; it adopts what it
/// was handed all the same when the descriptors are authentic (see <c>ids</c>).</item>
/// <item><c>generation</c>: this process's generation number, 1 for the first start.</item>
/// <item><c>listen</c>: the listening sockets, placed at consecutive descriptors from 3 on in
/// the order the old generation claimed them (possibly empty).</item>
/// <item><c>ready</c>: the write end of a pipe, the descriptor right after the listeners, on
/// which the new generation reports ready or failed.</item>
/// <item><c>ids</c>: the kernel's inode number of each of those descriptors (sockets, then the
/// pipe), as <c>/proc/self/fd</c> shows them. A copy of the variable in some other process
/// (stale) or one written by hand (forged) does not match the descriptors that process holds,
/// and is rejected before any descriptor is touched.</item>
/// <item><c>older</c>: the older generations (the parent first) as <c>PID:STARTTIME</c>, so a
/// generation knows which of them may still be draining (see
/// <see cref="HandoffOptions.MaxDrainingGenerations"/>).</item>
/// <item><c>activated</c>: the listeners (a subset of <c>listen</c>) that systemd created for the
/// first generation (socket activation). systemd holds them too, so no generation removes their
/// Unix socket paths, and a server with no configured address serves them.</item>
/// <item><c>detached</c>: 1 when the old generation started this one through an intermediate
/// process that exited at once (under systemd, so that systemd is this process's parent and
/// sees it as its own): the old generation does not know this pid, so the new one reports it
/// first thing on the ready pipe (<c>pid N</c>).</item>
/// </list>
/// </remarks>
internal sealed record HandoverEnvironment(int ParentPid, int Generation, IReadOnlyList<int> ListenFds, int ReadyFd, IReadOnlyList<ulong> Ids, IReadOnlyList<GenerationProcess> Older, IReadOnlyList<int> ActivatedFds, bool Detached = false)
{
    /// <summary>The variable's name.</summary>
    public const string VariableName = "HANDOFF_HANDOVER";

    /// <summary>The first descriptor after stdin, stdout and stderr, where listeners start
    /// (the systemd socket-activation layout).</summary>
    public const int FirstFd = 3;

    private const string Version = "v3";

    // What builds before socket activation wrote: accepted, so they can upgrade to this one.
    private const string PreviousVersion = "v2";

    // A bound that a real deployment never reaches and a forged value cannot push past.
    private const int MaxListeners = 512;

    /// <summary>The layout for a new generation that receives <paramref name="ids"/>.Count - 1
    /// listeners and the ready pipe, with their identities; <paramref name="activated"/> says for
    /// each listener whether systemd created it.</summary>
    public static HandoverEnvironment ForChild(int parentPid, int generation, IReadOnlyList<ulong> ids, IReadOnlyList<GenerationProcess> older, IReadOnlyList<bool>? activated = null, bool detached = false) =>
        new(parentPid, generation, [.. Enumerable.Range(FirstFd, ids.Count - 1)], FirstFd + ids.Count - 1, ids, older, [.. Enumerable.Range(0, ids.Count - 1).Where(i => activated?[i] == true).Select(i => FirstFd + i)], detached);

    /// <summary>What <c>/proc/self/fd/FD</c> must show for each handed descriptor: a socket
    /// for each listener, then a pipe.</summary>
    public IEnumerable<(int Fd, string Link)> ExpectedLinks() =>
        ListenFds.Append(ReadyFd).Select((fd, i) => (fd, $"{(fd == ReadyFd ? "pipe" : "socket")}:[{Ids[i]}]"));

    public string Format()
    {
        var text = new StringBuilder(Version);
        text.Append(CultureInfo.InvariantCulture, $";parent={ParentPid};generation={Generation};listen=");
        text.AppendJoin(',', ListenFds);
        text.Append(CultureInfo.InvariantCulture, $";ready={ReadyFd};ids=");
        text.AppendJoin(',', Ids);
        text.Append(";older=");
        text.AppendJoin(',', Older);
        text.Append(";activated=");
        text.AppendJoin(',', ActivatedFds);
        text.Append(Detached ? ";detached=1" : ";detached=0");
        return text.ToString();
    }

    /// <summary>Parses the variable's value, checking its syntax and layout; the descriptors
    /// themselves are checked by <see cref="Inheritance"/>.</summary>
    /// <exception cref="HandoffProtocolException">The value is malformed.</exception>
    public static HandoverEnvironment Parse(string value)
    {
        string[] parts = value.Split(';');
        if (!(parts.Length == 9 && parts[0] == Version) && !(parts.Length == 7 && parts[0] == PreviousVersion))
        {
            throw Malformed(value, $"expected '{Version};parent=PID;generation=N;listen=FD,...;ready=FD;ids=INODE,...;older=PID:START,...;activated=FD,...;detached=0|1'");
        }

        int parent = (int)ParsePositive(value, Field(value, parts[1], "parent"), "parent", int.MaxValue);
        int generation = (int)ParsePositive(value, Field(value, parts[2], "generation"), "generation", int.MaxValue);
        var listen = ParseList(value, Field(value, parts[3], "listen"), "listen", int.MaxValue).Select(v => (int)v).ToList();
        int ready = (int)ParsePositive(value, Field(value, parts[4], "ready"), "ready", int.MaxValue);
        var ids = ParseList(value, Field(value, parts[5], "ids"), "ids", ulong.MaxValue);
        string olderText = Field(value, parts[6], "older");
        var older = new List<GenerationProcess>();
        foreach (string item in olderText.Length == 0 ? [] : olderText.Split(','))
        {
            older.Add(GenerationProcess.TryParse(item) ?? throw Malformed(value, $"'older' must hold PID:STARTTIME items, not '{item}'"));
        }

        var activated = parts.Length == 9
            ? ParseList(value, Field(value, parts[7], "activated"), "activated", int.MaxValue).Select(v => (int)v).ToList()
            : [];
        string detached = parts.Length == 9 ? Field(value, parts[8], "detached") : "0";
        if (detached is not ("0" or "1"))
        {
            throw Malformed(value, $"'detached' must be 0 or 1, not '{detached}'");
        }
        if (activated.Any(fd => !listen.Contains(fd)) || activated.Distinct().Count() != activated.Count)
        {
            throw Malformed(value, "'activated' must name listeners from 'listen', each once");
        }

        if (generation < 2)
        {
            throw Malformed(value, "generation must be 2 or more in an inherited environment");
        }

        if (listen.Count > MaxListeners)
        {
            throw Malformed(value, $"more than {MaxListeners} listeners");
        }

        if (ids.Count != listen.Count + 1)
        {
            throw Malformed(value, "'ids' must name one inode for each listener and one for the ready pipe");
        }

        var expected = ForChild(parent, generation, ids, older);
        if (!listen.SequenceEqual(expected.ListenFds) || ready != expected.ReadyFd)
        {
            throw Malformed(value, $"descriptors must be consecutive from {FirstFd}: listeners first, then the ready pipe");
        }

        return expected with { ActivatedFds = activated, Detached = detached == "1" };
    }

    private static List<ulong> ParseList(string value, string text, string key, ulong max) =>
        text.Length == 0 ? [] : [.. text.Split(',').Select(item => ParsePositive(value, item, key, max))];

    private static string Field(string value, string part, string key)
    {
        string prefix = key + "=";
        return part.StartsWith(prefix, StringComparison.Ordinal)
            ? part[prefix.Length..]
            : throw Malformed(value, $"expected '{key}=' but found '{part}'");
    }

    private static ulong ParsePositive(string value, string text, string key, ulong max) =>
        ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong number) && number > 0 && number <= max
            ? number
            : throw Malformed(value, $"'{key}' must hold positive integers, not '{text}'");

    private static HandoffProtocolException Malformed(string value, string why) =>
        new($"The environment variable {VariableName}='{value}' is malformed: {why}. It is set by Handoff for a new generation only; remove it from the environment to start a first generation.");
}
