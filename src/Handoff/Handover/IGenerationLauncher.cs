namespace Handoff;

/// <summary>Starts a new generation. The seam through which unit tests replace the operating
/// system (tableflip's <c>env</c>); <see cref="GenerationLauncher"/> is the real one.</summary>
internal interface IGenerationLauncher
{
    /// <summary>Starts <paramref name="executable"/> as generation <paramref name="generation"/>
    /// with the listeners at descriptors 3, 4, ..., the ready pipe after them, and
    /// <paramref name="blockedSignals"/> blocked until its handlers for them exist.</summary>
    /// <remarks>A generation started detached (under systemd) reports its pid first; this
    /// waits for that report up to <paramref name="timeout"/> or until
    /// <paramref name="cancellationToken"/> fires, and throws if it does not come.</remarks>
    IStartedGeneration Start(string executable, StartCommand command, IReadOnlyList<Listener> listeners, int generation, IReadOnlyList<GenerationProcess> older, IReadOnlyList<int> blockedSignals, TimeSpan timeout, CancellationToken cancellationToken);
}

/// <summary>The old generation's view of a new generation it started.</summary>
internal interface IStartedGeneration
{
    int Pid { get; }

    /// <summary>Waits until the new generation reports ready (returns null) or fails, exits
    /// or stays silent for <paramref name="timeout"/> (returns the reason). Throws
    /// <see cref="OperationCanceledException"/> when <paramref name="cancellationToken"/> fires
    /// before a report was read.</summary>
    Task<StartFailure?> WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken);

    /// <summary>Stops the new generation: SIGTERM, then SIGKILL after <paramref name="grace"/>;
    /// reaps it. Returns how it ended, e.g. "exit code 0 after SIGTERM", or null when it had
    /// exited already.</summary>
    Task<string?> TerminateAsync(TimeSpan grace);

    /// <summary>After the new generation reported ready: completes with the reason when it
    /// withdraws (it began stopping, or died) before <paramref name="commit"/> fires, and then
    /// closes the ready pipe; or, once it fires, takes a last look and completes with null,
    /// leaving the pipe open for <see cref="CommitAsync"/>.</summary>
    Task<string?> WatchAsync(CancellationToken commit);

    /// <summary>Takes a final look for a withdrawal and closes the ready pipe, which tells the
    /// new generation that this one can no longer roll back. Returns the withdrawal found, or
    /// null. Does nothing (returns null) once the pipe is closed.</summary>
    Task<string?> CommitAsync();

    /// <summary>Right after a ready report: the positions, in this generation's list of
    /// listeners at the start, of those the new generation does not serve (its configuration
    /// no longer asks for them; it closed its copies). Empty when it serves them all, or is a
    /// build that does not say.</summary>
    IReadOnlyList<int> TakeReleased() => [];

    /// <summary>Right after a ready report: whether the new generation said it adopts moved
    /// connections (<see cref="MoveChannel.AcceptsLine"/>).</summary>
    bool TakeAcceptsMoves() => false;

    /// <summary>Right after a ready report: the WebSocket endpoints the new generation resumes
    /// (<see cref="MoveChannel.ResumesPrefix"/>).</summary>
    IReadOnlySet<string> TakeResumes() => new HashSet<string>();

    /// <summary>Gives up this generation's end of the move channel (the caller closes it or
    /// moves connections on it); -1 when there is none.</summary>
    int TakeMoveChannel() => -1;

    /// <summary>Right after the ready report: the moments the new generation reported with it
    /// (<see cref="ChildMoments"/>), or null from a build that does not say.</summary>
    ChildMoments? TakeMoments() => null;

    /// <summary>Reaps the accepted generation whenever it exits while this process runs (so it
    /// never stays a zombie) and then calls <paramref name="exited"/> with how it ended.</summary>
    void ReapWhenExited(Action<string> exited);
}
