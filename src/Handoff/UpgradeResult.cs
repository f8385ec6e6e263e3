namespace Handoff;

/// <summary>The outcome of one upgrade: which process took over, or why none did.</summary>
public sealed record UpgradeResult
{
    private UpgradeResult(bool succeeded, int newPid, int generation, string? error, UpgradeFailureKind failureKind, TimeSpan timeToReady)
    {
        Succeeded = succeeded;
        NewPid = newPid;
        Generation = generation;
        Error = error;
        FailureKind = failureKind;
        TimeToReady = timeToReady;
    }

    /// <summary>True when a new generation reported ready and now serves on the listeners.</summary>
    public bool Succeeded { get; }

    /// <summary>The pid of the new generation, or 0 when none was started.</summary>
    public int NewPid { get; }

    /// <summary>The generation number of the new generation (this one's plus one).</summary>
    public int Generation { get; }

    /// <summary>Why the upgrade failed, or null when it succeeded.</summary>
    public string? Error { get; }

    /// <summary>Whether the upgrade was refused before anything was started, or started and
    /// failed; <see cref="UpgradeFailureKind.None"/> when it succeeded. Either way the server is
    /// unchanged.</summary>
    public UpgradeFailureKind FailureKind { get; }

    /// <summary>From the start of the new process to its report of ready; zero when no new
    /// generation became ready.</summary>
    public TimeSpan TimeToReady { get; }

    internal static UpgradeResult Success(int pid, int generation, TimeSpan timeToReady) => new(true, pid, generation, null, UpgradeFailureKind.None, timeToReady);

    internal static UpgradeResult Failure(int pid, int generation, string error) => new(false, pid, generation, error, UpgradeFailureKind.Failed, TimeSpan.Zero);

    internal static UpgradeResult Refusal(int generation, string error) => new(false, 0, generation, error, UpgradeFailureKind.Refused, TimeSpan.Zero);

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
