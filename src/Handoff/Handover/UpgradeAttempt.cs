using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>
/// One upgrade's work with the new process, tableflip's <c>doUpgrade</c> without its decisions:
/// start it (from a fresh shadow copy when there is one), wait for its report, watch it through
/// the rollback window, commit. <see cref="Upgrader"/> calls these steps in order and decides,
/// under its lock, what each outcome means for this generation.
/// </summary>
internal sealed partial class UpgradeAttempt : IDisposable
{
    private readonly IStartedGeneration _child;
    private readonly ILogger _logger;
    private readonly int _generation;
    private readonly TimeProvider _time;
    private readonly long _spawnedAt;
    private readonly TaskCompletionSource<string> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _commit = new();
    private bool _acceptsMoves;
    private Task<string?> _withdrawn = Task.FromResult<string?>(null);
    private long _readyAt;

    private UpgradeAttempt(IStartedGeneration child, int generation, TimeProvider time, ILogger logger)
    {
        _child = child;
        _time = time;
        _spawnedAt = time.GetTimestamp();
        _generation = generation;
        _logger = logger;
    }

    /// <summary>The new generation's pid.</summary>
    public int Pid => _child.Pid;

    /// <summary>The new generation's number.</summary>
    public int Generation => _generation;

    /// <summary>From the spawn to the ready report.</summary>
    public TimeSpan TimeToReady { get; private set; }

    /// <summary>When the new process had been spawned (a timestamp of the upgrade's clock).</summary>
    public long SpawnedAt => _spawnedAt;

    /// <summary>When the ready report was read.</summary>
    public long ReportReadAt { get; private set; }

    /// <summary>The moments the new generation reported with its ready line, if it did.</summary>
    public ChildMoments? Moments { get; private set; }

    /// <summary>Whether the new generation has exited (known once <see cref="Watch"/> reaps it).</summary>
    public bool HasExited => _exited.Task.IsCompleted;

    /// <summary>Milliseconds since the ready report.</summary>
    public long SinceReadyMilliseconds => (long)_time.GetElapsedTime(_readyAt).TotalMilliseconds;

    /// <summary>
    /// Starts the new generation from the command this process was started with (moved to a
    /// fresh copy of the source directory when it runs from a shadow copy), handing it
    /// <paramref name="listeners"/>. Throws whatever stops the spawn; a copy made for it is
    /// deleted then.
    /// </summary>
    public static UpgradeAttempt Start(UpgradeLaunch launch, IReadOnlyList<Listener> listeners, ILogger logger, CancellationToken stopping)
    {
        string? copy = null;
        try
        {
            var command = launch.Command;
            if (launch.Shadow is { } shadow)
            {
                // The source directory as it is now: the build deployed there is the new one.
                // Bounded like the rest of the start, and ended by a shutdown.
                using var copying = CancellationTokenSource.CreateLinkedTokenSource(stopping);
                copying.CancelAfter(launch.Timeout);
                copy = ShadowCopy.CreateCopy(shadow.Source, shadow.Root, launch.Generation, copying.Token);
                command = shadow.MoveTo(command, copy);
            }

            command.CheckWorkingDirectory();
            string executable = command.ResolveExecutable();
            Log.Spawning(logger, Environment.ProcessId, launch.Generation - 1, executable, listeners.Count);
            var child = launch.Launcher.Start(executable, command, listeners, launch.Generation, launch.Older, launch.BlockedSignals, launch.Timeout, stopping);
            if (copy is not null)
            {
                ShadowCopy.SetOwner(copy, child.Pid);
            }

            return new UpgradeAttempt(child, launch.Generation, launch.Time, logger);
        }
        catch
        {
            if (copy is not null)
            {
                ShadowCopy.Delete(copy);
            }

            throw;
        }
    }

    /// <summary>Waits for the new generation's report: null when it is ready, else why not (a
    /// shutdown of this generation that began meanwhile included).</summary>
    public async Task<StartFailure?> WaitReadyAsync(TimeSpan timeout, CancellationToken stopping)
    {
        try
        {
            var failure = await _child.WaitReadyAsync(timeout, stopping).ConfigureAwait(false);
            ReportReadAt = _time.GetTimestamp();
            TimeToReady = _time.GetElapsedTime(_spawnedAt, ReportReadAt);
            if (failure is null)
            {
                // Written with "ready", so read with it, before the watch reads on.
                Moments = _child.TakeMoments();
            }

            return failure;
        }
        catch (OperationCanceledException)
        {
            return new(UpgradeFailureReason.Shutdown, "this generation began shutting down before the new one reported ready");
        }
    }

    /// <summary>The listeners the new generation said it does not serve (its configuration
    /// dropped them), each given its own open gate: this generation keeps accepting there until
    /// the commit, or their connections would wait in the queue, unserved, and be reset when
    /// it closes them. Right after the ready report.</summary>
    public List<Listener> KeepServingReleased(IReadOnlyList<Listener> listeners)
    {
        List<Listener> released = [.. _child.TakeReleased().Where(i => i < listeners.Count).Select(i => listeners[i])];
        foreach (var listener in released)
        {
            var own = new AcceptGate();
            own.Open();
            listener.Gate = own;
        }

        return released;
    }

