using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests;

/// <summary>The upgrade state machine, with the operating system behind a fake launcher.</summary>
public sealed class UpgraderTests : IDisposable
{
    private readonly string _pidFile = Path.Combine(Path.GetTempPath(), $"handoff-upgrader-{Guid.NewGuid():N}.pid");
    private readonly FakeLauncher _launcher = new();

    [Fact]
    public async Task UpgradeAsync_NotReady_IsRefused()
    {
        using var upgrader = CreateUpgrader();

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        Assert.Equal("this generation is not ready yet", result.Error);
        Assert.Empty(_launcher.Started);
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationReady_SupersedesAndWritesItsPid()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        Assert.Equal(Environment.ProcessId, PidFile.Read(_pidFile));
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);

        var result = await upgrader.UpgradeAsync();

        Assert.True(result.Succeeded, result.Error);
        Assert.Equal(4321, result.NewPid);
        Assert.Equal(2, result.Generation);
        Assert.True(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(4321, PidFile.Read(_pidFile));
        Assert.True(_launcher.Started.Single().Reaped);
        var handover = _launcher.Handovers.Single();
        Assert.Equal(Environment.ProcessId, handover.ParentPid);
        Assert.Equal(2, handover.Generation);
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationFails_TerminatesItAndAllowsAnotherUpgrade()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 1111, readyResult: "it exited (exit code 3) before reporting ready");

        var failed = await upgrader.UpgradeAsync();

        Assert.False(failed.Succeeded);
        Assert.Contains("exit code 3", failed.Error, StringComparison.Ordinal);
        Assert.Contains("pid 1111", failed.Error, StringComparison.Ordinal);
        Assert.True(_launcher.Started[0].Terminated);
        Assert.False(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(Environment.ProcessId, PidFile.Read(_pidFile));

        _launcher.Next = new FakeGeneration(pid: 2222, readyResult: null);
        var succeeded = await upgrader.UpgradeAsync();

        Assert.True(succeeded.Succeeded);
        Assert.Equal(2222, PidFile.Read(_pidFile));
    }

    [Fact]
    public async Task UpgradeAsync_WhileOneIsRunning_IsIgnored()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        var slow = new FakeGeneration(pid: 5, readyResult: null, holdReady: true);
        _launcher.Next = slow;

        var first = upgrader.UpgradeAsync();
        var second = await upgrader.UpgradeAsync();
        slow.Release();

        Assert.False(second.Succeeded);
        Assert.Equal("an upgrade is already in progress", second.Error);
        Assert.True((await first).Succeeded);
        Assert.Single(_launcher.Started);
    }

    [Fact]
    public async Task UpgradeAsync_AfterSupersededOrDuringShutdown_IsRefused()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 6, readyResult: null);
        await upgrader.UpgradeAsync();

        var again = await upgrader.UpgradeAsync();

        Assert.Contains("already superseded by pid 6", again.Error, StringComparison.Ordinal);

        using var stopping = CreateUpgrader();
        await stopping.ReadyAsync();
        stopping.BeginShutdown();
        Assert.Equal("this generation is shutting down", (await stopping.UpgradeAsync()).Error);
    }

    [Fact]
    public async Task UpgradeAsync_ShutdownBeginsWhileNewGenerationStarts_StopsTheNewGeneration()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        var slow = new FakeGeneration(pid: 9, readyResult: null, holdReady: true);
        _launcher.Next = slow;

        var upgrade = upgrader.UpgradeAsync();
        upgrader.BeginShutdown();
        slow.Release();
        var result = await upgrade;

        Assert.False(result.Succeeded);
        Assert.Contains("began shutting down", result.Error, StringComparison.Ordinal);
        Assert.True(slow.Terminated);
        Assert.False(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(Environment.ProcessId, PidFile.Read(_pidFile));
    }

    [Fact]
    public async Task UpgradeAsync_ExecutableGone_FailsWithoutStartingAnything()
    {
        using var upgrader = CreateUpgrader(executable: "/nonexistent/server");
        await upgrader.ReadyAsync();

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        Assert.Contains("/nonexistent/server", result.Error, StringComparison.Ordinal);
        Assert.Empty(_launcher.Started);
    }

    [Fact]
    public async Task UpgradeAsync_LauncherThrows_FailsWithTheCause()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Throw = new IOException("posix_spawn failed: No such file or directory (errno 2)");

        var result = await upgrader.UpgradeAsync();

        Assert.Equal("cannot start the new generation: posix_spawn failed: No such file or directory (errno 2)", result.Error);
    }

    [Fact]
    public async Task RemovePidFile_OnlyWhenItStillNamesThisProcess()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        PidFile.Write(_pidFile, 77);

        upgrader.RemovePidFile();

        Assert.Equal(77, PidFile.Read(_pidFile));
    }

    [Fact]
    public void Constructor_InvalidOptions_ThrowsNamingTheOption()
    {
        var options = new HandoffOptions { DrainTimeout = TimeSpan.FromSeconds(-1) };

        var e = Assert.Throws<ArgumentException>(() => new Upgrader(options, Inheritance.None, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance));

        Assert.Contains("Handoff:DrainTimeout", e.Message, StringComparison.Ordinal);
    }

    public void Dispose() => File.Delete(_pidFile);

    private Upgrader CreateUpgrader(string executable = "/bin/sh") => new(
        new HandoffOptions { PidFile = _pidFile },
        Inheritance.None,
        new StartCommand([executable], "/", []),
        _launcher,
        NullLoggerFactory.Instance);

    private sealed class FakeLauncher : IGenerationLauncher
    {
        public FakeGeneration? Next { get; set; }

        public Exception? Throw { get; set; }

        public List<FakeGeneration> Started { get; } = [];

        public List<HandoverEnvironment> Handovers { get; } = [];

        public IStartedGeneration Start(string executable, StartCommand command, IReadOnlyList<Listener> listeners, HandoverEnvironment handover)
        {
            if (Throw is not null)
            {
                throw Throw;
            }

            var generation = Next ?? throw new InvalidOperationException("the test set no next generation");
            Started.Add(generation);
            Handovers.Add(handover);
            return generation;
        }
    }

    private sealed class FakeGeneration(int pid, string? readyResult, bool holdReady = false) : IStartedGeneration
    {
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Pid => pid;

        public bool Terminated { get; private set; }

        public bool Reaped { get; private set; }

        public void Release() => _released.TrySetResult();

        public async Task<string?> WaitReadyAsync(TimeSpan timeout)
        {
            if (holdReady)
            {
                await _released.Task;
            }

            return readyResult;
        }

        public Task<string?> TerminateAsync(TimeSpan grace)
        {
            Terminated = true;
            return Task.FromResult<string?>("exit code 0 after SIGTERM");
        }

        public void ReapWhenExited() => Reaped = true;
    }
}
