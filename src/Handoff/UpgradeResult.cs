namespace Handoff;

/// <summary>The outcome of one upgrade: which process took over, or why none did.</summary>
public sealed record UpgradeResult
{
    private UpgradeResult(bool succeeded, int newPid, int generation, string? error)
    {
        Succeeded = succeeded;
        NewPid = newPid;
        Generation = generation;
        Error = error;
    }

    /// <summary>True when a new generation reported ready and now serves on the listeners.</summary>
    public bool Succeeded { get; }

    /// <summary>The pid of the new generation, or 0 when none was started.</summary>
    public int NewPid { get; }

    /// <summary>The generation number of the new generation (this one's plus one).</summary>
    public int Generation { get; }

    /// <summary>Why the upgrade failed, or null when it succeeded.</summary>
    public string? Error { get; }

    internal static UpgradeResult Success(int pid, int generation) => new(true, pid, generation, null);

    internal static UpgradeResult Failure(int pid, int generation, string error) => new(false, pid, generation, error);

    /// <inheritdoc />
    public override string ToString() => Succeeded
        ? $"upgrade succeeded: generation {Generation} is pid {NewPid}"
        : $"upgrade failed: {Error}";
}
