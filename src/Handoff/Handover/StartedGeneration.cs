namespace Handoff;

/// <summary>The old generation's view of a new generation it spawned: the process
/// (<see cref="SpawnedProcess"/>) and the read end of its ready pipe
/// (<see cref="ReadyPipeReader"/>), which stays open after "ready" until the old generation
/// commits (see <see cref="WatchAsync"/>). What each line on the pipe means is decided here.</summary>
internal sealed class StartedGeneration : IStartedGeneration
{
    /// <summary>The withdrawal reason when the pipe reached end-of-file: the process is dying.</summary>
    public const string PipeClosed = "it closed its ready pipe";

    /// <summary>The withdrawal reason when the new generation wrote "stopping".</summary>
    public const string BeganStopping = "it began stopping";

    // How often the wait loop looks at the process between pipe events.
    private const int PollMilliseconds = 50;

    // Deadlines on the monotonic clock: a wall-clock step must not cut or stretch a wait.
    private readonly long _startedAt = Environment.TickCount64;
    private readonly SpawnedProcess _process;
    private readonly ReadyPipeReader _pipe;

    public StartedGeneration(int pid, int readyFd)
        : this(new SpawnedProcess(pid, detached: false), readyFd)
    {
    }

    private StartedGeneration(SpawnedProcess process, int readyFd)
    {
        _process = process;
        _pipe = new ReadyPipeReader(readyFd);

        // Made now rather than when the watch starts: every descriptor of the upgrade exists
        // before the new generation runs (a supervisor or test that looks for new ones after
        // the ready report sees only what the commit adds).
        _pipe.PrepareWake();
    }

    /// <summary>This generation's end of the move channel (<see cref="Handoff.MoveChannel"/>),
    /// -1 once taken.</summary>
    public int MoveChannel { get; set; } = -1;

    public int TakeMoveChannel()
    {
        int fd = MoveChannel;
        MoveChannel = -1;
        return fd;
    }

    public bool TakeAcceptsMoves() => _pipe.TakeAcceptsMoves();

    public IReadOnlySet<string> TakeResumes() => _pipe.TakeResumes();

    /// <summary>The pid; for a generation started detached, the intermediate's until
    /// <see cref="AwaitPid"/> has read the real one.</summary>
    public int Pid => _process.Pid;

    /// <summary>A generation started through an intermediate (<c>setsid --fork</c>, pid
    /// <paramref name="intermediatePid"/>) that exits at once.</summary>
    public static StartedGeneration Detached(int intermediatePid, int readyFd) => new(new SpawnedProcess(intermediatePid, detached: true), readyFd);

    /// <summary>See <see cref="DetachedStart.AwaitPid"/>.</summary>
    public void AwaitPid(TimeSpan timeout, ulong pipeInode, CancellationToken cancellationToken) =>
        DetachedStart.AwaitPid(_process, _pipe, timeout, pipeInode, cancellationToken);

    public Task<StartFailure?> WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(() => WaitReady(timeout, cancellationToken), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public Task<string?> TerminateAsync(TimeSpan grace) =>
        Task.Factory.StartNew(
            () =>
            {
                // The pipe closes after the exit: the new generation takes its close for the commit,
                // and until the signal it must not believe it serves for good.
                string? ended = _process.Stop(grace);
                _pipe.Close();
                return ended;
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default);

    public Task<string?> WatchAsync(CancellationToken commit) =>
        Task.Factory.StartNew(() => Watch(commit), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public Task<string?> CommitAsync()
    {
        if (_pipe.IsClosed)
        {
            return Task.FromResult<string?>(null);
        }

        try
        {
            return Task.FromResult(LastLook());
        }
        finally
        {
            _pipe.Close();
        }
    }

    // Called before the watch starts reading, so nothing else takes lines meanwhile.
    public IReadOnlyList<int> TakeReleased() => _pipe.TakeReleased();

    public ChildMoments? TakeMoments() => _pipe.TakeTimeline();

    public void ReapWhenExited(Action<string> exited) => _process.ReapWhenExited(exited);

    // The pipe stays open whatever this returns. After "ready" it is how the new generation learns
    // that this one has committed (WatchAsync closes it) and how it withdraws; after a failure
    // TerminateAsync closes it once the process is gone, so that a generation that reported
    // ready at the deadline does not take the close for a commit while it waits for SIGTERM.
    private StartFailure? WaitReady(TimeSpan timeout, CancellationToken cancellationToken)
    {
        // From the spawn on: a detached start's wait for the pid report counts too.
        long deadline = _startedAt + (long)timeout.TotalMilliseconds;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long remaining = deadline - Environment.TickCount64;
            if (remaining <= 0)
            {
                return new(UpgradeFailureReason.Timeout, $"it did not report ready within {timeout.TotalSeconds:0.###} s (Handoff:UpgradeTimeout)");
            }

            switch (_pipe.ReadLine((int)Math.Min(remaining, PollMilliseconds), out string? line))
            {
                case ReadOutcome.Line:
                    return ReadyPipe.ParseLine(line!) is { } failure ? new(UpgradeFailureReason.StartFailed, failure) : null;
                case ReadOutcome.EndOfFile:
                    // The child closed the pipe without a line: it exited or is exiting.
                    string? exit = _process.WaitForExit(block: false) ?? _process.WaitForExitBriefly();
                    return new(UpgradeFailureReason.Exited, exit is null
                        ? $"{PipeClosed} without reporting ready"
                        : $"it exited ({exit}) before reporting ready");
            }

            if (_process.WaitForExit(block: false) is { } ended)
            {
                return new(UpgradeFailureReason.Exited, $"it exited ({ended}) before reporting ready");
            }
        }
    }

    /// <summary>After ready, until <paramref name="commit"/>: returns why the new generation
    /// withdrew (it wrote "stopping", or closed the pipe by dying) and closes the pipe, or takes
    /// a last look and returns null once committed, leaving the pipe to
    /// <see cref="CommitAsync"/>.</summary>
    private string? Watch(CancellationToken commit)
    {
        string? reason = null;

        // The commit ends the wait at once: it waits for this loop's last look.
        using var wake = commit.Register(_pipe.Wake);
        try
        {
            while (!commit.IsCancellationRequested)
            {
                if ((reason = Withdrawal(_pipe.ReadLine(PollMilliseconds, out string? line), line)) is not null)
                {
                    return reason;
                }
            }

            // A "stopping" written just before the commit must still count.
            return reason = LastLook();
        }
        finally
        {
            if (reason is not null)
            {
                _pipe.Close();
            }
        }
    }

    private string? LastLook()
    {
        ReadOutcome outcome;
        while ((outcome = _pipe.ReadLine(0, out string? last)) != ReadOutcome.Nothing)
        {
            if (Withdrawal(outcome, last) is { } reason)
            {
                return reason;
            }
        }

        return null;
    }

    private static string? Withdrawal(ReadOutcome outcome, string? line) => outcome switch
    {
        ReadOutcome.Line when line == ReadyPipe.StoppingLine => BeganStopping,
        ReadOutcome.EndOfFile => PipeClosed,
        _ => null,
    };
}
