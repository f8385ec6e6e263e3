using System.Globalization;

namespace Handoff;

/// <summary>
/// One successful upgrade, phase by phase, as the old generation times it, with the three moments
/// the new generation reports with its ready line (<see cref="ChildMoments"/>). Every moment is
/// in milliseconds since the upgrade was asked for (signal, control socket or
/// <see cref="Upgrader.UpgradeAsync"/>); both processes read the same monotonic clock
/// (<c>CLOCK_MONOTONIC</c>, what <see cref="System.Diagnostics.Stopwatch"/> reads on Linux).
/// </summary>
/// <param name="Spawned">The new process exists: the request waited for the state machine,
/// the command was checked, a shadow copy made if there is one, and the process spawned.</param>
/// <param name="RuntimeStarted">Handoff's first code ran in the new process: the .NET startup
/// hook, before <c>Main</c>; with no startup hook (NativeAOT) the first call to Handoff
/// (<c>UseHandoff()</c>), after the application's code before it. Null when the new build did
/// not report its moments (a Handoff older than this one).</param>
/// <param name="Adopted">The new process took over the handed listeners.</param>
/// <param name="Ready">The new process reported ready: its application had started.</param>
/// <param name="ReportRead">This generation read the report and stopped accepting.</param>
/// <param name="WindowStarted">The handover had begun (the drain started, the pid file names the
/// new process) and the rollback window (<see cref="HandoffOptions.RollbackWindow"/>) began.</param>
/// <param name="WindowEnded">The rollback window ended.</param>
/// <param name="Committed">This generation committed: systemd has the new main pid, the pid
/// file names the new process, the ready pipe is closed.</param>
internal sealed record UpgradeTimeline(
    double Spawned,
    double? RuntimeStarted,
    double? Adopted,
    double? Ready,
    double ReportRead,
    double WindowStarted,
    double WindowEnded,
    double Committed)
{
    /// <summary>Handoff's own share: everything but the runtime's start, the application's
    /// start and the rollback window, which Handoff waits for and does not spend (the handover's
    /// start, between the report and the window, counts: it includes the drain's start and the
    /// application's <c>StateChanged</c> handlers). When the new
    /// build reported nothing, its whole start-up is left out and this is a lower bound.</summary>
    public double Own => Spawned + (Adopted - RuntimeStarted ?? 0) + (ReportRead - Ready ?? 0) + (WindowStarted - ReportRead) + (Committed - WindowEnded);

    /// <summary>From the spawn to Handoff's first code in the new process.</summary>
    public double? Runtime => RuntimeStarted - Spawned;

    /// <summary>From the adoption of the listeners to the report of ready.</summary>
    public double? Application => Ready - Adopted;

    /// <summary>How long the rollback window held the commit back.</summary>
    public double RollbackWindow => WindowEnded - WindowStarted;

    /// <summary>The timeline from timestamps of <paramref name="time"/>.</summary>
    public static UpgradeTimeline From(TimeProvider time, long requested, long spawned, ChildMoments? child, long reportRead, long windowStarted, long windowEnded, long committed)
    {
        double Ms(long at) => time.GetElapsedTime(requested, at).TotalMilliseconds;
        double? ChildMs(long? microseconds) => microseconds is { } us ? Ms(ChildMoments.ToTimestamp(us, time)) : null;
        return new(Ms(spawned), ChildMs(child?.StartedUs), ChildMs(child?.AdoptedUs), ChildMs(child?.ReadyUs), Ms(reportRead), Ms(windowStarted), Ms(windowEnded), Ms(committed));
    }

    /// <summary>One line for the log: each moment, then the shares.</summary>
    public override string ToString()
    {
        var i = CultureInfo.InvariantCulture;
        string child = RuntimeStarted is null
            ? "the new build reported no moments"
            : string.Format(i, "runtime started +{0:0.0} ms, listeners adopted +{1:0.0} ms, application ready +{2:0.0} ms", RuntimeStarted, Adopted, Ready);
        string shares = RuntimeStarted is null
            ? string.Format(i, "Handoff's own share at least {0:0.0} ms (rollback window {1:0} ms)", Own, RollbackWindow)
            : string.Format(i, "Handoff's own share {0:0.0} ms (runtime {1:0.0} ms, application {2:0.0} ms, rollback window {3:0} ms)", Own, Runtime, Application, RollbackWindow);
        return string.Format(i, "spawned +{0:0.0} ms, {1}, report read and stopped accepting +{2:0.0} ms, committed +{3:0.0} ms; {4}", Spawned, child, ReportRead, Committed, shares);
    }
}

/// <summary>
/// The moments a new generation reports after its ready line, in the same write:
/// <c>timeline STARTED ADOPTED READY</c>, microseconds of <c>CLOCK_MONOTONIC</c>. An older parent
/// ignores the line (it ignores what it does not know after <c>ready</c>).
/// </summary>
internal readonly record struct ChildMoments(long StartedUs, long AdoptedUs, long ReadyUs)
{
    public const string Prefix = "timeline ";

    /// <summary>This process's moments, the ready one now.</summary>
    public static ChildMoments Now(long startedAt, long adoptedAt) =>
        new(ToMicroseconds(startedAt), ToMicroseconds(adoptedAt), ToMicroseconds(System.Diagnostics.Stopwatch.GetTimestamp()));

    public string ToLine() => string.Create(CultureInfo.InvariantCulture, $"{Prefix}{StartedUs} {AdoptedUs} {ReadyUs}");

    /// <summary>The moments in a <see cref="Prefix"/> line; null for anything else.</summary>
    public static ChildMoments? Parse(string line)
    {
        string[] parts = line.Length > Prefix.Length && line.StartsWith(Prefix, StringComparison.Ordinal) ? line[Prefix.Length..].Split(' ') : [];
        return parts.Length == 3
            && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out long started)
            && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out long adopted)
            && long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out long ready)
            && started <= adopted && adopted <= ready
            ? new ChildMoments(started, adopted, ready)
            : null;
    }

    /// <summary>A <see cref="System.Diagnostics.Stopwatch"/> timestamp in microseconds.</summary>
    public static long ToMicroseconds(long timestamp) => System.Diagnostics.Stopwatch.Frequency % 1_000_000 == 0
        ? timestamp / (System.Diagnostics.Stopwatch.Frequency / 1_000_000)
        : (long)(timestamp * (1_000_000.0 / System.Diagnostics.Stopwatch.Frequency));

    /// <summary>Microseconds of the monotonic clock as a timestamp of <paramref name="time"/>.</summary>
    public static long ToTimestamp(long microseconds, TimeProvider time) => time.TimestampFrequency % 1_000_000 == 0
        ? microseconds * (time.TimestampFrequency / 1_000_000)
        : (long)(microseconds * (time.TimestampFrequency / 1_000_000.0));
}
