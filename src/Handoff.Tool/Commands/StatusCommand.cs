using System.Globalization;
using System.Text;

namespace Handoff.Tool;

/// <summary><c>handoff status</c>: what the serving generation says about itself and the
/// older generations still draining.</summary>
internal static class StatusCommand
{
    private static readonly ToolOption[] Options =
    [
        new("control", "PATH", "the server's control socket (default $RUNTIME_DIRECTORY/handoff.sock)"),
        new("json", null, "print the server's answer as one JSON object"),
        new("timeout", "T", "how long to wait for the answer (default 10s)"),
    ];

    public static readonly string Usage = $"""
        handoff status [--control PATH] [--json] [--timeout T]

          Shows the generation that serves: its number, pid, state and since when, its
          listeners and open connections, the older generations still draining with their
          connections, and how the last upgrade ended.

        {ToolOption.Describe(Options)}

          Exit codes: 0 shown, 2 could not ask, 3 timed out.
        """;

    public static async Task<int> RunAsync(IReadOnlyList<string> args)
    {
        var options = Arguments.Parse(args, Options);
        string path = options.Value("control") ?? ControlClient.DefaultPath()
            ?? throw new UsageException("say which server: --control PATH (its Handoff:ControlSocket)");
        var timeout = options.Duration("timeout", TimeSpan.FromSeconds(10));
        using var deadline = new CancellationTokenSource(timeout);
        using var client = await ControlClient.ConnectAsync(path, ControlProtocol.Status, deadline.Token).ConfigureAwait(false);
        (ControlEnvelope Envelope, string Line)? answer;
        try
        {
            answer = await client.ReadAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            throw new ToolException(ToolExitCodes.TimedOut, $"no answer within {timeout.TotalSeconds:0.#} s from {path}.");
        }

        if (answer is not { } status)
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"the server at {path} closed the connection without an answer.");
        }

        ControlClient.ThrowIfError(status);
        Console.WriteLine(options.Has("json") ? status.Line : Format(ControlClient.Read(status.Line, ControlJson.Wire.StatusAnswer), DateTimeOffset.UtcNow));
        return ToolExitCodes.Success;
    }

    /// <summary>The status for people, one fact per line.</summary>
    internal static string Format(StatusAnswer status, DateTimeOffset now)
    {
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        text.Append(invariant, $"generation {status.Generation}, pid {status.Pid}: {status.State}");
        if (Time(status.StartedAt) is { } started)
        {
            text.Append(invariant, $" since {started:yyyy-MM-dd HH:mm:ss} UTC ({Age(now - started)})");
        }

        text.AppendLine();
        var addresses = (status.Listeners ?? []).Select(l => l.Address + (l.Activated ? " (socket activation)" : ""));
        text.Append("listeners: ").AppendJoin(", ", addresses.DefaultIfEmpty("none")).AppendLine();
        text.Append("control socket: ").AppendLine(status.ControlSocket);
        text.Append("open connections: ").AppendLine(status.OpenConnections?.ToString(invariant) ?? "not counted (raw server)");
        if (status.Draining is { Count: > 0 } draining)
        {
            text.Append("draining: ").AppendJoin(", ", draining.Select(d =>
                string.Create(invariant, $"pid {d.Pid} ({d.OpenConnections?.ToString(invariant) ?? "?"} connections)"))).AppendLine();
        }
        else
        {
            text.AppendLine("draining: none");
        }

        if (status.MovedHere is { } moved)
        {
            text.Append(invariant, $"moved here at the last upgrade: {moved.Adopted} connections adopted, {moved.Closed} closed, {moved.PassedOn} passed on{(moved.Ended ? "" : " (still arriving)")}");

            // By kind when not only HTTP/1.1 came: "(http1: 60 adopted, 0 closed; websocket: 4 adopted, 0 closed)".
            if (moved.ByKind is { } byKind && byKind.Keys.Any(k => k != "http1"))
            {
                text.Append(" (").AppendJoin("; ", byKind.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k =>
                    string.Create(invariant, $"{k.Key}: {k.Value.Adopted} adopted, {k.Value.Closed} closed{(k.Value.PassedOn > 0 ? $", {k.Value.PassedOn} passed on" : "")}"))).Append(')');
            }

            text.AppendLine();
        }

        if (status.LastUpgrade is { } last)
        {
            text.Append(invariant, $"last upgrade: {last.Outcome}");
            if (Time(last.At) is { } at)
            {
                text.Append(invariant, $" at {at:yyyy-MM-dd HH:mm:ss} UTC");
            }

            text.Append(": ").Append(last.Detail);
        }
        else
        {
            text.Append("last upgrade: none since this generation started");
        }

        return text.ToString();
    }

    private static DateTimeOffset? Time(string? text) =>
        text is not null && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var value) ? value.ToUniversalTime() : null;

    private static string Age(TimeSpan age) => age switch
    {
        { TotalDays: >= 1 } => string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalDays}d {age.Hours}h"),
        { TotalHours: >= 1 } => string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalHours}h {age.Minutes}m"),
        { TotalMinutes: >= 1 } => string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalMinutes}m {age.Seconds}s"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{Math.Max(0, (int)age.TotalSeconds)}s"),
    };
}
