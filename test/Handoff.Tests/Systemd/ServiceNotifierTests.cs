using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.Systemd;

/// <summary>The exact datagrams a generation sends to systemd at start, upgrade, failed
/// upgrade, stop and for the watchdog, through a real datagram socket standing in for systemd's.</summary>
public sealed class ServiceNotifierTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-notify-").FullName;
    private readonly FakeLauncher _launcher = new();
    private readonly FakeNotifySocket _systemd;

    public ServiceNotifierTests() => _systemd = new FakeNotifySocket(Path.Combine(_directory, "notify"));

    private static int Pid => Environment.ProcessId;

    [Fact]
    public async Task ReadyAsync_FirstGeneration_SendsReadyWithMainPidAndStatus()
    {
        using var upgrader = CreateUpgrader();

        await upgrader.ReadyAsync();

        string message = await _systemd.WaitForAsync(m => m.Contains("READY=1", StringComparison.Ordinal));
        Assert.Equal(["READY=1", $"MAINPID={Pid}", $"STATUS=Generation 1 (pid {Pid}) serving"], message.Split('\n'));
    }

    [Fact]
    public async Task UpgradeAsync_Succeeds_ReloadingThenNewMainPidReadyAndBarrier_NoStoppingAfterwards()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);
        long before = Interop.Libc.MonotonicMicroseconds();

        var result = await upgrader.UpgradeAsync();
        await upgrader.StopAsync();

        Assert.True(result.Succeeded, result.Error);
        long after = Interop.Libc.MonotonicMicroseconds();
        var sent = await _systemd.WaitForCountAsync(5);
        Assert.Equal(5, sent.Count);
        Assert.Equal($"READY=1 MAINPID={Pid}", sent[0]);
        Assert.StartsWith("RELOADING=1 MONOTONIC_USEC=", sent[1], StringComparison.Ordinal);
        long monotonic = long.Parse(sent[1]["RELOADING=1 MONOTONIC_USEC=".Length..], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(monotonic, before, after);

        // handoff run learns of the new generation as soon as it runs (systemd ignores X_).
        Assert.Equal("X_HANDOFF_SUCCESSOR=4321", sent[2]);
        Assert.Equal("MAINPID=4321 READY=1", sent[3]);
        Assert.Equal("BARRIER=1", sent[4]);
        Assert.Contains("STATUS=Generation 2 (pid 4321) serving", _systemd.Messages[3], StringComparison.Ordinal);
        Assert.Contains("took over", _systemd.Messages[3], StringComparison.Ordinal);
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationFails_ReadyAgainWithTheReason_MainPidUnchanged()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 1111, readyResult: new(UpgradeFailureReason.Exited, "it exited (exit code 3) before reporting ready"));

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        var sent = await _systemd.WaitForCountAsync(4);
        Assert.Equal(4, sent.Count);
        Assert.StartsWith("RELOADING=1 MONOTONIC_USEC=", sent[1], StringComparison.Ordinal);
        Assert.Equal("X_HANDOFF_SUCCESSOR=1111", sent[2]);
        Assert.Equal("READY=1", sent[3]);
        Assert.DoesNotContain(sent, m => m.Contains("MAINPID=1111", StringComparison.Ordinal));
        string status = _systemd.Messages[3].Split('\n').Single(l => l.StartsWith("STATUS=", StringComparison.Ordinal));
        Assert.Contains($"Generation 1 (pid {Pid}) serving", status, StringComparison.Ordinal);
        Assert.Contains("last upgrade: failed at", status, StringComparison.Ordinal);
        Assert.Contains("exit code 3", status, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UpgradeAsync_SpawnFailsAtOnce_ReloadingStillComesBeforeReady()
    {
        // The failure's READY=1 comes from the upgrade's own task: it must not overtake the
        // RELOADING=1 that began the reload (systemd would stay "reloading" until its timeout).
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Throw = new IOException("No such file or directory");
        const int Upgrades = 10;

        for (int i = 0; i < Upgrades; i++)
        {
            Assert.Equal(UpgradeFailureReason.SpawnFailed, (await upgrader.UpgradeAsync()).Reason);
        }

        var sent = await _systemd.WaitForCountAsync(1 + (2 * Upgrades));
        for (int i = 0; i < Upgrades; i++)
        {
            Assert.StartsWith("RELOADING=1 MONOTONIC_USEC=", sent[1 + (2 * i)], StringComparison.Ordinal);
            Assert.Equal("READY=1", sent[2 + (2 * i)]);
        }
    }

    [Fact]
    public async Task UpgradeAsync_RefusedWhileReady_ReloadingThenReadyWithTheReason()
    {
        using var upgrader = CreateUpgrader(maxDraining: 1, older: [GenerationProcess.Current(Pid)!.Value]);
        await upgrader.ReadyAsync();

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        var sent = await _systemd.WaitForCountAsync(3);
        Assert.Equal(3, sent.Count);
        Assert.StartsWith("RELOADING=1 MONOTONIC_USEC=", sent[^2], StringComparison.Ordinal);
        Assert.Equal("READY=1", sent[^1]);
        Assert.Contains("last upgrade: refused at", _systemd.Messages[^1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task StopAsync_MainGeneration_SendsStopping()
    {
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();

        await upgrader.StopAsync();

        var sent = await _systemd.WaitForCountAsync(2);
        Assert.Equal(["READY=1 MAINPID=" + Pid, "STOPPING=1"], sent);
        Assert.Contains("stopping", _systemd.Messages[1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task NewGeneration_ParentCanStillRollBack_NeitherReadyNorStopping_GivesTheMainPidBackWhenItWithdraws()
    {
        // A new generation whose parent has not committed is not the main process: READY=1 or
        // STOPPING=1 from it would be refused (NotifyAccess=main), or, where systemd accepts any
        // process, would stop the unit while the old generation serves on.
        var (parentEnd, childEnd) = Interop.Libc.CreatePipe();
        try
        {
            using var upgrader = CreateUpgrader(inheritance: Inheritance.ForTesting(2, Interop.Libc.GetParentPid(), [], new ReadyPipe(childEnd)));
            await upgrader.ReadyAsync();
            // An upgrade asked for now waits for the parent to commit; stopping refuses it.
            var waiting = upgrader.UpgradeAsync();
            await upgrader.StopAsync();
            var refused = await waiting.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Contains("shutting down", refused.Error, StringComparison.Ordinal);

            // A marker after everything the generation sent: the socket keeps datagrams in order.
            using (var marker = new ServiceNotifier(_systemd.Path, null, NullLogger.Instance))
            {
                marker.Notify("MARKER=1");
            }

            // Only this: if the parent had just made it the main process, the withdrawal's exit
            // must not count as the service's.
            await _systemd.WaitForAsync(m => m == "MARKER=1");
            Assert.Equal([$"MAINPID={Interop.Libc.GetParentPid()}", "MARKER=1"], _systemd.Assignments());
        }
        finally
        {
            Interop.Libc.Close(parentEnd);
        }
    }

    [Fact]
    public async Task NewGeneration_AfterTheParentCommitted_IsMain_SendsStopping()
    {
        var (parentEnd, childEnd) = Interop.Libc.CreatePipe();
        using var upgrader = CreateUpgrader(inheritance: Inheritance.ForTesting(2, Interop.Libc.GetParentPid(), [], new ReadyPipe(childEnd)));
        await upgrader.ReadyAsync();

        // The parent commits: it has sent MAINPID= for this process and closes its end. The new
        // main process says so at once (its status), and speaks for the service from then on.
        Interop.Libc.Close(parentEnd);
        await _systemd.WaitForAsync(m => m.StartsWith("STATUS=Generation 2", StringComparison.Ordinal));
        await upgrader.StopAsync();

        Assert.Equal(["", "STOPPING=1"], await _systemd.WaitForCountAsync(2));
    }

    [Fact]
    public async Task Watchdog_NoGap_HandoverCarriesAKeepAlive_NewMainSendsOneAtOnce()
    {
        // An hour's interval: the periodic keep-alive (every 20 minutes) cannot be what the test
        // sees; only the handover datagram and the new main process's first one can.
        var hour = TimeSpan.FromHours(1);
        using (var old = CreateUpgrader(watchdog: hour))
        {
            await old.ReadyAsync();
            _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);
            Assert.True((await old.UpgradeAsync()).Succeeded);
            Assert.Contains("MAINPID=4321 READY=1 WATCHDOG=1", await _systemd.WaitForCountAsync(4), StringComparer.Ordinal);
        }

        var (parentEnd, childEnd) = Interop.Libc.CreatePipe();
        using var upgrader = CreateUpgrader(watchdog: hour, inheritance: Inheritance.ForTesting(2, Interop.Libc.GetParentPid(), [], new ReadyPipe(childEnd)));
        await upgrader.ReadyAsync();
        int before = _systemd.Messages.Count;
        Interop.Libc.Close(parentEnd);

        await _systemd.WaitForAsync(m => m.StartsWith("WATCHDOG=1", StringComparison.Ordinal));
        Assert.Equal(before, _systemd.Messages.ToList().FindIndex(m => m.StartsWith("WATCHDOG=1", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task UpgradeAsync_WithdrawnWhileSystemdIsTold_RollsBack()
    {
        // The new generation begins to stop after the last look, while this generation tells
        // systemd the new main pid: the close finds it, and this generation accepts again.
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null) { LateWithdrawal = "it began stopping" };

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        Assert.Contains("it began stopping", result.Error, StringComparison.Ordinal);
        Assert.Equal(GenerationState.Ready, upgrader.State);
        Assert.True(upgrader.Listeners.Gate.IsOpen);
    }

    [Fact]
    public async Task UpgradeAsync_ManagerStopsReading_CannotBeTold_RollsBackAndStopsTheNewGeneration_NeverBlocks()
    {
        // A manager that is alive but reads nothing (a stopped handoff run; a queue full at
        // net.unix.max_dgram_qlen): MAINPID= cannot be sent, and the manager would take this
        // generation's exit for the service's. The upgrade must not stand, and no send blocks.
        string path = Path.Combine(_directory, "stuck");
        using var stuck = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Unspecified);
        stuck.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        // Each sender's own buffer fills before the receiver's queue (max_dgram_qlen): fresh
        // senders until even a first datagram would block.
        var fillers = new List<System.Net.Sockets.Socket>();
        try
        {
            for (bool full = false; !full && fillers.Count < 100;)
            {
                var filler = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Unspecified) { Blocking = false };
                fillers.Add(filler);
                filler.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
                for (int i = 0; i < 100_000; i++)
                {
                    if (filler.Send("FILL=1"u8, System.Net.Sockets.SocketFlags.None, out var error) <= 0 && error == System.Net.Sockets.SocketError.WouldBlock)
                    {
                        full = i == 0;
                        break;
                    }
                }
            }
        }
        finally
        {
            fillers.ForEach(f => f.Dispose());
        }

        using var upgrader = CreateUpgrader(socket: path);
        await upgrader.ReadyAsync();
        var child = new FakeGeneration(pid: 4321, readyResult: null);
        _launcher.Next = child;

        var result = await upgrader.UpgradeAsync().WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(result.Succeeded);
        Assert.Contains("could not be made the service's main process", result.Error, StringComparison.Ordinal);
        Assert.True(child.Terminated);
        Assert.Equal(GenerationState.Ready, upgrader.State);
        Assert.True(upgrader.Listeners.Gate.IsOpen);
    }

    [Fact]
    public async Task UpgradeAsync_ManagerGone_CarriesOnUnsupervised_UpgradeStands_NothingMoreSent()
    {
        // Nobody receives at the socket any more (handoff run was killed with SIGKILL): nobody
        // follows the main pid, so nothing holds the upgrade back; this process stops notifying.
        string socket = Path.Combine(_directory, "vanishing");
        var vanishing = new FakeNotifySocket(socket);
        using var upgrader = CreateUpgrader(socket: socket);
        await upgrader.ReadyAsync();
        await vanishing.WaitForAsync(m => m.StartsWith("READY=1", StringComparison.Ordinal));
        vanishing.Dispose(); // the manager's socket is gone
        var child = new FakeGeneration(pid: 4321, readyResult: null);
        _launcher.Next = child;

        var result = await upgrader.UpgradeAsync();

        Assert.True(result.Succeeded, result.Error);
        Assert.False(child.Terminated);
        Assert.Equal(GenerationState.Superseded, upgrader.State);

        // Bound again, the socket hears nothing more from this process.
        using var again = new FakeNotifySocket(socket);
        await upgrader.StopAsync();
        using (var marker = new ServiceNotifier(socket, null, NullLogger.Instance))
        {
            marker.Notify("MARKER=1");
        }

        Assert.Equal(["MARKER=1"], await again.WaitForCountAsync(1));
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationDiesAfterTheMainPidWasHanded_RollsBack_AndClaimsTheMainPidBack()
    {
        // The new generation dies after MAINPID= named it and before the close: the old one
        // accepts again, and whoever follows the main pid must follow it again, not a dead pid.
        using var upgrader = CreateUpgrader();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null) { ExitAtCommit = "killed by signal 9" };

        var result = await upgrader.UpgradeAsync();

        Assert.False(result.Succeeded);
        Assert.Contains("killed by signal 9", result.Error, StringComparison.Ordinal);
        Assert.Equal(GenerationState.Ready, upgrader.State);
        await _systemd.WaitForAsync(m => m.StartsWith($"MAINPID={Pid}", StringComparison.Ordinal) && !m.Contains("X_", StringComparison.Ordinal) && _systemd.Messages.Count > 3);
        var all = _systemd.Assignments();
        int handed = all.IndexOf("MAINPID=4321 READY=1");
        Assert.True(handed > 0, string.Join(" | ", all));
        Assert.Equal(["BARRIER=1", $"MAINPID={Pid} READY=1"], all[(handed + 1)..(handed + 3)]);

        // It is the main process again: the next upgrade is announced and handed as before.
        _launcher.Next = new FakeGeneration(pid: 5432, readyResult: null);
        Assert.True((await upgrader.UpgradeAsync()).Succeeded);
        await _systemd.WaitForAsync(m => m.StartsWith("MAINPID=5432", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Watchdog_MainGenerationSendsKeepAlives_StopsOnceSuperseded()
    {
        using var upgrader = CreateUpgrader(watchdog: TimeSpan.FromMilliseconds(200));
        await _systemd.WaitForAsync(m => m.StartsWith("WATCHDOG=1", StringComparison.Ordinal));
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);
        Assert.True((await upgrader.UpgradeAsync()).Succeeded);
        int handedAt = _systemd.Messages.Count;

        // Five intervals of the keep-alive period (100 ms) pass without one.
        await Task.Delay(500);

        Assert.DoesNotContain(_systemd.Messages.Skip(handedAt), m => m.Contains("WATCHDOG=1", StringComparison.Ordinal));
    }

    [Fact]
    public async Task NotifySocket_Abstract_Reached()
    {
        using var abstractSocket = new FakeNotifySocket($"@handoff-test-{Guid.NewGuid():N}");
        using var upgrader = CreateUpgrader(socket: abstractSocket.Path);

        await upgrader.ReadyAsync();

        await abstractSocket.WaitForAsync(m => m.StartsWith("READY=1", StringComparison.Ordinal));
    }

    [Fact]
    public async Task NotifySocket_Gone_ServingGoesOn()
    {
        using var upgrader = CreateUpgrader(socket: Path.Combine(_directory, "nobody-listens"));

        await upgrader.ReadyAsync();
        await upgrader.StopAsync();

        Assert.Equal(GenerationState.Stopped, upgrader.State);
    }

    [Fact]
    public void NotSystemd_NothingSent()
    {
        var notifier = new ServiceNotifier(null, TimeSpan.FromSeconds(1), NullLogger.Instance);

        notifier.Notify("READY=1");

        Assert.False(notifier.IsEnabled);
        Assert.Null(notifier.WatchdogInterval);
        Assert.True(notifier.Barrier(TimeSpan.Zero));
    }

    public void Dispose()
    {
        _systemd.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    private Upgrader CreateUpgrader(TimeSpan? watchdog = null, string? socket = null, Inheritance? inheritance = null, int maxDraining = 4, IReadOnlyList<GenerationProcess>? older = null) => new(
        new HandoffOptions { RollbackWindow = TimeSpan.Zero, MaxDrainingGenerations = maxDraining },
        inheritance ?? (older is null ? Inheritance.None : Inheritance.ForTesting(1, 0, older)),
        new StartCommand(["/bin/sh"], "/", []),
        _launcher,
        NullLoggerFactory.Instance,
        new SystemdEnvironment(socket ?? _systemd.Path, watchdog, [], []));
}
