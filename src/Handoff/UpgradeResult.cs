namespace Handoff;

/// <summary>The outcome of one upgrade: which process took over, or why none did.</summary>
public sealed record UpgradeResult
{
    private UpgradeResult(bool succeeded, int newPid, int generation, string? error, UpgradeFailureKind failureKind, UpgradeFailureReason reason, TimeSpan timeToReady)
    {
        Succeeded = succeeded;
        NewPid = newPid;
        Generation = generation;
        Error = error;
        FailureKind = failureKind;
        Reason = reason;
        TimeToReady = timeToReady;
    }

    /// <summary>True when a new generation reported ready and now serves on the listeners.</summary>
    public bool Succeeded { get; }

    /// <summary>The pid of the new generation, or 0 when none was started.</summary>
    public int NewPid { get; }

    /// <summary>The generation number of the new generation (this one's plus one).</summary>
    public int Generation { get; }

    /// <summary>Why the upgrade failed, as a sentence for people, or null when it succeeded.</summary>
    public string? Error { get; }

    /// <summary>Whether the upgrade was refused before anything was started, or started and
    /// failed; <see cref="UpgradeFailureKind.None"/> when it succeeded. Either way the server is
    /// unchanged.</summary>
    public UpgradeFailureKind FailureKind { get; }

    /// <summary>Why the upgrade did not happen, for code (the metrics' <c>error.type</c> and
    /// the control protocol carry the same value); <see cref="UpgradeFailureReason.None"/> when
    /// it succeeded. <see cref="Error"/> says it in words.</summary>
    public UpgradeFailureReason Reason { get; }

    /// <summary>From the start of the new process to its report of ready; zero when no new
    /// generation became ready.</summary>
    public TimeSpan TimeToReady { get; }

    /// <summary>A success's phases, as the old generation timed them; null otherwise.</summary>
    internal UpgradeTimeline? Timeline { get; init; }

    internal static UpgradeResult Success(int pid, int generation, TimeSpan timeToReady) => new(true, pid, generation, null, UpgradeFailureKind.None, UpgradeFailureReason.None, timeToReady);

    internal static UpgradeResult Failure(int pid, int generation, UpgradeFailureReason reason, string error) => new(false, pid, generation, error, UpgradeFailureKind.Failed, reason, TimeSpan.Zero);

    internal static UpgradeResult Refusal(int generation, UpgradeFailureReason reason, string error) => new(false, 0, generation, error, UpgradeFailureKind.Refused, reason, TimeSpan.Zero);

    /// <inheritdoc />
    public override string ToString() => (Succeeded, FailureKind) switch
    {
        (true, _) => $"upgrade succeeded: generation {Generation} is pid {NewPid}",
        (_, UpgradeFailureKind.Refused) => $"upgrade refused: {Error}",
        _ => $"upgrade failed: {Error}",
    };
}

/// <summary>How an upgrade that did not happen ended. The server is unchanged in every case.</summary>
public enum UpgradeFailureKind
{
    /// <summary>The upgrade succeeded.</summary>
    None,

    /// <summary>Nothing was started: this generation could not upgrade now (another upgrade is
    /// in progress, it is not ready, shutting down or superseded, or too many older generations
    /// still drain). Asking again later may succeed.</summary>
    Refused,

    /// <summary>A new generation was started and did not take over: it could not be started,
    /// failed or hung before it reported ready, or died within the rollback window. The same
    /// build will most likely fail again.</summary>
    Failed,
}

/// <summary>Why an upgrade did not happen (<see cref="UpgradeResult.Reason"/>). The metrics'
/// <c>error.type</c> and the control protocol's <c>errorType</c> carry the same values in snake
/// case (docs/metrics.md).</summary>
public enum UpgradeFailureReason
{
    /// <summary>The upgrade succeeded.</summary>
    None,

    /// <summary>Refused: this generation has not reported ready yet.</summary>
    NotReady,

    /// <summary>Refused: a newer generation has already taken over from this one.</summary>
    Superseded,

    /// <summary>Refused: this generation is shutting down.</summary>
    ShuttingDown,

    /// <summary>Refused: <see cref="HandoffOptions.MaxDrainingGenerations"/> older generations
    /// still drain.</summary>
    TooManyDraining,

    /// <summary>Refused: an upgrade asked for during a handover could not be passed on to the
    /// generation that took over (it could not be reached).</summary>
    NotPassedOn,

    /// <summary>Failed: the new process could not be started (executable or working directory
    /// gone, shadow copy failed).</summary>
    SpawnFailed,

    /// <summary>Failed: the new generation exited before it reported ready.</summary>
    Exited,

    /// <summary>Failed: the new generation reported why it could not start (an exception at
    /// start-up, a warm-up that threw, an invalid option).</summary>
    StartFailed,

    /// <summary>Failed: the new generation did not report ready within
    /// <see cref="HandoffOptions.UpgradeTimeout"/> and was stopped.</summary>
    Timeout,

    /// <summary>Failed: the new generation died or withdrew within
    /// <see cref="HandoffOptions.RollbackWindow"/>; this generation accepts again.</summary>
    RolledBack,

    /// <summary>Failed: this generation began shutting down during the upgrade and stopped the
    /// new one.</summary>
    Shutdown,

    /// <summary>Failed: the generation the upgrade was passed on to did not say how it ended
    /// (its log does).</summary>
    NoOutcome,

    /// <summary>Failed: an unexpected error; the log has it.</summary>
    Unexpected,
}

/// <summary>The snake-case names of <see cref="UpgradeFailureReason"/>: the metrics'
/// <c>error.type</c> (OpenTelemetry's <c>_OTHER</c> for an unexpected error) and the control
/// protocol's <c>errorType</c>.</summary>
internal static class UpgradeFailureReasons
{
    public static string Tag(this UpgradeFailureReason reason) => reason switch
    {
        UpgradeFailureReason.None => "",
        UpgradeFailureReason.NotReady => "not_ready",
        UpgradeFailureReason.Superseded => "superseded",
        UpgradeFailureReason.ShuttingDown => "shutting_down",
        UpgradeFailureReason.TooManyDraining => "too_many_draining",
        UpgradeFailureReason.NotPassedOn => "not_passed_on",
        UpgradeFailureReason.SpawnFailed => "spawn_failed",
        UpgradeFailureReason.Exited => "exited",
        UpgradeFailureReason.StartFailed => "start_failed",
        UpgradeFailureReason.Timeout => "timeout",
        UpgradeFailureReason.RolledBack => "rolled_back",
        UpgradeFailureReason.Shutdown => "shutdown",
        UpgradeFailureReason.NoOutcome => "no_outcome",
        _ => "_OTHER",
    };

    /// <summary>The reason a tag names; <see cref="UpgradeFailureReason.Unexpected"/> for one
    /// this build does not know (a newer peer's).</summary>
    public static UpgradeFailureReason Parse(string? tag) =>
        Enum.GetValues<UpgradeFailureReason>().FirstOrDefault(r => r != UpgradeFailureReason.None && r.Tag() == tag, UpgradeFailureReason.Unexpected);
}

/// <summary>Why a new generation did not become ready, as the process handle saw it.</summary>
internal sealed record StartFailure(UpgradeFailureReason Reason, string Message)
{
    public override string ToString() => Message;
}
