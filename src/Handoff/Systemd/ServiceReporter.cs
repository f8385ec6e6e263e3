using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>
/// What a generation tells its service manager (systemd, or <c>handoff run</c>) besides the
/// state changes themselves: the new generation's pid as soon as it runs, the main-pid handover
/// with its barrier, the watchdog keep-alive and the <c>STATUS=</c> line. Whether this generation
/// is the main one, and so may speak for the service, is <see cref="Upgrader"/>'s to decide; it
/// is asked through <see cref="IMainGeneration"/>. Outside a service every call returns at once.
/// </summary>
internal sealed partial class ServiceReporter : IDisposable
{
    // How long the old generation waits for systemd to confirm the new main pid: it answers in
    // microseconds, so this only bounds a stuck or vanished service manager.
    public static readonly TimeSpan BarrierTimeout = TimeSpan.FromSeconds(5);

    // The status line is refreshed at most this often while nothing else happens (older
    // generations finish draining, connections come and go).
    private static readonly TimeSpan StatusRefresh = TimeSpan.FromSeconds(5);

    // How often a new generation waiting for its parent's commit looks whether it is main now.
    private static readonly TimeSpan WaitingForCommit = TimeSpan.FromMilliseconds(50);

    private readonly ServiceNotifier _notifier;
    private readonly ILogger _logger;
    private readonly int _generation;
    private readonly bool _inherited;
    private readonly CancellationTokenSource _stop = new();

    public ServiceReporter(SystemdEnvironment systemd, ILogger logger, int generation, bool inherited, int activatedSockets)
    {
        _logger = logger;
        _generation = generation;
        _inherited = inherited;
        foreach (string warning in systemd.Warnings)
        {
            Log.SystemdWarning(logger, warning);
        }

        _notifier = new ServiceNotifier(systemd.NotifySocket, systemd.WatchdogInterval, logger);
        if (_notifier.IsEnabled)
        {
            Log.UnderSystemd(logger, Environment.ProcessId, generation, systemd.NotifySocket!, systemd.WatchdogInterval?.TotalSeconds ?? 0, activatedSockets);
            if (GenerationLauncher.Setsid is null)
            {
                Log.SystemdWarning(logger, "util-linux's setsid was not found at /usr/bin/setsid or /bin/setsid (BusyBox's has no --fork): new generations start as this process's children. Under systemd 252 that means it will not see one die while an older generation lives, and will not wait for one at a stop (docs/systemd.md); under handoff run it is harmless. Install util-linux.");
            }
        }
    }

    /// <summary>True under a service manager that still receives.</summary>
    public bool IsEnabled => _notifier.IsEnabled;

    /// <summary>True once the service manager was found gone: this generation is unsupervised.</summary>
    public bool IsGone => _notifier.IsGone;

    /// <summary>One datagram with <paramref name="assignments"/> and the current status line.</summary>
    public void Notify(string status, params string[] assignments)
    {
        if (_notifier.IsEnabled)
        {
            _notifier.Notify([.. assignments, SystemdConstants.Status + status]);
        }
    }

    /// <summary>One datagram with <paramref name="assignments"/> only.</summary>
    public void Send(params string[] assignments) => _notifier.Notify(assignments);

    /// <summary>Names the new generation as soon as it runs: <c>handoff run</c> then counts it
    /// as a generation and lets it claim the main pid if this one dies before the handover
    /// (systemd ignores the assignment). From the main generation only.</summary>
    public void AnnounceSuccessor(int pid) =>
        _notifier.Notify(string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.Successor}{pid}"));

