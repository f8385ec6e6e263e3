using System.Net;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests;

/// <summary>The generation's state machine, with the operating system behind a fake launcher
/// whose new generations behave as real ones do: a wait for ready can be cancelled, a
/// terminated generation has exited, an exit is reported once.</summary>
public sealed class UpgraderTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-upgrader-").FullName;
    private readonly FakeLauncher _launcher = new();

    private string PidPath => Path.Combine(_directory, "app.pid");

    [Fact]
    public async Task UpgradeAsync_NotReady_IsRefused()
    {
        using var upgrader = CreateUpgrader();

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        Assert.Equal("this generation is not ready yet", result.Error);
        Assert.Empty(_launcher.Started);
        Assert.Equal(GenerationState.Starting, upgrader.State);
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationReady_HandsOverThenSupersedesWhenTheWindowHasPassed()
    {
        var clock = new TestClock();
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromSeconds(30), clock: clock);
        var states = new List<GenerationState>();
        upgrader.StateChanged += s => { lock (states) { states.Add(s); } };
        await upgrader.ReadyAsync();
        Assert.Equal(Environment.ProcessId, PidFile.Read(PidPath));
        Assert.True(upgrader.Listeners.Gate.IsOpen);
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);

        var upgrade = upgrader.UpgradeAsync();
        await clock.WaitForTimersAsync(1); // the rollback window began
        clock.Advance(TimeSpan.FromSeconds(30) - TimeSpan.FromTicks(1));
        Assert.Equal(GenerationState.HandingOver, upgrader.State);
        Assert.False(upgrade.IsCompleted);
        Assert.Equal(4321, PidFile.Read(PidPath)); // the new one is ready: the pid file names it at once
        clock.Advance(TimeSpan.FromTicks(1));
        var result = await upgrade.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.True(result.Succeeded, result.Error);
        Assert.Equal(UpgradeFailureReason.None, result.Reason);
        Assert.Equal(4321, result.NewPid);
        Assert.Equal(2, result.Generation);
        Assert.True(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(GenerationState.Superseded, upgrader.State);
        Assert.False(upgrader.Listeners.Gate.IsOpen);
        Assert.Equal(4321, PidFile.Read(PidPath));
        Assert.True(_launcher.Started.Single().Reaped);
        Assert.Equal(2, _launcher.Generations.Single());
        Assert.Equal(Environment.ProcessId, _launcher.Older.Single()[0].Pid);
        Assert.Equal([GenerationState.Ready, GenerationState.Upgrading, GenerationState.HandingOver, GenerationState.Superseded], states);
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationFails_TerminatesItAndAllowsAnotherUpgrade()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 1111, readyResult: new(UpgradeFailureReason.Exited, "it exited (exit code 3) before reporting ready"));

        var failed = await upgrader.UpgradeAsync();

        Assert.False(failed.Succeeded);
        Assert.Equal(UpgradeFailureReason.Exited, failed.Reason);
        Assert.Equal(UpgradeFailureKind.Failed, failed.FailureKind);
        Assert.Contains("exit code 3", failed.Error, StringComparison.Ordinal);
        Assert.Contains("pid 1111", failed.Error, StringComparison.Ordinal);
        Assert.True(_launcher.Started[0].Terminated);
        Assert.False(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(GenerationState.Ready, upgrader.State);
        Assert.Equal(Environment.ProcessId, PidFile.Read(PidPath));

        _launcher.Next = new FakeGeneration(pid: 2222, readyResult: null);
        var succeeded = await upgrader.UpgradeAsync();

        Assert.True(succeeded.Succeeded);
        Assert.Equal(2222, PidFile.Read(PidPath));
    }

    [Fact]
    public async Task UpgradeAsync_WhileOneIsRunning_WaitsForIt_AndIsPassedOnWhenItSucceeds()
    {
        // Two deploys a moment apart: the second build must serve, not be dropped.
        using var upgrader = CreateUpgrader();
        var signals = new List<(int Pid, int Signal)>();
        upgrader.SendSignal = (pid, signal) => { lock (signals) { signals.Add((pid, signal)); } return 0; };
        await upgrader.ReadyAsync();
        var slow = new FakeGeneration(pid: 5, readyResult: null, holdReady: true);
        _launcher.Next = slow;

        var first = upgrader.UpgradeAsync();
        await slow.Waiting;
        var second = upgrader.UpgradeAsync();
        var third = upgrader.UpgradeAsync();

        // One waits at most; the third joins it.
        Assert.Same(second, third);
        Assert.False(second.IsCompleted);
        slow.Release();
        Assert.True((await first).Succeeded);

        // Superseded meanwhile: without a control socket the successor gets the upgrade signal.
        var passed = await second.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(5, passed.NewPid);
        Assert.Equal([(5, 12)], signals);
        Assert.Single(_launcher.Started);
    }

    [Fact]
    public async Task UpgradeAsync_WhileOneIsRunning_RunsHereWhenThatOneFails()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        var broken = new FakeGeneration(pid: 7, readyResult: new(UpgradeFailureReason.Exited, "it exited (exit code 1) before reporting ready"), holdReady: true);
        _launcher.Next = broken;
        var first = upgrader.UpgradeAsync();
        await broken.Waiting;

        // The fixed build is deployed and asked for while the broken one still starts.
        var second = upgrader.UpgradeAsync();
        _launcher.Next = new FakeGeneration(pid: 8, readyResult: null);
        broken.Release();

        Assert.False((await first).Succeeded);
        var fixedUp = await second.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(fixedUp.Succeeded, fixedUp.Error);
        Assert.Equal(8, fixedUp.NewPid);
        Assert.Equal(8, PidFile.Read(PidPath));
        Assert.Equal(2, _launcher.Started.Count);
    }

    [Fact]
    public async Task UpgradeAsync_Queued_WhenTheGenerationStops_IsRefusedNotLost()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        var slow = new FakeGeneration(pid: 9, readyResult: null, holdReady: true);
        _launcher.Next = slow;
        var first = upgrader.UpgradeAsync();
        await slow.Waiting;
        var second = upgrader.UpgradeAsync();

        await upgrader.StopAsync();

        Assert.False((await first).Succeeded);
        var refused = await second.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(UpgradeFailureKind.Refused, refused.FailureKind);
        Assert.Contains("shutting down", refused.Error, StringComparison.Ordinal);
        Assert.Single(_launcher.Started);
    }

    [Fact]
    public async Task UpgradeAsync_InANewGenerationWhoseParentCanRollBack_RunsOnceTheParentCommits()
    {
        // The pid file names the new generation as soon as it reported ready, which is what a
        // deploy script waits for; its parent can still roll back for RollbackWindow.
        var (read, write) = Interop.Libc.CreatePipe();
        var inheritance = Inheritance.ForTesting(generation: 2, parentPid: Environment.ProcessId, older: [], readyPipe: new ReadyPipe(write));
        var clock = new TestClock();
        using var upgrader = new Upgrader(new HandoffOptions { RollbackWindow = TimeSpan.Zero }, inheritance, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance, time: clock);
        try
        {
            await upgrader.ReadyAsync();
            _launcher.Next = new FakeGeneration(pid: 10, readyResult: null);

            var upgrade = upgrader.UpgradeAsync();
            for (int looks = 1; looks <= 3; looks++)
            {
                // Each look finds the parent uncommitted and waits another ParentCommitPoll.
                await clock.WaitForTimersAsync(looks);
                Assert.False(upgrade.IsCompleted);
                Assert.Empty(_launcher.Started);
                clock.Advance(upgrader.ParentCommitPoll);
            }

            // The parent commits: it closes its end of the ready pipe.
            await clock.WaitForTimersAsync(4);
            Interop.Libc.Close(read);
            read = -1;
            clock.Advance(upgrader.ParentCommitPoll);
            var result = await upgrade.WaitAsync(TimeSpan.FromSeconds(10));

            Assert.True(result.Succeeded, result.Error);
            Assert.Equal(10, result.NewPid);
            Assert.Equal(3, result.Generation);
        }
        finally
        {
            if (read >= 0)
            {
                Interop.Libc.Close(read);
            }
        }
    }

    [Fact]
    public async Task UpgradeAsync_OneWaitsForTheParentsCommit_AnotherStartsFirstOnceItCommitted_OneUpgradeAnswersBoth()
    {
        // The parent passes its own waiting request on at its commit, over the control socket;
        // the one waiting here must join the upgrade that request starts, not run a second.
        var (read, write) = Interop.Libc.CreatePipe();
        var inheritance = Inheritance.ForTesting(generation: 2, parentPid: Environment.ProcessId, older: [], readyPipe: new ReadyPipe(write));
        using var upgrader = new Upgrader(new HandoffOptions { RollbackWindow = TimeSpan.Zero }, inheritance, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance)
        {
            ParentCommitPoll = TimeSpan.FromHours(1),
        };
        try
        {
            await upgrader.ReadyAsync();
            _launcher.Next = new FakeGeneration(pid: 11, readyResult: null);
            var waiting = upgrader.UpgradeAsync();
            Interop.Libc.Close(read);
            read = -1;

            var passedOn = upgrader.UpgradeAsync();
            var result = await passedOn.WaitAsync(TimeSpan.FromSeconds(10));

            Assert.True(result.Succeeded, result.Error);
            Assert.Equal(11, (await waiting.WaitAsync(TimeSpan.FromSeconds(10))).NewPid);
            Assert.Single(_launcher.Started);
        }
        finally
        {
            if (read >= 0)
            {
                Interop.Libc.Close(read);
            }
        }
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
        await stopping.StopAsync();
        Assert.Equal("this generation is shutting down", (await stopping.UpgradeAsync()).Error);
    }

    [Fact]
    public async Task StopAsync_DuringUpgrade_StopsTheNewGenerationBeforeClosingAnything()
    {
        using var upgrader = CreateUpgrader();
        upgrader.Listeners.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        await upgrader.ReadyAsync();
        var slow = new FakeGeneration(pid: 9, readyResult: null, holdReady: true)
        {
            OnTerminate = () => upgrader.Listeners.Listeners.Count,
        };
        _launcher.Next = slow;

        var upgrade = upgrader.UpgradeAsync();
        await slow.Waiting;
        await upgrader.StopAsync();
        var result = await upgrade;

        Assert.False(result.Succeeded);
        Assert.Contains("shutting down", result.Error, StringComparison.Ordinal);
        Assert.True(slow.Terminated);
        Assert.Equal(1, slow.ListenersOpenAtTerminate);
        Assert.Empty(upgrader.Listeners.Listeners);
        Assert.False(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(GenerationState.Stopped, upgrader.State);
        Assert.False(File.Exists(PidPath), "the pid file named this process and is removed at the final stop");
    }

    [Fact]
    public async Task StopAsync_AfterReadyWasRead_TheUpgradeStands()
    {
        // A running process plays the new generation: the stop leaves the pid file to a
        // successor that runs (a pid nobody has would count as gone, and the file as stale).
        using var process = System.Diagnostics.Process.Start("sleep", "600");
        try
        {
            using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
            await upgrader.ReadyAsync();
            var child = new FakeGeneration(pid: process.Id, readyResult: null);
            _launcher.Next = child;

            var upgrade = upgrader.UpgradeAsync();
            await upgrader.WaitForStateAsync(GenerationState.HandingOver);
            await upgrader.StopAsync();
            var result = await upgrade.WaitAsync(TimeSpan.FromSeconds(30));

            Assert.True(result.Succeeded, result.Error);
            Assert.False(child.Terminated);
            Assert.Equal(process.Id, PidFile.Read(PidPath));
            Assert.Equal(GenerationState.Stopped, upgrader.State);
        }
        finally
        {
            process.Kill();
            await process.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task StopAsync_DuringHandoverWhileTheNewGenerationStopsToo_RemovesThePidFileOnceItIsGone()
    {
        // A stop of the whole service as the handover begins: the new generation may have looked
        // at the pid file (and found this process's pid) just before this one wrote the new pid.
        using var process = System.Diagnostics.Process.Start("sleep", "600"); // the new generation
        try
        {
            using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
            await upgrader.ReadyAsync();
            var child = new FakeGeneration(pid: process.Id, readyResult: null) { LateWithdrawal = "it began stopping" };
            _launcher.Next = child;
            var upgrade = upgrader.UpgradeAsync();
            await upgrader.WaitForStateAsync(GenerationState.HandingOver);

            // Written just after the state changed (a read at once may come first).
            await UpgraderTestExtensions.WaitUntilAsync(() => PidFile.Read(PidPath) == process.Id);

            var stop = upgrader.StopAsync();
            await UpgraderTestExtensions.WaitUntilAsync(() => upgrader.State is GenerationState.Superseded or GenerationState.Stopped);

            // It waits for the new generation to exit before it cleans up.
            Assert.False(upgrade.IsCompleted);
            process.Kill();
            await process.WaitForExitAsync();
            child.Exit("exit code 0");
            await stop.WaitAsync(TimeSpan.FromSeconds(30));

            Assert.False(File.Exists(PidPath), "the pid file names a process that is gone");
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationDiesWithinRollbackWindow_ResumesAndFails()
    {
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        var child = new FakeGeneration(pid: 88, readyResult: null);
        _launcher.Next = child;

        var upgrade = upgrader.UpgradeAsync();
        await upgrader.WaitForStateAsync(GenerationState.HandingOver);
        Assert.False(upgrader.Listeners.Gate.IsOpen);
        await UpgraderTestExtensions.WaitUntilAsync(() => PidFile.Read(PidPath) == 88); // written right after the state change
        child.Exit("killed by signal 9");
        var result = await upgrade.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(result.Succeeded);
        Assert.Contains("pid 88) exited (killed by signal 9)", result.Error, StringComparison.Ordinal);
        Assert.Contains("accepts again", result.Error, StringComparison.Ordinal);
        Assert.Equal(GenerationState.Ready, upgrader.State);
        Assert.True(upgrader.Listeners.Gate.IsOpen);
        Assert.False(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(Environment.ProcessId, PidFile.Read(PidPath));
    }

    [Fact]
    public async Task Draining_FiresAtHandover_AndIsNewAgainAfterARollback()
    {
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        var before = upgrader.Draining;
        var child = new FakeGeneration(pid: 88, readyResult: null);
        _launcher.Next = child;

        var upgrade = upgrader.UpgradeAsync();
        await upgrader.WaitForStateAsync(GenerationState.HandingOver);
        Assert.True(before.IsCancellationRequested);
        Assert.True(upgrader.Draining.IsCancellationRequested);

        child.Exit("killed by signal 9");
        await upgrade.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(GenerationState.Ready, upgrader.State);
        Assert.False(upgrader.Draining.IsCancellationRequested);

        await upgrader.StopAsync();
        Assert.True(upgrader.Draining.IsCancellationRequested);
    }

    [Fact]
    public async Task Draining_FiresAfterTheHandoverEvent_SoTheConnectionsDrainBeforeTheApplicationEndsItsStreams()
    {
        // The event begins the connections' drain (HTTP/2's first GOAWAY waits for a stream's
        // end); a stream the application ends on Draining must find it armed.
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        var draining = upgrader.Draining;
        bool? cancelledAtEvent = null;
        bool eventBeforeToken = false;
        upgrader.StateChanged += s =>
        {
            if (s == GenerationState.HandingOver)
            {
                cancelledAtEvent = draining.IsCancellationRequested;
            }
        };
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        draining.Register(() =>
        {
            eventBeforeToken = cancelledAtEvent == false;
            fired.TrySetResult();
        });
        _launcher.Next = new FakeGeneration(pid: 88, readyResult: null);

        _ = upgrader.UpgradeAsync();
        await fired.Task.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(cancelledAtEvent);
        Assert.True(eventBeforeToken);
        await upgrader.StopAsync();
    }

    [Fact]
    public async Task UpgradeAsync_ApplicationCallbacksOnTheTokensThrow_TheUpgradeAndTheStopGoOn()
    {
        var clock = new TestClock();
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromSeconds(30), clock: clock);
        var states = new List<GenerationState>();
        upgrader.StateChanged += s => { lock (states) { states.Add(s); } };
        await upgrader.ReadyAsync();
        upgrader.Draining.Register(() => throw new ObjectDisposedException("an application's disposed source"));
        upgrader.Superseded.Register(() => throw new InvalidOperationException("an application's bug"));
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);

        var result = await UpgradePastTheWindowAsync(upgrader, clock);

        Assert.True(result.Succeeded, result.Error);
        Assert.Equal(GenerationState.Superseded, upgrader.State);
        Assert.Equal(4321, PidFile.Read(PidPath));
        Assert.Equal([GenerationState.Ready, GenerationState.Upgrading, GenerationState.HandingOver, GenerationState.Superseded], states);
        await upgrader.StopAsync();
        Assert.Equal(GenerationState.Stopped, upgrader.State);
    }

    [Fact]
    public async Task StopAsync_ApplicationCallbackOnDrainingThrows_StopsAnyway()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        upgrader.Draining.Register(() => throw new ObjectDisposedException("an application's disposed source"));

        await upgrader.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(GenerationState.Stopped, upgrader.State);
    }

    [Fact]
    public async Task UpgradeAsync_Rollback_EndsTheDrainBeforeTheGateOpens()
    {
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        bool? gateOpenAtReady = null;
        bool? drainingAtReady = null;
        upgrader.StateChanged += s =>
        {
            if (s == GenerationState.Ready)
            {
                gateOpenAtReady = upgrader.Listeners.Gate.IsOpen;
                drainingAtReady = upgrader.Draining.IsCancellationRequested;
            }
        };
        var child = new FakeGeneration(pid: 88, readyResult: null);
        _launcher.Next = child;

        var upgrade = upgrader.UpgradeAsync();
        await upgrader.WaitForStateAsync(GenerationState.HandingOver);
        child.Exit("killed by signal 9");
        await upgrade.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(gateOpenAtReady);
        Assert.False(drainingAtReady);
        Assert.True(upgrader.Listeners.Gate.IsOpen);
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationBeginsStoppingWithinRollbackWindow_Resumes()
    {
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        var child = new FakeGeneration(pid: 89, readyResult: null);
        _launcher.Next = child;

        var upgrade = upgrader.UpgradeAsync();
        await upgrader.WaitForStateAsync(GenerationState.HandingOver);
        child.Withdraw();
        var result = await upgrade.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(result.Succeeded);
        Assert.Contains("pid 89) it began stopping", result.Error, StringComparison.Ordinal);
        Assert.Equal(GenerationState.Ready, upgrader.State);
        Assert.True(upgrader.Listeners.Gate.IsOpen);
        Assert.Equal(Environment.ProcessId, PidFile.Read(PidPath));
    }

    [Fact]
    public async Task UpgradeAsync_AskedAsARollbackMakesTheGenerationReady_WaitsForThatUpgradeToEnd()
    {
        // The rollback makes the generation Ready before its upgrade has ended (the failed
        // generation stopped, the outcome logged); an upgrade asked for at that moment, here from
        // the Ready event itself, must not be the one that end takes back to Ready.
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        var first = new FakeGeneration(pid: 91, readyResult: null);
        var second = new FakeGeneration(pid: 92, readyResult: null);
        _launcher.Next = first;
        Task<UpgradeResult>? next = null;
        upgrader.StateChanged += state =>
        {
            if (state == GenerationState.Ready && next is null)
            {
                _launcher.Next = second;
                next = upgrader.UpgradeAsync();
            }
        };

        var upgrade = upgrader.UpgradeAsync();
        await upgrader.WaitForStateAsync(GenerationState.HandingOver);
        first.Withdraw();
        Assert.Equal(UpgradeFailureReason.RolledBack, (await upgrade.WaitAsync(TimeSpan.FromSeconds(30))).Reason);

        // The second upgrade runs after the first has ended, and reaches its own handover.
        await UpgraderTestExtensions.WaitUntilAsync(() => _launcher.Started.Count == 2 && upgrader.State == GenerationState.HandingOver);
        Assert.Same(second, _launcher.Started[1]);
        second.Withdraw();
        var result = await next!.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(UpgradeFailureReason.RolledBack, result.Reason);
        Assert.Equal(92, result.NewPid);
        Assert.Equal(GenerationState.Ready, upgrader.State);
    }

    [Fact]
    public async Task StateChangedHandlerThrows_UpgradeAndStopStillComplete()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        var seen = new List<GenerationState>();
        upgrader.StateChanged += state =>
        {
            seen.Add(state);
            throw new InvalidOperationException("a handler's bug");
        };
        _launcher.Next = new FakeGeneration(pid: 93, readyResult: null);

        var result = await upgrader.UpgradeAsync().WaitAsync(TimeSpan.FromSeconds(30));
        await upgrader.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));

        Assert.True(result.Succeeded, result.Error);
        Assert.True(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(GenerationState.Stopped, upgrader.State);
        Assert.Equal([GenerationState.Upgrading, GenerationState.HandingOver, GenerationState.Superseded, GenerationState.Stopped], seen);
    }

    [Fact]
    public async Task UpgradeAsync_WindowPasses_CommitsSoTheNewGenerationMayUpgrade()
    {
        var clock = new TestClock();
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromSeconds(30), clock: clock);
        await upgrader.ReadyAsync();
        var child = new FakeGeneration(pid: 90, readyResult: null);
        _launcher.Next = child;

        Assert.True((await UpgradePastTheWindowAsync(upgrader, clock)).Succeeded);

        Assert.True(child.Committed);
    }

    [Fact]
    public async Task StopAsync_PidFileStillNamesTheParent_RemovesIt()
    {
        // The parent could not write the new pid (disk full at the time): at the final stop the
        // file names a generation that is gone.
        var inheritance = Inheritance.ForTesting(generation: 2, parentPid: 4242, older: []);
        using var upgrader = new Upgrader(new HandoffOptions { PidFile = PidPath }, inheritance, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance);
        await upgrader.ReadyAsync();
        PidFile.Write(PidPath, 4242);

        await upgrader.StopAsync();

        Assert.False(File.Exists(PidPath));
    }

    [Fact]
    public async Task StopAsync_PidFileNamesTheParentThatStillServes_LeavesIt()
    {
        // A running process plays the parent that gave up on this generation and still serves.
        using var parent = System.Diagnostics.Process.Start("sleep", "30");
        try
        {
            var inheritance = Inheritance.ForTesting(generation: 2, parentPid: parent.Id, older: []);
            using var upgrader = new Upgrader(new HandoffOptions { PidFile = PidPath }, inheritance, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance);
            await upgrader.ReadyAsync();
            PidFile.Write(PidPath, parent.Id);

            await upgrader.StopAsync();

            Assert.Equal(parent.Id, PidFile.Read(PidPath));
        }
        finally
        {
            parent.Kill();
            await parent.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task UpgradeAsync_UnexpectedExceptionWhileHandingOver_FinishesTheHandoverAndStopStillWorks()
    {
        // A bug of Handoff's own, after "ready" was read (a throwing StateChanged handler no
        // longer gets here: RaiseEvents logs it).
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMilliseconds(50));
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 91, readyResult: null) { ThrowAtCommit = new InvalidOperationException("a bug at the commit") };

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        Assert.Contains("unexpected error during the upgrade: InvalidOperationException: a bug at the commit", result.Error, StringComparison.Ordinal);
        Assert.Equal(GenerationState.Superseded, upgrader.State);
        Assert.True(upgrader.Superseded.IsCancellationRequested);
        await upgrader.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(GenerationState.Stopped, upgrader.State);
    }

    [Fact]
    public async Task UpgradeAsync_PidDirectoryRemoved_UpgradeStillSupersedes()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        Directory.Delete(_directory, recursive: true);
        _launcher.Next = new FakeGeneration(pid: 12, readyResult: null);

        var result = await upgrader.UpgradeAsync();

        Assert.True(result.Succeeded, result.Error);
        Assert.True(upgrader.Superseded.IsCancellationRequested);
        Assert.Equal(GenerationState.Superseded, upgrader.State);
        Assert.Equal("this generation was already superseded by pid 12", (await upgrader.UpgradeAsync()).Error);
    }

    [Fact]
    public async Task ReadyAsync_AfterStopBegan_NeverReports()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.StopAsync();

        await upgrader.ReadyAsync();

        Assert.Equal(GenerationState.Stopped, upgrader.State);
        Assert.False(upgrader.Listeners.Gate.IsOpen);
        Assert.False(File.Exists(PidPath));
    }

    [Fact]
    public async Task StopAsync_RemovesThePidFileOnlyWhenItNamesThisProcess()
    {
        using (var upgrader = CreateUpgrader())
        {
            await upgrader.ReadyAsync();
            Assert.Equal(Environment.ProcessId, PidFile.Read(PidPath));
            await upgrader.StopAsync();
            Assert.False(File.Exists(PidPath));
        }

        using (var upgrader = CreateUpgrader())
        {
            await upgrader.ReadyAsync();
            PidFile.Write(PidPath, 77);
            await upgrader.StopAsync();
            Assert.Equal(77, PidFile.Read(PidPath));
        }
    }

    [Fact]
    public async Task UpgradeAsync_TooManyOlderGenerationsDraining_IsRefusedNamingThem()
    {
        // This test process stands in for an older generation that is still alive.
        var self = GenerationProcess.Current(Environment.ProcessId)!.Value;
        var inheritance = Inheritance.ForTesting(generation: 3, parentPid: Environment.ProcessId, older: [self]);
        using var upgrader = new Upgrader(new HandoffOptions { MaxDrainingGenerations = 1 }, inheritance, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance);
        await upgrader.ReadyAsync();

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        Assert.Contains($"pids {Environment.ProcessId}", result.Error, StringComparison.Ordinal);
        Assert.Contains("Handoff:MaxDrainingGenerations (1)", result.Error, StringComparison.Ordinal);
        Assert.Empty(_launcher.Started);
    }

    [Fact]
    public async Task UpgradeAsync_WorkingDirectoryGone_FailsNamingItWithoutStartingAnything()
    {
        string gone = Path.Combine(_directory, "release");
        using var upgrader = new Upgrader(new HandoffOptions(), Inheritance.None, new StartCommand(["/bin/sh"], gone, []), _launcher, NullLoggerFactory.Instance);
        await upgrader.ReadyAsync();

        var result = await upgrader.UpgradeAsync();

        Assert.Contains($"working directory '{gone}'", result.Error, StringComparison.Ordinal);
        Assert.Empty(_launcher.Started);
        Assert.Equal(GenerationState.Ready, upgrader.State);
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
    public void Constructor_InvalidOptions_ThrowsNamingTheOption()
    {
        var options = new HandoffOptions { DrainTimeout = TimeSpan.FromSeconds(-1) };

        var e = Assert.Throws<ArgumentException>(() => new Upgrader(options, Inheritance.None, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance));

        Assert.Contains("Handoff:DrainTimeout", e.Message, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        if (Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }
    }

    [Fact]
    public async Task StopAsync_WithShutdownDelay_AcceptsAndDoesNotDrainUntilTheDelayEnds()
    {
        using var upgrader = CreateUpgrader(shutdownDelay: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        var states = new List<GenerationState>();
        upgrader.StateChanged += s => { lock (states) { states.Add(s); } };

        var stop = upgrader.StopAsync();
        await upgrader.WaitForStateAsync(GenerationState.Stopping);

        // Unhealthy (the state says so) but serving: the gate is open, the drain has not begun.
        Assert.True(upgrader.Listeners.Gate.IsOpen);
        Assert.False(upgrader.Draining.IsCancellationRequested);
        Assert.False(stop.IsCompleted);
        Assert.False((await upgrader.UpgradeAsync()).Succeeded);

        upgrader.EndShutdownDelay(); // a second SIGTERM
        await stop.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(upgrader.Listeners.Gate.IsOpen);
        Assert.True(upgrader.Draining.IsCancellationRequested);
        Assert.Equal([GenerationState.Stopping, GenerationState.Stopped], states);
    }

    [Fact]
    public async Task StopAsync_WithShutdownDelay_StopsAcceptingWhenTheDelayHasPassed()
    {
        var clock = new TestClock();
        using var upgrader = CreateUpgrader(shutdownDelay: TimeSpan.FromSeconds(30), clock: clock);
        await upgrader.ReadyAsync();

        var stop = upgrader.StopAsync();
        await clock.WaitForTimersAsync(1);
        clock.Advance(TimeSpan.FromSeconds(30) - TimeSpan.FromTicks(1));
        Assert.True(upgrader.Listeners.Gate.IsOpen);
        Assert.False(stop.IsCompleted);
        clock.Advance(TimeSpan.FromTicks(1));
        await stop.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(upgrader.Listeners.Gate.IsOpen);
        Assert.True(upgrader.Draining.IsCancellationRequested);
    }

    [Fact]
    public async Task StopAsync_WithShutdownDelay_NeverReady_StopsAtOnce()
    {
        using var upgrader = CreateUpgrader(shutdownDelay: TimeSpan.FromMinutes(5));

        await upgrader.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(GenerationState.Stopped, upgrader.State);
    }

    [Fact]
    public async Task StopAsync_WithShutdownDelay_WhileSuperseded_DoesNotWait()
    {
        using var upgrader = CreateUpgrader(shutdownDelay: TimeSpan.FromMinutes(5));
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);
        Assert.True((await upgrader.UpgradeAsync()).Succeeded);

        await upgrader.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(GenerationState.Stopped, upgrader.State);
    }

    /// <summary>An upgrade whose rollback window passes on <paramref name="clock"/> as soon as
    /// it began.</summary>
    private static async Task<UpgradeResult> UpgradePastTheWindowAsync(Upgrader upgrader, TestClock clock)
    {
        int timers = clock.TimersCreated;
        var upgrade = upgrader.UpgradeAsync();
        await clock.WaitForTimersAsync(timers + 1);
        clock.Advance(upgrader.Options.RollbackWindow);
        return await upgrade.WaitAsync(TimeSpan.FromSeconds(30));
    }

    private Upgrader CreateUpgrader(string executable = "/bin/sh", TimeSpan? rollbackWindow = null, TimeSpan? shutdownDelay = null, TimeProvider? clock = null) =>
        TestUpgrader.Create(_launcher, new HandoffOptions { PidFile = PidPath, RollbackWindow = rollbackWindow ?? TimeSpan.Zero, ShutdownDelay = shutdownDelay ?? TimeSpan.Zero }, executable, clock);
}
