namespace Handoff;

/// <summary>Starts a new generation. The seam through which unit tests replace the operating
/// system (tableflip's <c>env</c>); <see cref="GenerationLauncher"/> is the real one.</summary>
internal interface IGenerationLauncher
{
    /// <summary>Starts <paramref name="executable"/> with the listeners placed as
    /// <paramref name="handover"/> describes.</summary>
    IStartedGeneration Start(string executable, StartCommand command, IReadOnlyList<Listener> listeners, HandoverEnvironment handover);
}

/// <summary>A new generation that was started and has not yet been accepted or given up on.</summary>
internal interface IStartedGeneration
{
    int Pid { get; }

    /// <summary>Waits until the new generation reports ready (returns null) or fails, exits
    /// or stays silent for <paramref name="timeout"/> (returns the reason).</summary>
    Task<string?> WaitReadyAsync(TimeSpan timeout);

    /// <summary>Stops a failed new generation: SIGTERM, then SIGKILL after
    /// <paramref name="grace"/>; reaps it. Returns how it ended, e.g. "exit code 0 after
    /// SIGTERM", or null when it had exited already.</summary>
    Task<string?> TerminateAsync(TimeSpan grace);

    /// <summary>Reaps the accepted generation if it ever exits while this process runs, so it
    /// does not stay a zombie.</summary>
    void ReapWhenExited();
}