    /// <summary>
    /// The handover as systemd must see it, while this generation is still the main process
    /// (so the default NotifyAccess=main accepts it): one datagram with the new main pid,
    /// READY=1 (the reload is over), a watchdog keep-alive (the new generation's own start a
    /// moment later) and the status, then a barrier, so that systemd knows the new main process
    /// before this one closes its listeners, drains and exits (the exit of a process that is no
    /// longer the main one does not stop the unit). <c>Handed</c> is false when the datagram
    /// was not received; <c>Error</c> then says why, or is null when the manager is gone
    /// (nobody follows the main pid, so there is nothing to hand over and nothing to roll back
    /// for).
    /// </summary>
    public async Task<(bool Handed, string? Error)> HandMainPidAsync(int newPid, string status)
    {
        string[] assignments = _notifier.WatchdogInterval is null
            ? [MainPid(newPid), SystemdConstants.Ready, SystemdConstants.Status + status]
            : [MainPid(newPid), SystemdConstants.Ready, SystemdConstants.Watchdog, SystemdConstants.Status + status];
        if (!_notifier.Notify(assignments))
        {
            return (false, _notifier.IsGone ? null : $"the notification to {SystemdConstants.NotifySocket} failed; see the log");
        }

        bool confirmed = await Task.Factory.StartNew(() => _notifier.Barrier(BarrierTimeout), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
        Log.MainPidHanded(_logger, Environment.ProcessId, _generation, newPid, confirmed ? "confirmed" : "not confirmed");
        return (true, null);
    }

    /// <summary>While this is a systemd service: the watchdog keep-alive (every third of
    /// <c>WATCHDOG_USEC</c>, a margin on systemd's advice of half) and status refreshes, from the
    /// main generation only. A new generation waiting for its parent's commit looks every 50 ms,
    /// and sends its first keep-alive as soon as it is the main process.</summary>
    public void Start(IMainGeneration generation)
    {
        if (_notifier.IsEnabled)
        {
            _ = Task.Run(() => RunAsync(generation));
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _notifier.Dispose();
    }

    public static string MainPid(int pid) => string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.MainPid}{pid}");

    public static string Monotonic() => string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.MonotonicUsec}{Interop.Libc.MonotonicMicroseconds()}");

    private async Task RunAsync(IMainGeneration generation)
    {
        var watchdog = _notifier.WatchdogInterval;
        var period = watchdog is { } interval && interval / 3 < StatusRefresh ? interval / 3 : StatusRefresh;
        long lastStatusAt = Environment.TickCount64;
        string? lastStatus = null;

        // Generation 1 is the main process from the start and reports with READY=1.
        var (wasMain, awaitingCommit) = (!_inherited, _inherited);
        try
        {
            while (true)
            {
                await Task.Delay(awaitingCommit ? WaitingForCommit : period, _stop.Token).ConfigureAwait(false);
                (bool main, awaitingCommit) = generation.MainRole();
                bool becameMain = main && !wasMain;
                wasMain = main;
                if (!main)
                {
                    continue;
                }

                var assignments = new List<string>(3);
                if (becameMain && generation.ClaimIfParentGone())
                {
                    assignments.Add(MainPid(Environment.ProcessId));
                }

                if (watchdog is not null)
                {
                    assignments.Add(SystemdConstants.Watchdog);
                }

                long now = Environment.TickCount64;
                string status = generation.StatusText();
                if (becameMain || status != lastStatus || now - lastStatusAt >= StatusRefresh.TotalMilliseconds)
                {
                    assignments.Add(SystemdConstants.Status + status);
                    lastStatus = status;
                    lastStatusAt = now;
                }

                if (assignments.Count > 0)
                {
                    _notifier.Notify([.. assignments]);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Disposed.
        }
    }

    private static partial class Log
    {
        [LoggerMessage(29, LogLevel.Information, "Generation {Generation} (pid {Pid}) told systemd that pid {NewPid} is the service's main process ({Outcome}).", EventName = "MainPidHanded")]
        public static partial void MainPidHanded(ILogger logger, int pid, int generation, int newPid, string outcome);

        [LoggerMessage(62, LogLevel.Information, "Generation {Generation} (pid {Pid}) runs under a service manager (systemd, or handoff run): notifying {Socket}, watchdog every {WatchdogSeconds} s (0: none), {ActivatedCount} activated sockets.", EventName = "UnderSystemd")]
        public static partial void UnderSystemd(ILogger logger, int pid, int generation, string socket, double watchdogSeconds, int activatedCount);

        [LoggerMessage(63, LogLevel.Warning, "{Warning}", EventName = "SystemdWarning")]
        public static partial void SystemdWarning(ILogger logger, string warning);
    }
}

/// <summary>What <see cref="ServiceReporter"/>'s loop asks the generation it reports for.</summary>
internal interface IMainGeneration
{
    /// <summary>Whether this process speaks for the service now, and whether it is a new
    /// generation still waiting for its parent's commit to become main.</summary>
    (bool Main, bool AwaitingCommit) MainRole();

    /// <summary>Just became main: when its parent is gone (it committed and exited, or died
    /// before it handed the main pid over), claims the main pid and returns true.</summary>
    bool ClaimIfParentGone();

    string StatusText();
}
