using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests;

/// <summary>Upgraders for unit tests: the operating system behind a fake launcher.</summary>
internal static class TestUpgrader
{
    /// <summary>A first generation whose new generations come from <paramref name="launcher"/>.</summary>
    internal static Upgrader Create(FakeLauncher launcher, HandoffOptions options, string executable = "/bin/sh", TimeProvider? clock = null) =>
        new(options, Inheritance.None, new StartCommand([executable], "/", []), launcher, NullLoggerFactory.Instance, time: clock);
}

/// <summary>New generations that behave as real ones do: a wait for ready can be cancelled,
/// a terminated generation has exited, an exit is reported once.</summary>
internal sealed class FakeLauncher : IGenerationLauncher
{
    public FakeGeneration? Next { get; set; }

    public Exception? Throw { get; set; }

    public List<FakeGeneration> Started { get; } = [];

    public List<int> Generations { get; } = [];

    public List<IReadOnlyList<GenerationProcess>> Older { get; } = [];

    public IStartedGeneration Start(string executable, StartCommand command, IReadOnlyList<Listener> listeners, int generation, IReadOnlyList<GenerationProcess> older, IReadOnlyList<int> blockedSignals, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (Throw is not null)
        {
            throw Throw;
        }

        var started = Next ?? throw new InvalidOperationException("the test set no next generation");
        Started.Add(started);
        Generations.Add(generation);
        Older.Add(older);
        return started;
    }
}

internal sealed class FakeGeneration(int pid, StartFailure? readyResult, bool holdReady = false) : IStartedGeneration
{
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _waiting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<string?> _withdrawn = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _lock = new();
    private Action<string>? _exited;
    private string? _exit;

    public int Pid => pid;

    public bool Terminated { get; private set; }

    public bool Reaped { get; private set; }

    public bool Committed { get; private set; }

    public Func<int>? OnTerminate { get; init; }

    public int? ListenersOpenAtTerminate { get; private set; }

    public Task Waiting => _waiting.Task;

    public void Release() => _released.TrySetResult();

    /// <summary>The process exits, as a real one would be reaped.</summary>
    public void Exit(string how)
    {
        Action<string>? exited;
        lock (_lock)
        {
            if (_exit is not null)
            {
                return;
            }

            _exit = how;
            exited = _exited;
        }

        exited?.Invoke(how);
    }

    public async Task<StartFailure?> WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        _waiting.TrySetResult();
        if (holdReady)
        {
            await _released.Task.WaitAsync(cancellationToken);
        }

        return readyResult;
    }

    public Task<string?> TerminateAsync(TimeSpan grace)
    {
        Terminated = true;
        ListenersOpenAtTerminate = OnTerminate?.Invoke();
        Exit("exit code 0 after SIGTERM");
        return Task.FromResult<string?>("exit code 0 after SIGTERM");
    }

    public async Task<string?> WatchAsync(CancellationToken commit)
    {
        try
        {
            return await _withdrawn.Task.WaitAsync(commit);
        }
        catch (OperationCanceledException)
        {
            return _withdrawn.Task.IsCompleted ? _withdrawn.Task.Result : null;
        }
    }

    /// <summary>The moments the new generation reports with its ready line.</summary>
    public ChildMoments? Moments { get; init; }

    public ChildMoments? TakeMoments() => Moments;

    /// <summary>What the new generation writes between the last look and the close.</summary>
    public string? LateWithdrawal { get; set; }

    public Task<string?> CommitAsync()
    {
        if (Committed)
        {
            return Task.FromResult<string?>(null);
        }

        Committed = true;
        if (ThrowAtCommit is { } bug)
        {
            throw bug;
        }

        if (ExitAtCommit is { } how)
        {
            // Killed between the old generation's MAINPID= and its close of the pipe.
            Exit(how);
            return Task.FromResult<string?>(StartedGeneration.PipeClosed);
        }

        return Task.FromResult(LateWithdrawal);
    }

    /// <summary>An exception the commit throws, standing in for a bug of Handoff's own.</summary>
    public Exception? ThrowAtCommit { get; init; }

    /// <summary>How the new generation dies at the commit (before the close), or null.</summary>
    public string? ExitAtCommit { get; set; }

    /// <summary>The new generation begins to stop while the old one can roll back.</summary>
    public void Withdraw() => _withdrawn.TrySetResult("it began stopping");

    public void ReapWhenExited(Action<string> exited)
    {
        string? already;
        lock (_lock)
        {
            Reaped = true;
            _exited = exited;
            already = _exit;
        }

        if (already is not null)
        {
            exited(already);
        }
    }
}