    /// <summary>Stops the new generation (SIGTERM, SIGKILL after <paramref name="grace"/>);
    /// returns how it ended, or null when it had exited.</summary>
    public Task<string?> TerminateAsync(TimeSpan grace) => _child.TerminateAsync(grace);

    /// <summary>After the ready report: reaps the new generation whenever it exits (logged)
    /// and watches its ready pipe for a withdrawal until <see cref="LastLookAsync"/>.</summary>
    public void Watch()
    {
        _readyAt = _time.GetTimestamp();
        _child.ReapWhenExited(how =>
        {
            _exited.TrySetResult(how);
            Log.SuccessorExited(_logger, Environment.ProcessId, _generation - 1, _child.Pid, _generation, how);
        });
        _withdrawn = _child.WatchAsync(_commit.Token);
    }

    /// <summary>The rollback window: ends early when the new generation exits or withdraws, or
    /// when <paramref name="stopping"/> fires (a shutdown: the new generation keeps serving).</summary>
    public async Task WaitRollbackWindowAsync(TimeSpan window, CancellationToken stopping)
    {
        if (window <= TimeSpan.Zero)
        {
            return;
        }

        try
        {
            await Task.WhenAny((Task)_exited.Task, _withdrawn).WaitAsync(window, _time, stopping).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException)
        {
            // The window passed, or a shutdown ends it.
        }
    }

    /// <summary>Ends the watch with a last look: a withdrawal written until now still counts
    /// (nothing is closed yet, so this generation can still accept again). Returns the
    /// withdrawal, or null.</summary>
    public async Task<string?> LastLookAsync()
    {
        await _commit.CancelAsync().ConfigureAwait(false);
        return await _withdrawn.ConfigureAwait(false);
    }

    /// <summary>Closes the ready pipe, which tells the new generation that this one can no
    /// longer roll back; returns a withdrawal written meanwhile, or null.</summary>
    public Task<string?> CommitAsync() => _child.CommitAsync();

    /// <summary>Says why the new generation did not take over: how it exited, if it did (a
    /// closed pipe means it is dying: a moment is waited for to say how), else the withdrawal.</summary>
    public async Task<string> ExplainAsync(string withdrawal)
    {
        if (withdrawal == StartedGeneration.PipeClosed)
        {
            await Task.WhenAny(_exited.Task, Task.Delay(TimeSpan.FromSeconds(1), _time)).ConfigureAwait(false);
        }

        return HasExited ? $"exited ({_exited.Task.Result})" : withdrawal;
    }

    /// <summary>Waits, at most <paramref name="timeout"/>, for the new generation's exit.</summary>
    public Task WaitForExitAsync(TimeSpan timeout) => Task.WhenAny(_exited.Task, Task.Delay(timeout, _time));

    /// <summary>Right after the ready report (before the watch reads the pipe): notes whether
    /// the new generation adopts moved connections.</summary>
    public void NoteAcceptsMoves()
    {
        _acceptsMoves = _child.TakeAcceptsMoves();
        Resumes = _acceptsMoves ? _child.TakeResumes() : new HashSet<string>();
    }

    /// <summary>The WebSocket endpoints the new generation said it resumes.</summary>
    public IReadOnlySet<string> Resumes { get; private set; } = new HashSet<string>();

    /// <summary>After the commit: the move channel to the new generation, when it adopts moved
    /// connections (the caller owns it then); -1 otherwise.</summary>
    public int TakeMoveChannel() => _acceptsMoves ? _child.TakeMoveChannel() : -1;

    public void Dispose()
    {
        _commit.Dispose();

        // Not taken: the new generation's reading of it ends.
        int moves = _child.TakeMoveChannel();
        if (moves >= 0)
        {
            Interop.Libc.Close(moves);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(15, LogLevel.Information, "Generation {Generation} (pid {Pid}) is starting {Executable} with {ListenerCount} listeners.", EventName = "Spawning")]
        public static partial void Spawning(ILogger logger, int pid, int generation, string executable, int listenerCount);

        [LoggerMessage(27, LogLevel.Information, "Generation {Generation} (pid {Pid}): generation {NewGeneration} (pid {NewPid}), which it started, exited ({How}).", EventName = "SuccessorExited")]
        public static partial void SuccessorExited(ILogger logger, int pid, int generation, int newPid, int newGeneration, string how);
    }
}

/// <summary>What starting a new generation takes, as the generation that starts it knows it.</summary>
internal sealed record UpgradeLaunch(
    IGenerationLauncher Launcher,
    StartCommand Command,
    ShadowCopy? Shadow,
    int Generation,
    IReadOnlyList<GenerationProcess> Older,
    IReadOnlyList<int> BlockedSignals,
    TimeSpan Timeout,
    TimeProvider Time);
