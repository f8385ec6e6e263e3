using System.Diagnostics.Metrics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff;

/// <summary>
/// One generation of a server and its part in upgrades: it owns the listeners and the
/// generation's state (<see cref="GenerationState"/>), starts the next generation on a signal or
/// on <see cref="UpgradeAsync"/>, hands it the listeners, waits for it to report ready, and then
/// tells the server to drain (<see cref="Superseded"/>). In a new generation it also adopts the
/// inherited listeners and reports ready to the old one.
/// </summary>
/// <remarks>
/// Every change of state is decided here, under one lock, as tableflip's single loop owns its
/// upgrader: a shutdown during an upgrade stops the new generation before this one closes
/// anything; once the new generation's "ready" has been read the upgrade stands, whatever
/// happens to the pid file; a generation that began stopping never reports ready; only one
/// upgrade runs at a time.
/// </remarks>
public sealed partial class Upgrader : IDisposable
{
    private readonly HandoffOptions _options;
    private readonly Inheritance _inheritance;
    private readonly StartCommand _command;
    private readonly IGenerationLauncher _launcher;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _superseded = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _shutdownDelay = new();
    private CancellationTokenSource _draining = new();
    private readonly GenerationProcess? _self = GenerationProcess.Current(Environment.ProcessId);
    private readonly IReadOnlyList<System.Runtime.InteropServices.PosixSignal> _upgradeSignals;
    private readonly bool _routesSignals;
    private readonly ServiceNotifier _notifier;
    private readonly CancellationTokenSource _serviceLoopStop = new();
    private readonly string? _controlSocket;
    private readonly ControlServer? _control;
    private readonly ShadowCopy? _shadow;
    private GenerationState _state = GenerationState.Starting;
    private bool _toldParentReady;
    private bool _claimedMain;
    private bool _handedMain;
    private LastUpgrade? _lastUpgrade;
    private readonly DateTimeOffset _startedAt = DateTimeOffset.UtcNow;
    private Task<UpgradeResult>? _upgrade;
    private long _upgradeStartedAt;

    // An upgrade asked for while this generation could not begin one (its own upgrade runs, or
    // its parent can still roll back): at most one waits, later requests join it, and it runs
    // as soon as that ends, here or, if this generation was superseded meanwhile, in its
    // successor (_forward). Nothing asked for is dropped.
    private TaskCompletionSource<UpgradeResult>? _queued;
    private Task? _forward;
    private Task? _stop;
    private bool _ownsPidFile;
    private int _disposed;

    /// <summary>
    /// Creates this process's generation: adopts what a previous generation handed over (if
    /// this process is a new generation), captures how the process was started, and handles the
    /// upgrade signals from now on.
    /// </summary>
    /// <param name="options">The settings.</param>
    /// <param name="loggerFactory">Where the log goes; none when null.</param>
    /// <param name="meterFactory">Creates the meter <c>Handoff</c> (docs/metrics.md); when
    /// null, the meter is created directly, and a <c>MeterListener</c> or OpenTelemetry's
    /// <c>AddMeter("Handoff")</c> sees it all the same.</param>
    /// <exception cref="ArgumentException">An option is invalid; the message names it.</exception>
    public Upgrader(HandoffOptions options, ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null)
        : this(
            options,
            EarlyStart.Run(),
            StartCommand.Capture(options?.WorkingDirectory),
            new GenerationLauncher(EarlyStart.Systemd),
            loggerFactory ?? NullLoggerFactory.Instance,
            EarlyStart.Systemd,
            EarlyStart.ShadowCopyValue,
            new HandoffMetrics(meterFactory))
    {
        var errors = options!.PidFile is { } pidFile ? PidFile.CheckWritable(pidFile) : null;
        errors ??= StartCommand.CheckWorkingDirectoryOption(options.WorkingDirectory);

        if (errors is not null)
        {
            throw new ArgumentException(errors, nameof(options));
        }

        _routesSignals = true;
        SignalRouter.Handle(_upgradeSignals);
        SignalRouter.Release(_upgradeSignals.Union(EarlyStart.AlwaysHandled.Select(UpgradeSignalNames.ToPosixSignal)));
        foreach (var early in SignalRouter.Attach(OnSignal))
        {
            Log.EarlySignalIgnored(_logger, Environment.ProcessId, Generation, UpgradeSignalNames.Format(early));
        }
    }

    // For testing: the OS behind a seam. Does not handle signals.
    internal Upgrader(HandoffOptions options, Inheritance inheritance, StartCommand command, IGenerationLauncher launcher, ILoggerFactory loggerFactory, SystemdEnvironment? systemd = null, string? shadowCopy = null, HandoffMetrics? metrics = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid Handoff options: " + string.Join(" ", errors), nameof(options));
        }

        _options = options;
        _inheritance = inheritance;
        _command = command;
        _launcher = launcher;
        _logger = loggerFactory.CreateLogger("Handoff.Upgrader");
        Metrics = metrics ?? new HandoffMetrics(null);
        Metrics.ObserveGeneration(() => Generation, TookOver, () => DrainingOlder().Count);
        _ = UpgradeSignalNames.TryParse(options.UpgradeSignals, out var signals, out _);
        _upgradeSignals = signals;
        Listeners = new ListenerRegistry(inheritance.Listeners, new AcceptGate(), loggerFactory.CreateLogger("Handoff.Listeners"));
        if (IsInherited)
        {
            Log.Started(_logger, Environment.ProcessId, Generation, inheritance.ParentPid, inheritance.Listeners.Count);
        }
        else
        {
            Log.FirstStarted(_logger, Environment.ProcessId, Generation, inheritance.Listeners.Count);
        }
        if (IsInherited && !inheritance.ParentAlive)
        {
            Log.Orphaned(_logger, Environment.ProcessId, Generation, inheritance.ParentPid);
        }

        systemd ??= SystemdEnvironment.None;
        var systemdLogger = loggerFactory.CreateLogger("Handoff.Systemd");
        foreach (string warning in systemd.Warnings)
        {
            Log.SystemdWarning(systemdLogger, warning);
        }

        _notifier = new ServiceNotifier(systemd.NotifySocket, systemd.WatchdogInterval, systemdLogger);
        if (launcher is GenerationLauncher real)
        {
            real.ServiceManagerGone = () => _notifier.IsGone;
        }

        if (_notifier.IsEnabled)
        {
            Log.UnderSystemd(systemdLogger, Environment.ProcessId, Generation, systemd.NotifySocket!, systemd.WatchdogInterval?.TotalSeconds ?? 0, inheritance.Listeners.Count(l => l.IsActivated));
            if (GenerationLauncher.Setsid is null)
            {
                Log.SystemdWarning(systemdLogger, "util-linux's setsid was not found at /usr/bin/setsid or /bin/setsid (BusyBox's has no --fork): new generations start as this process's children. Under systemd 252 that means it will not see one die while an older generation lives, and will not wait for one at a stop (docs/systemd.md); under handoff run it is harmless. Install util-linux.");
            }
            _ = Task.Run(RunServiceLoopAsync);
        }

        _shadow = ShadowCopy.Parse(shadowCopy, out string? shadowError);
        if (shadowError is not null)
        {
            Log.ShadowCopyIgnored(_logger, shadowError);
        }
        else if (_shadow is not null)
        {
            Log.ShadowCopied(_logger, Environment.ProcessId, Generation, _shadow.Copy, _shadow.Source);
        }

        _controlSocket = options.ResolveControlSocket(Environment.GetEnvironmentVariable("RUNTIME_DIRECTORY"));
        if (_controlSocket is not null)
        {
            Listener control;
            try
            {
                control = Listeners.ListenControl(_controlSocket);
            }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or UnauthorizedAccessException)
            {
                throw new InvalidOperationException($"{HandoffOptions.SectionName}:{nameof(HandoffOptions.ControlSocket)} '{_controlSocket}' cannot be used: {e.Message}. " +
                    (e is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.AddressAlreadyInUse }
                        ? "A running server answers there ('handoff status --control " + _controlSocket + "' says which); give each server its own path."
                        : "Create its directory, writable by this user, or choose another path."), e);
            }

            _control = new ControlServer(this, control, loggerFactory.CreateLogger("Handoff.Control"));
            _control.Start();
        }
    }

    /// <summary>The path of the control socket, or null for none.</summary>
    internal string? ControlSocketPath => _controlSocket;

    /// <summary>What <c>handoff status</c> shows.</summary>
    internal GenerationStatus GetStatus()
    {
        var draining = DrainingOlder().Select(g => new DrainingGeneration(g.Pid, g.StartedAt(), ProcessSockets.CountConnections(g.Pid))).ToList();
        return new GenerationStatus(
            Environment.ProcessId,
            Generation,
            State,
            _self?.StartedAt() ?? _startedAt,
            [.. Listeners.Listeners.Where(l => l != Listeners.Control)],
            _controlSocket,
            OpenConnections?.Invoke(),
            draining,
            _lastUpgrade ?? (IsInherited ? new LastUpgrade(LastUpgrade.Succeeded, _startedAt, $"generation {Generation} (pid {Environment.ProcessId}) took over from pid {_inheritance.ParentPid}") : null),
            _inheritance.ParentPid);
    }

    /// <summary>How many connections this generation has open, for the status line systemd
    /// shows; set by the server integration (null: not known).</summary>
    internal Func<int>? OpenConnections { get; set; }

    /// <summary>This process's generation number: 1 for the first start, one more for each
    /// upgrade since.</summary>
    public int Generation => _inheritance.Generation;

    /// <summary>True when this process was started by an upgrade of a previous generation.</summary>
    public bool IsInherited => _inheritance.ParentPid != 0;

    /// <summary>The listening sockets of this generation.</summary>
    public ListenerRegistry Listeners { get; }

    /// <summary>Where this generation is in its life.</summary>
    public GenerationState State
    {
        get
        {
            lock (_lock)
            {
                return _state;
            }
        }
    }

    /// <summary>Cancelled when a newer generation has taken over for good: this one has closed
    /// its listeners and must finish its connections and exit.</summary>
    public CancellationToken Superseded => _superseded.Token;

    internal HandoffOptions Options => _options;

    /// <summary>kill(2), behind a seam: a test's new generations have made-up pids.</summary>
    internal Func<int, int, int> SendSignal { get; set; } = Interop.Libc.Kill;

    /// <summary>Handoff's instruments; the drains report to them too.</summary>
    internal HandoffMetrics Metrics { get; }

    // An upgrade to this generation stands once this one reported ready and the previous one
    // can no longer roll back: counted here, by the generation that serves after it.
    private bool TookOver()
    {
        lock (_lock)
        {
            return _toldParentReady && _inheritance.ReadyPipe?.IsParentCommitted() == true;
        }
    }

    /// <summary>The result of the upgrade that superseded this generation, or null.</summary>
    public UpgradeResult? SupersededBy { get; private set; }

    /// <summary>
    /// Cancelled when this generation begins to drain: a newer one is ready and took over the
    /// listeners, or this one is stopping. Long-running responses (server-sent events, streamed
    /// results, long polls) end on it, so that their clients reconnect to the new generation
    /// at once rather than hold this one until <see cref="HandoffOptions.DrainTimeout"/>. If the
    /// new generation dies within <see cref="HandoffOptions.RollbackWindow"/> and this one
    /// accepts again, later reads of this property return a new, uncancelled token.
    /// </summary>
    public CancellationToken Draining
    {
        get
        {
            lock (_lock)
            {
                return _draining.Token;
            }
        }
    }

    /// <summary>Raised after every change of <see cref="State"/>, outside the lock, with the
    /// new state. The ASP.NET Core integration drains on it.</summary>
    internal event Action<GenerationState>? StateChanged;

    /// <summary>
    /// Marks this generation ready: it accepts connections on all its listeners and has
    /// finished warming up. Closes inherited listeners that nobody claimed, starts accepting,
    /// reports ready to the previous generation (which then drains) and sees that the pid file
    /// names this process. Does nothing once a shutdown has begun: a generation that is
    /// stopping never reports ready.
    /// </summary>
    public async ValueTask ReadyAsync()
    {
        if (State != GenerationState.Starting)
        {
            return;
        }

        var released = await Listeners.CloseUnclaimedReleasingAsync().ConfigureAwait(false);
        bool parentTold;
        lock (_lock)
        {
            if (_state != GenerationState.Starting)
            {
                Log.NotReporting(_logger, Environment.ProcessId, Generation, _state);
                return;
            }

            // Accept first, then report: the old generation stops accepting only after this one
            // has started, so the accept queue is never without a reader.
            Listeners.Gate.Open();
            // Written even when the parent is known to be gone: the write fails (EPIPE) and the
            // pipe is closed, rather than held open for the life of the process.
            parentTold = _inheritance.ReadyPipe?.ReportReady(released) == true && _inheritance.ParentAlive;
            _toldParentReady = parentTold;
            _state = GenerationState.Ready;
            _ownsPidFile = _options.PidFile is not null;
        }

        Log.Ready(_logger, Environment.ProcessId, Generation, Listeners.Listeners.Count);
        OnStateChanged(GenerationState.Ready);
        if (!IsInherited)
        {
            // The first generation is systemd's main process: Type=notify becomes active now.
            NotifyService(SystemdConstants.Ready, MainPidAssignment(Environment.ProcessId));
        }
        if (parentTold)
        {
            // The previous generation writes the pid file once it has read the report; if it
            // dies first, the file would name a dead process.
            if (_options.PidFile is not null)
            {
                ParentWatch.Start(_inheritance.ParentPid, _inheritance.IsParentRunning, ParentExited);
            }
        }
        else if (IsInherited && _inheritance.IsParentRunning())
        {
            // The report failed but the previous generation lives: it gave up on this one (its
            // UpgradeTimeout passed) and is about to stop it; it keeps serving and its pid file.
            Log.ParentGaveUp(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);
            _ownsPidFile = false;
        }
        else
        {
            if (IsInherited)
            {
                Log.ParentGone(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);

                // Nobody hands the main pid to this orphan; systemd takes it only where it
                // accepts notifications from any process of the unit (NotifyAccess=all).
                lock (_lock)
                {
                    _claimedMain = true;
                }

                NotifyService(SystemdConstants.Ready, MainPidAssignment(Environment.ProcessId));
            }

            WritePidFile(Environment.ProcessId);
        }
    }

    /// <summary>Tells the previous generation that this one failed to start (e.g. its warm-up
    /// threw), so the upgrade fails with this reason; it keeps serving. No-op in a first
    /// generation or after <see cref="ReadyAsync"/>.</summary>
    public void ReportStartFailed(string reason)
    {
        lock (_lock)
        {
            if (_state is GenerationState.Starting or GenerationState.Stopping && _inheritance.ReadyPipe is { } pipe)
            {
                pipe.ReportFailed(reason);
            }
        }
    }

    /// <summary>
    /// Starts a new generation from the executable and arguments this process was started
    /// with, hands it every listener, waits until it reports ready and then for
    /// <see cref="HandoffOptions.RollbackWindow"/>. On success the new generation serves and
    /// <see cref="Superseded"/> fires; on failure the new generation is stopped and this one
    /// serves as before.
    /// </summary>
    /// <returns>The outcome, with the new pid or the reason for failure. Never throws.</returns>
    public Task<UpgradeResult> UpgradeAsync()
    {
        int next = Generation + 1;
        string? refusal;
        UpgradeFailureReason refusalReason;
        string? waitsFor;
        bool answersSystemd;
        bool watchParent = false;
        TaskCompletionSource<UpgradeResult>? joining = null;
        Task<UpgradeResult> upgrade;
        lock (_lock)
        {
            // Only the main process may speak for the service (a new generation whose parent
            // can still roll back is not, and would be refused by systemd).
            answersSystemd = _state == GenerationState.Ready && IsMainLocked();
            waitsFor = _state switch
            {
                GenerationState.Upgrading => InProgress,
                GenerationState.HandingOver => "this generation is handing over to a new one",
                GenerationState.Ready when _inheritance.ReadyPipe is { } pipe && !pipe.IsParentCommitted() =>
                    $"the previous generation (pid {_inheritance.ParentPid}) can still roll back to itself (Handoff:RollbackWindow)",
                _ => null,
            };
            (refusalReason, refusal) = _state switch
            {
                _ when waitsFor is not null => (UpgradeFailureReason.None, null),
                GenerationState.Starting => (UpgradeFailureReason.NotReady, "this generation is not ready yet"),
                GenerationState.Superseded => (UpgradeFailureReason.Superseded, $"this generation was already superseded by pid {SupersededBy?.NewPid}"),
                GenerationState.Stopping or GenerationState.Stopped => (UpgradeFailureReason.ShuttingDown, "this generation is shutting down"),
                _ => (UpgradeFailureReason.TooManyDraining, DrainingBoundRefusal()),
            };
            if (waitsFor is not null)
            {
                watchParent = _queued is null && _state == GenerationState.Ready;
                _queued ??= new TaskCompletionSource<UpgradeResult>(TaskCreationOptions.RunContinuationsAsynchronously);
                upgrade = _queued.Task;
            }
            else if (refusal is null)
            {
                _state = GenerationState.Upgrading;
                _upgradeStartedAt = System.Diagnostics.Stopwatch.GetTimestamp();
                upgrade = _upgrade = Task.Run(() => RunUpgradeGuardedAsync(next));

                // One still waiting (the moment it waited for has just ended, and its own start
                // had not come yet) is answered by this upgrade, which starts after it was asked
                // for: a second would upgrade again to the same build.
                joining = _queued;
                _queued = null;
            }
            else
            {
                upgrade = Task.FromResult(UpgradeResult.Refusal(next, refusalReason, refusal));
            }
        }

        if (joining is not null)
        {
            Log.QueuedUpgradeStarts(_logger, Environment.ProcessId, Generation);
            _ = upgrade.ContinueWith(static (t, q) => ((TaskCompletionSource<UpgradeResult>)q!).TrySetResult(t.Result), joining, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        if (waitsFor is not null)
        {
            Log.UpgradeQueued(_logger, Environment.ProcessId, Generation, waitsFor);
            if (watchParent)
            {
                _ = Task.Run(RunQueuedAfterParentCommitsAsync);
            }

            return upgrade;
        }

        if (refusal is not null)
        {
            Log.UpgradeRefused(_logger, Environment.ProcessId, Generation, refusal);
            Metrics.UpgradeEnded(HandoffMetrics.Refused, refusalReason.Tag(), null);
            _lastUpgrade = new LastUpgrade("refused", DateTimeOffset.UtcNow, refusal);

            if (answersSystemd && _notifier.IsEnabled)
            {
                // A reload systemd asked for (Type=notify-reload) ends with READY=1 either way,
                // and the status line says why nothing changed.
                NotifyService(SystemdConstants.Reloading, MonotonicAssignment());
                NotifyService(SystemdConstants.Ready);
            }
        }
        else
        {
            NotifyService(SystemdConstants.Reloading, MonotonicAssignment());
            OnStateChanged(GenerationState.Upgrading);
        }

        return upgrade;
    }

    /// <summary>
    /// Begins this generation's final shutdown (or its exit after being superseded): upgrades
    /// are refused from now on, an upgrade in flight is stopped together with its new generation
    /// (within <see cref="HandoffOptions.TerminateTimeout"/>) before anything else, the listeners
    /// are closed, and the pid file is removed if it names this process. The server then drains
    /// its connections. Safe to call more than once; every call returns the same task.
    /// </summary>
    public Task StopAsync()
    {
        lock (_lock)
        {
            if (_stop is null)
            {
                // The state changes here, on the caller's thread (the signal's), not in the task:
                // under load the thread pool may take a moment to run it, and a health check
                // must say "shutting down" from the signal on.
                var (was, main) = BeginStopLocked();
                _stop = Task.Run(() => StopCoreAsync(was, main));
                if (was is not (GenerationState.HandingOver or GenerationState.Superseded))
                {
                    // A queued upgrade is refused now; one waiting for the handover is passed on
                    // (or refused) when the handover ends.
                    _ = Task.Run(RunQueued);
                }
            }

            return _stop;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (_routesSignals)
        {
            SignalRouter.Detach(OnSignal);
        }

        _serviceLoopStop.Cancel();
        _notifier.Dispose();
        _superseded.Dispose();
        Metrics.Dispose();
    }

    private (GenerationState Was, bool Main) BeginStopLocked()
    {
        var was = _state;

        // Decided before the withdrawal below closes the ready pipe.
        bool main = IsMainLocked();
        if (_state is GenerationState.Starting or GenerationState.Ready or GenerationState.Upgrading)
        {
            _state = GenerationState.Stopping;
            if (was == GenerationState.Starting)
            {
                _inheritance.ReadyPipe?.ReportFailed("the new generation was stopped before it became ready");
            }
            else
            {
                if (!main && _toldParentReady && _notifier.IsEnabled)
                {
                    // The previous generation may have told systemd this pid is the main
                    // process an instant ago, before it saw this withdrawal: give it back,
                    // first, so that the exit of this process does not count as the service's.
                    // Refused (harmlessly) when systemd had not made this process main.
                    _notifier.Notify(MainPidAssignment(_inheritance.ParentPid));
                }

                // If the previous generation can still roll back, it accepts again.
                _inheritance.ReadyPipe?.ReportStopping();
            }
        }

        return (was, main);
    }

    private async Task StopCoreAsync(GenerationState was, bool main)
    {
        Log.StopRequested(_logger, Environment.ProcessId, Generation, was);
        if (was is GenerationState.Starting or GenerationState.Ready or GenerationState.Upgrading)
        {
            // The final stop. Only the main generation says so: STOPPING=1 stops the unit, and a
            // generation that is draining after an upgrade is not stopping the service.
            if (main)
            {
                NotifyService(SystemdConstants.Stopping);
            }

            // With a shutdown delay the generation still serves: the drain (and its token)
            // begins when the delay ends.
            OnStateChanged(GenerationState.Stopping, drain: !DelaysShutdown(was));
        }

        // Ends a wait for the new generation's report or the rollback window at once.
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_upgrade is { } upgrade)
        {
            await upgrade.ConfigureAwait(false); // Never faults: RunUpgradeGuardedAsync.
        }

        if (DelaysShutdown(was))
        {
            // Unhealthy already (the state says Stopping), still accepting: load balancers take
            // this generation out before it refuses anything.
            Log.ShutdownDelayed(_logger, Environment.ProcessId, Generation, _options.ShutdownDelay.TotalSeconds);
            try
            {
                await Task.Delay(_options.ShutdownDelay, _shutdownDelay.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Log.ShutdownDelayEnded(_logger, Environment.ProcessId, Generation);
            }

            FireDraining();
        }

        Listeners.Gate.Close();
        await Listeners.CloseAllAsync().ConfigureAwait(false);
        if (was is GenerationState.Starting or GenerationState.Ready or GenerationState.Upgrading or GenerationState.HandingOver)
        {
            // A stop, not a handover: unless another generation still accepts on these paths
            // (each stopping generation checks after closing its own copy, so the last one to
            // close removes them), no one serves them after this one. A new generation that
            // never became ready removes only what it bound itself: its parent still serves
            // the paths it inherited.
            Listeners.RemoveUnixSocketPaths();
        }

        if (_ownsPidFile && _options.PidFile is { } pidFile)
        {
            try
            {
                // The file may name this process (unless a newer one took over), or, when a write
                // failed (disk full or read-only at the time), an older generation or the
                // successor; those only once they are gone, never one that still serves.
                int? successor = SupersededBy?.NewPid;
                int[] stale = [.. new[] { _inheritance.ParentPid, successor ?? 0 }.Concat(_inheritance.Older.Select(g => g.Pid)).Where(p => p > 0 && !GenerationProcess.IsRunning(p))];
                PidFile.RemoveIfOwner(pidFile, successor is null ? [Environment.ProcessId, .. stale] : stale);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Log.PidFileFailed(_logger, Environment.ProcessId, Generation, pidFile, "remove", e.Message);
            }
        }

        Task? forward;
        lock (_lock)
        {
            // A queued upgrade passed on to the successor, or about to be (the handover's end
            // passes it on, and may come after this point): its outcome goes to whoever asked
            // here, over this generation's control connection.
            forward = _forward ?? _queued?.Task;
        }

        if (forward is not null)
        {
            await forward.WaitAsync(_options.UpgradeTimeout + _options.RollbackWindow + BarrierTimeout).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        if (_control is not null)
        {
            // Lets the client of the upgrade that superseded this generation read its outcome.
            await _control.StopAsync().ConfigureAwait(false);
        }

        lock (_lock)
        {
            _state = GenerationState.Stopped;
        }

        OnStateChanged(GenerationState.Stopped);
    }

    /// <summary>Ends <see cref="HandoffOptions.ShutdownDelay"/> now, if a shutdown waits in
    /// it (a second SIGTERM or SIGINT).</summary>
    internal void EndShutdownDelay() => _shutdownDelay.Cancel();

    // A final stop of a generation that serves waits ShutdownDelay; one that never served, or
    // is handing over, has nobody to keep serving.
    private bool DelaysShutdown(GenerationState was) =>
        _options.ShutdownDelay > TimeSpan.Zero && was is GenerationState.Ready or GenerationState.Upgrading;

    private void FireDraining()
    {
        CancellationTokenSource fire;
        lock (_lock)
        {
            fire = _draining;
        }

        FireToken(fire, nameof(Draining));
    }

    // Every state change goes out through here: first the event, then the Draining token. The
    // event begins the connections' drain (HandoffHostedService): an HTTP/2 connection then has
    // its first GOAWAY waiting for the next stream's end, so a long response that the
    // application ends on Draining (a gRPC stream, server-sent events) carries it, and the
    // client's next request goes to a new connection, not back to this generation.
    private void OnStateChanged(GenerationState state, bool drain = true)
    {
        CancellationTokenSource? fire = null;
        lock (_lock)
        {
            if (drain && state is GenerationState.HandingOver or GenerationState.Superseded or GenerationState.Stopping)
            {
                fire = _draining;
            }
            else if (state == GenerationState.Ready && _draining.IsCancellationRequested)
            {
                // The cancelled source is left to the collector: a caller may have just read
                // its token.
                _draining = new CancellationTokenSource();
            }
        }

        try
        {
            StateChanged?.Invoke(state);
        }
        finally
        {
            if (fire is not null)
            {
                FireToken(fire, nameof(Draining));
            }
        }
    }

    // The application's callbacks on Draining and Superseded run here: one that throws is
    // logged and must not stop the state change (the others have run; Cancel runs them all).
    private void FireToken(CancellationTokenSource source, string name)
    {
        try
        {
            source.Cancel();
        }
        catch (AggregateException e)
        {
            Log.TokenCallbackFailed(_logger, e, Environment.ProcessId, Generation, name);
        }
    }

    private List<GenerationProcess> DrainingOlder() => [.. _inheritance.Older.Where(g => g.IsAlive())];

    private string? DrainingBoundRefusal()
    {
        if (_options.MaxDrainingGenerations <= 0)
        {
            return null;
        }

        var draining = DrainingOlder();
        return draining.Count + 1 > _options.MaxDrainingGenerations
            ? $"{draining.Count} older generations are still draining (pids {string.Join(", ", draining.Select(g => g.Pid))}); another upgrade would make {draining.Count + 1} draining generations, more than {HandoffOptions.SectionName}:{nameof(HandoffOptions.MaxDrainingGenerations)} ({_options.MaxDrainingGenerations}). Wait for them to finish, or raise the option"
            : null;
    }

    // UpgradeAsync never throws and StopAsync must always finish: an unexpected exception
    // (a throwing StateChanged handler, say) is logged and resolved the way the state says.
    private async Task<UpgradeResult> RunUpgradeGuardedAsync(int next)
    {
        try
        {
            return await RunUpgradeCatchingAsync(next).ConfigureAwait(false);
        }
        finally
        {
            // After this upgrade's own caller has its outcome.
            _ = Task.Run(RunQueued);
        }
    }

    private async Task<UpgradeResult> RunUpgradeCatchingAsync(int next)
    {
        try
        {
            return await RunUpgradeAsync(next).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Whatever went wrong, the generation must be left in a defined state.
        catch (Exception e)
#pragma warning restore CA1031
        {
            bool handingOver;
            lock (_lock)
            {
                // Once "ready" was read the new generation serves: finish the handover.
                handingOver = _state == GenerationState.HandingOver;
                if (handingOver)
                {
                    _state = GenerationState.Superseded;
                }
            }

            if (handingOver)
            {
                await Listeners.CloseAllAsync().ConfigureAwait(false);
                FireToken(_superseded, nameof(Superseded));
            }

            return Fail(0, $"unexpected error during the upgrade: {e.GetType().Name}: {e.Message}", UpgradeFailureReason.Unexpected);
        }
    }

    private async Task<UpgradeResult> RunUpgradeAsync(int next)
    {
        int pid = Environment.ProcessId;
        IStartedGeneration child;
        IReadOnlyList<Listener> listeners;
        string? copy = null;
        try
        {
            var command = _command;
            if (_shadow is not null)
            {
                // The source directory as it is now: the build deployed there is the new one.
                // Bounded like the rest of the start, and ended by a shutdown.
                using var copying = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
                copying.CancelAfter(_options.UpgradeTimeout);
                copy = ShadowCopy.CreateCopy(_shadow.Source, _shadow.Root, next, copying.Token);
                command = _shadow.MoveTo(_command, copy);
            }

            command.CheckWorkingDirectory();
            string executable = command.ResolveExecutable();
            listeners = Listeners.Listeners;
            Log.Spawning(_logger, pid, Generation, executable, listeners.Count);
            var older = DrainingOlder().Prepend(_self ?? new GenerationProcess(pid, 0)).ToList();
            var blocked = _upgradeSignals.Select(UpgradeSignalNames.ToNumber).Union(EarlyStart.AlwaysHandled).ToList();
            child = _launcher.Start(executable, command, listeners, next, older, blocked, _options.UpgradeTimeout, _stopping.Token);
            if (copy is not null)
            {
                ShadowCopy.SetOwner(copy, child.Pid);
            }
        }
#pragma warning disable CA1031 // Whatever stops the spawn fails this upgrade, never the server.
        catch (Exception e)
#pragma warning restore CA1031
        {
            if (copy is not null)
            {
                ShadowCopy.Delete(copy);
            }

            return Fail(0, $"cannot start the new generation: {e.Message}", UpgradeFailureReason.SpawnFailed);
        }

        // First thing: a supervisor that learns of the new generation only after the log line
        // could lose it to a kill of this one in between.
        AnnounceSuccessor(child.Pid);
        long spawnedAt = System.Diagnostics.Stopwatch.GetTimestamp();
        Log.Spawned(_logger, pid, Generation, child.Pid, next);
        StartFailure? failure;
        bool stopped = false;
        try
        {
            failure = await child.WaitReadyAsync(_options.UpgradeTimeout, _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            failure = new(UpgradeFailureReason.Shutdown, "this generation began shutting down before the new one reported ready");
            stopped = true;
        }

        List<Listener> released = [];
        lock (_lock)
        {
            stopped |= _state != GenerationState.Upgrading;
            if (!stopped && failure is null)
            {
                // The decisive moment: from here on the upgrade stands. The sockets the new
                // build no longer listens on keep being served here until the commit (their own
                // gate stays open): otherwise their connections would wait in the queue, unserved,
                // and be reset when this generation closes them.
                released = [.. child.TakeReleased().Where(i => i < listeners.Count).Select(i => listeners[i])];
                foreach (var listener in released)
                {
                    var own = new AcceptGate();
                    own.Open();
                    listener.Gate = own;
                }

                _state = GenerationState.HandingOver;
                Listeners.Gate.Close();
            }
        }

        foreach (var listener in released)
        {
            Log.ServingReleased(_logger, pid, Generation, ListenerAddress.Format(listener.EndPoint), next);
        }

        if (stopped || failure is not null)
        {
            string? ended = await child.TerminateAsync(_options.TerminateTimeout).ConfigureAwait(false);
            string reason = stopped
                ? $"new generation {next} (pid {child.Pid}) was stopped because this generation is shutting down ({ended ?? "it had exited"})"
                : $"new generation {next} (pid {child.Pid}) failed: {failure?.Message.TrimEnd('.')}" + (ended is null ? "" : $"; it was stopped ({ended})");
            return Fail(child.Pid, reason, stopped ? UpgradeFailureReason.Shutdown : failure!.Reason);
        }

        return await HandOverAsync(child, next, released, System.Diagnostics.Stopwatch.GetElapsedTime(spawnedAt), System.Diagnostics.Stopwatch.GetElapsedTime(_upgradeStartedAt)).ConfigureAwait(false);
    }

    private async Task<UpgradeResult> HandOverAsync(IStartedGeneration child, int next, List<Listener> released, TimeSpan timeToReady, TimeSpan triggerToReady)
    {
        int pid = Environment.ProcessId;
        Log.HandingOver(_logger, pid, Generation, child.Pid, next, _options.RollbackWindow.TotalSeconds);
        OnStateChanged(GenerationState.HandingOver);
        long readyAt = Environment.TickCount64;
        var exited = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        child.ReapWhenExited(how =>
        {
            exited.TrySetResult(how);
            Log.SuccessorExited(_logger, pid, Generation, child.Pid, next, how);
        });
        using var commit = new CancellationTokenSource();
        var withdrawn = child.WatchAsync(commit.Token);
        WritePidFile(child.Pid);

        if (_options.RollbackWindow > TimeSpan.Zero)
        {
            try
            {
                await Task.WhenAny((Task)exited.Task, withdrawn).WaitAsync(_options.RollbackWindow, _stopping.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is TimeoutException or OperationCanceledException)
            {
                // The window passed, or a shutdown ends it: the new generation keeps serving.
            }
        }

        // Commit. The watch takes a last look (a withdrawal written until now still counts:
        // nothing is closed yet, so this generation can still accept again); then systemd learns
        // the new main pid, while this generation still is the main process; then closing the
        // pipe tells the new generation that this one can no longer roll back, so it is the main
        // process and may start an upgrade of its own. A final look at the close catches a
        // withdrawal written meanwhile.
        await commit.CancelAsync().ConfigureAwait(false);
        string? withdrawal = await withdrawn.ConfigureAwait(false);
        bool terminate = false;
        if (withdrawal is null && !exited.Task.IsCompleted)
        {
            if (await HandMainPidAsync(child.Pid, next).ConfigureAwait(false) is { } notifyError)
            {
                // systemd would take this generation's exit for the service's: stay.
                withdrawal = $"could not be made the service's main process ({notifyError})";
                terminate = true;
            }
            else
            {
                withdrawal = await child.CommitAsync().ConfigureAwait(false);
            }
        }

        if (withdrawal == StartedGeneration.PipeClosed)
        {
            // The process is dying: wait a moment to say how it ended.
            await Task.WhenAny(exited.Task, Task.Delay(TimeSpan.FromSeconds(1))).ConfigureAwait(false);
        }

        string? why = exited.Task.IsCompleted ? $"exited ({exited.Task.Result})" : withdrawal;
        bool rollBack;
        bool takeMainBack = false;
        lock (_lock)
        {
            rollBack = why is not null && _state == GenerationState.HandingOver && !_stopping.IsCancellationRequested;
            if (rollBack)
            {
                _state = GenerationState.Ready;
                takeMainBack = _handedMain;
                _handedMain = false;
            }
            else if (_state == GenerationState.HandingOver)
            {
                _state = GenerationState.Superseded;
            }
        }

        if (rollBack)
        {
            // The drain ends (and Draining is new) before the gate opens: the clients that fell
            // off the dead generation reconnect now and must not meet a draining one.
            OnStateChanged(GenerationState.Ready);
            Listeners.Gate.Open();
            foreach (var listener in released)
            {
                // Back under the common gate; closing its own sends its accept loop there.
                var own = listener.Gate;
                listener.Gate = Listeners.Gate;
                own.Close();
            }

            WritePidFile(pid);
            if (takeMainBack)
            {
                // MAINPID= named the new generation a moment ago: whoever follows the main pid
                // must follow this one again. handoff run takes the claim once the new one is
                // gone; systemd (NotifyAccess=main) refuses it, but a main process that died
                // stops the unit there anyway. A new generation that withdrew gave it back too.
                Log.MainPidTakenBack(_logger, pid, Generation, child.Pid);
                NotifyService(MainPidAssignment(pid), SystemdConstants.Ready);
            }

            string reason = $"new generation {next} (pid {child.Pid}) {why} {Environment.TickCount64 - readyAt} ms after it reported ready; this generation accepts again";
            if (terminate)
            {
                string? ended = await child.TerminateAsync(_options.TerminateTimeout).ConfigureAwait(false);
                reason += ended is null ? "" : $"; it was stopped ({ended})";
            }

            return Fail(child.Pid, reason, UpgradeFailureReason.RolledBack);
        }

        await child.CommitAsync().ConfigureAwait(false); // Closed already unless it withdrew too late.
        await Listeners.CloseAllAsync().ConfigureAwait(false);
        var result = UpgradeResult.Success(child.Pid, next, timeToReady);
        if (_lastUpgrade?.Outcome != LastUpgrade.Succeeded)
        {
            _lastUpgrade = LastUpgrade.TookOver(next, child.Pid);
        }
        SupersededBy = result;
        Metrics.UpgradeEnded(HandoffMetrics.Succeeded, null, triggerToReady);
        Log.Superseded(_logger, pid, Generation, child.Pid, next);
        OnStateChanged(GenerationState.Superseded);
        FireToken(_superseded, nameof(Superseded));
        if (why is not null && !exited.Task.IsCompleted)
        {
            // Both are stopping (a stop of the whole service during the handover). The new
            // generation may have looked at the pid file before this one wrote its pid there,
            // and found nothing of its own to remove: wait for its exit, so that this
            // generation's stop finds it gone and removes the file instead.
            await Task.WhenAny(exited.Task, Task.Delay(_options.DrainTimeout + _options.TerminateTimeout)).ConfigureAwait(false);
        }

        return result;
    }

    /// <summary>Runs the queued upgrade, if any, now that what it waited for has ended: here
    /// when this generation serves, in the successor when it was superseded, refused when it is
    /// shutting down.</summary>
    private void RunQueued()
    {
        TaskCompletionSource<UpgradeResult>? queued;
        GenerationState state;
        lock (_lock)
        {
            state = _state;
            queued = _queued;
            if (queued is null || state is GenerationState.Upgrading or GenerationState.HandingOver)
            {
                return;
            }

            _queued = null;
            if (state == GenerationState.Superseded)
            {
                _forward = ForwardQueuedAsync(queued, SupersededBy!);
                return;
            }
        }

        if (state == GenerationState.Ready)
        {
            Log.QueuedUpgradeStarts(_logger, Environment.ProcessId, Generation);
            _ = UpgradeAsync().ContinueWith(static (t, q) => ((TaskCompletionSource<UpgradeResult>)q!).TrySetResult(t.Result), queued, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
        else
        {
            var refusal = UpgradeResult.Refusal(Generation + 1, UpgradeFailureReason.ShuttingDown, "this generation began shutting down before the upgrade asked for could run");
            Log.UpgradeRefused(_logger, Environment.ProcessId, Generation, refusal.Error!);
            Metrics.UpgradeEnded(HandoffMetrics.Refused, refusal.Reason.Tag(), null);
            queued.TrySetResult(refusal);
        }
    }

    // A new generation asked to upgrade while its parent can still roll back: the request runs
    // once the parent committed (it closes the ready pipe) or this generation stops.
    private async Task RunQueuedAfterParentCommitsAsync()
    {
        while (State == GenerationState.Ready && _inheritance.ReadyPipe?.IsParentCommitted() == false)
        {
            try
            {
                await Task.Delay(ParentCommitPoll, _stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        RunQueued();
    }

    /// <summary>Passes an upgrade asked for during the handover on to the generation that took
    /// over: it starts the build on disk now, which may be newer than the one that just took
    /// over. Over the control socket the outcome comes back to whoever asked here; without one,
    /// the successor gets the upgrade signal and the outcome is in its log.</summary>
    private async Task ForwardQueuedAsync(TaskCompletionSource<UpgradeResult> queued, UpgradeResult successor)
    {
        int pid = Environment.ProcessId;
        UpgradeResult? result = null;
        string unreachable = "";
        if (_controlSocket is not null)
        {
            Log.QueuedUpgradeForwarded(_logger, pid, Generation, successor.NewPid, "over the control socket " + _controlSocket);
            var (answer, asked) = await ControlRequest.UpgradeAsync(_controlSocket, successor.Generation + 1, _options.UpgradeTimeout + _options.RollbackWindow + BarrierTimeout).ConfigureAwait(false);
            if (asked)
            {
                result = answer;
                Log.QueuedUpgradeEnded(_logger, pid, Generation, answer.ToString());
            }
            else
            {
                // Its path was removed or replaced meanwhile: the signal still reaches the
                // successor, though the outcome then is only in its log.
                unreachable = $" ({answer.Error})";
            }
        }

        if (result is null && _upgradeSignals.Count > 0)
        {
            var signal = _upgradeSignals[0];
            Log.QueuedUpgradeForwarded(_logger, pid, Generation, successor.NewPid, "with " + UpgradeSignalNames.Format(signal) + unreachable);
            result = SendSignal(successor.NewPid, UpgradeSignalNames.ToNumber(signal)) == 0
                ? successor
                : UpgradeResult.Refusal(successor.Generation + 1, UpgradeFailureReason.NotPassedOn, $"the upgrade asked for during the handover could not be passed on to pid {successor.NewPid}: it is gone");
        }
        else if (result is null)
        {
            result = UpgradeResult.Refusal(successor.Generation + 1, UpgradeFailureReason.NotPassedOn, $"the upgrade asked for during the handover cannot be passed on to pid {successor.NewPid}: {(unreachable.Length > 0 ? unreachable.Trim(' ', '(', ')') + ", and there is no upgrade signal" : "there is neither a control socket nor an upgrade signal")}; ask it again");
            Log.UpgradeRefused(_logger, pid, Generation, result.Error!);
        }

        queued.TrySetResult(result);
    }

    /// <param name="newPid">The new generation's pid, 0 when none was started.</param>
    /// <param name="reason">What the log, the status and the caller are told.</param>
    /// <param name="why">The failure's kind (also the metrics' <c>error.type</c>, docs/metrics.md).</param>
    private UpgradeResult Fail(int newPid, string reason, UpgradeFailureReason why)
    {
        if (_shadow is not null)
        {
            // The failed generation's copy, once it has exited.
            ShadowCopy.Prune(_shadow.Root);
        }

        bool changed;
        lock (_lock)
        {
            changed = _state == GenerationState.Upgrading;
            if (changed)
            {
                _state = GenerationState.Ready;
            }
        }

        if (State is GenerationState.Stopping or GenerationState.Stopped)
        {
            Log.UpgradeFailedStopping(_logger, Environment.ProcessId, Generation, newPid, reason);
        }
        else
        {
            Log.UpgradeFailed(_logger, Environment.ProcessId, Generation, newPid, reason);
        }

        _lastUpgrade = new LastUpgrade("failed", DateTimeOffset.UtcNow, reason);
        Metrics.UpgradeEnded(HandoffMetrics.Failed, why.Tag(), System.Diagnostics.Stopwatch.GetElapsedTime(_upgradeStartedAt));
        if (changed)
        {
            OnStateChanged(GenerationState.Ready);
        }

        if (State == GenerationState.Ready)
        {
            // Ends the reload that RELOADING=1 began; this generation serves on.
            NotifyService(SystemdConstants.Ready);
        }

        return UpgradeResult.Failure(newPid, Generation + 1, why, reason);
    }

    /// <summary>Writes the pid file; a failure is logged and changes nothing else, because the
    /// generation it should name serves either way.</summary>
    private void WritePidFile(int pid)
    {
        if (_options.PidFile is not { } pidFile)
        {
            return;
        }

        try
        {
            PidFile.Write(pidFile, pid);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.PidFileFailed(_logger, Environment.ProcessId, Generation, pidFile, $"write pid {pid} to", e.Message);
        }
    }

    private void ParentExited()
    {
        if (_options.PidFile is { } pidFile && PidFile.Read(pidFile) == _inheritance.ParentPid && State is GenerationState.Ready or GenerationState.Upgrading)
        {
            Log.ParentGone(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);
            WritePidFile(Environment.ProcessId);
        }
    }

    // How long the old generation waits for systemd to confirm the new main pid: it answers in
    // microseconds, so this only bounds a stuck or vanished service manager.
    private static readonly TimeSpan BarrierTimeout = TimeSpan.FromSeconds(5);

    // The status line is refreshed at most this often while nothing else happens (older
    // generations finish draining, connections come and go).
    private static readonly TimeSpan StatusRefresh = TimeSpan.FromSeconds(5);

    /// <summary>Whether systemd treats this process as the service's main process (as far as
    /// this process can know): the first generation until it hands the main pid on, a new
    /// generation once its parent committed to the handover (the parent sends MAINPID= first),
    /// an orphan that claimed it.</summary>
    private bool IsMainLocked()
    {
        if (_handedMain)
        {
            return false;
        }

        return !IsInherited || _claimedMain || (_toldParentReady && _inheritance.ReadyPipe?.IsParentCommitted() == true);
    }

    /// <summary>Names the new generation to the service manager as soon as it runs: <c>handoff
    /// run</c> then counts it as a generation and lets it claim the main pid if this one dies
    /// before the handover (systemd ignores the assignment).</summary>
    private void AnnounceSuccessor(int childPid)
    {
        bool main;
        lock (_lock)
        {
            main = IsMainLocked();
        }

        if (main && _notifier.IsEnabled)
        {
            _notifier.Notify(string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.Successor}{childPid}"));
        }
    }

    private static string MainPidAssignment(int pid) => string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.MainPid}{pid}");

    private static string MonotonicAssignment() => string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.MonotonicUsec}{Interop.Libc.MonotonicMicroseconds()}");

    private static string Clock(DateTimeOffset? at = null) => (at ?? DateTimeOffset.UtcNow).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);

    private const string InProgress = "an upgrade is already in progress";

    // How often a queued upgrade looks whether the parent committed; the rollback window it
    // waits for is seconds long.
    internal TimeSpan ParentCommitPoll { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>The last upgrade's outcome as status reports show it.</summary>
    internal sealed record LastUpgrade(string Outcome, DateTimeOffset At, string Detail)
    {
        public const string Succeeded = "succeeded";

        public static LastUpgrade TookOver(int generation, int pid) => new(Succeeded, DateTimeOffset.UtcNow, $"generation {generation} (pid {pid}) took over");

        public override string ToString() => Outcome == Succeeded ? $"{Detail} at {Clock(At)}" : $"{Outcome} at {Clock(At)}: {Detail}";
    }

    /// <summary>One datagram to systemd with <paramref name="assignments"/> and the current
    /// status line. Nothing outside systemd.</summary>
    private void NotifyService(params string[] assignments)
    {
        if (_notifier.IsEnabled)
        {
            _notifier.Notify([.. assignments, SystemdConstants.Status + StatusText()]);
        }
    }

    /// <summary>What <c>systemctl status</c> shows on its Status: line.</summary>
    internal string StatusText()
    {
        GenerationState state = State;
        int pid = Environment.ProcessId;
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"Generation {Generation} (pid {pid}) ");
        text.Append(state switch
        {
            GenerationState.Starting => "starting",
            GenerationState.Upgrading => $"serving; upgrading to generation {Generation + 1}",
            GenerationState.HandingOver => $"handing over to generation {Generation + 1}",
            GenerationState.Superseded => $"superseded by pid {SupersededBy?.NewPid}; draining",
            GenerationState.Stopping or GenerationState.Stopped => "stopping; draining",
            _ => "serving",
        });
        if (OpenConnections is { } count)
        {
            text.Append(CultureInfo.InvariantCulture, $"; {count()} open connections");
        }

        var draining = DrainingOlder().Select(g => g.Pid).ToList();
        if (draining.Count > 0 && state is not (GenerationState.Superseded or GenerationState.Stopping or GenerationState.Stopped))
        {
            text.Append(CultureInfo.InvariantCulture, $"; older generations draining: pid {string.Join(", ", draining)}");
        }

        string? last = _lastUpgrade?.ToString() ?? (IsInherited ? $"took over from pid {_inheritance.ParentPid}" : null);
        if (last is not null)
        {
            text.Append("; last upgrade: ").Append(last);
        }

        return text.ToString();
    }

    /// <summary>
    /// The handover as systemd must see it, while this generation is still the main process
    /// (so the default NotifyAccess=main accepts it): one datagram with the new main pid,
    /// READY=1 (the reload is over), a watchdog keep-alive (the new generation's own start a
    /// moment later) and the status, then a barrier, so that systemd knows the new main process
    /// before this one closes its listeners, drains and exits (the exit of a process that is no
    /// longer the main one does not stop the unit). Returns why the datagram could not be sent,
    /// or null.
    /// </summary>
    private async Task<string?> HandMainPidAsync(int newPid, int next)
    {
        bool main;
        lock (_lock)
        {
            main = IsMainLocked() && _notifier.IsEnabled;
            _handedMain = main; // The keep-alives stop here: this datagram carries the last.
        }

        if (!main)
        {
            return null;
        }

        var last = LastUpgrade.TookOver(next, newPid);
        string status = $"Generation {next} (pid {newPid}) serving; generation {Generation} (pid {Environment.ProcessId}) draining; last upgrade: {last}";
        string[] assignments = _notifier.WatchdogInterval is null
            ? [MainPidAssignment(newPid), SystemdConstants.Ready, SystemdConstants.Status + status]
            : [MainPidAssignment(newPid), SystemdConstants.Ready, SystemdConstants.Watchdog, SystemdConstants.Status + status];
        if (!_notifier.Notify(assignments))
        {
            lock (_lock)
            {
                _handedMain = false;
            }

            // Nobody receives any more (the supervisor was killed): nobody follows the main
            // pid, so there is nothing to hand over and nothing to roll back for.
            return _notifier.IsGone ? null : $"the notification to {SystemdConstants.NotifySocket} failed; see the log";
        }

        _lastUpgrade = last;
        bool confirmed = await Task.Factory.StartNew(() => _notifier.Barrier(BarrierTimeout), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
        Log.MainPidHanded(_logger, Environment.ProcessId, Generation, newPid, confirmed ? "confirmed" : "not confirmed");
        return null;
    }

    /// <summary>While this is a systemd service: the watchdog keep-alive (every third of
    /// <c>WATCHDOG_USEC</c>, a margin on systemd's advice of half) and status refreshes, from the
    /// main generation only. A new generation waiting for its parent's commit looks every 50 ms,
    /// and sends its first keep-alive as soon as it is the main process.</summary>
    private async Task RunServiceLoopAsync()
    {
        var watchdog = _notifier.WatchdogInterval;
        var period = watchdog is { } interval && interval / 3 < StatusRefresh ? interval / 3 : StatusRefresh;
        var waitingForCommit = TimeSpan.FromMilliseconds(50);
        long lastStatusAt = Environment.TickCount64;
        string? lastStatus = null;

        // Generation 1 is the main process from the start and reports with READY=1.
        bool wasMain = !IsInherited;
        bool awaitingCommit = IsInherited;
        try
        {
            while (true)
            {
                await Task.Delay(awaitingCommit ? waitingForCommit : period, _serviceLoopStop.Token).ConfigureAwait(false);
                bool main;
                lock (_lock)
                {
                    main = IsMainLocked() && _state != GenerationState.Stopped;
                    awaitingCommit = IsInherited && !main && !_handedMain && _state != GenerationState.Stopped;
                }

                bool becameMain = main && !wasMain;
                wasMain = main;
                if (!main)
                {
                    continue;
                }

                var assignments = new List<string>(3);
                if (becameMain && IsInherited && !_inheritance.IsParentRunning())
                {
                    // The pipe closed and the parent is gone: it committed and exited at once
                    // (nothing to drain), or it died before it handed the main pid over. The
                    // claim covers the second and changes nothing in the first (this process is
                    // the main one then). handoff run takes it from a generation it was told of
                    // once its main one is gone, and says so; systemd only with NotifyAccess=all
                    // (with main it is stopping the unit anyway).
                    Log.ClaimingMain(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);
                    lock (_lock)
                    {
                        _claimedMain = true;
                    }

                    assignments.Add(MainPidAssignment(Environment.ProcessId));
                }

                if (watchdog is not null)
                {
                    assignments.Add(SystemdConstants.Watchdog);
                }

                long now = Environment.TickCount64;
                string status = StatusText();
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

    private void OnSignal(PosixSignal signal)
    {
        string name = UpgradeSignalNames.Format(signal);
        if (!_upgradeSignals.Contains(signal))
        {
            Log.SignalIgnored(_logger, Environment.ProcessId, Generation, name, _options.UpgradeSignals);
            return;
        }

        Log.SignalReceived(_logger, Environment.ProcessId, Generation, name);
        _ = UpgradeAsync();
    }

    private static partial class Log
    {
        [LoggerMessage(65, LogLevel.Information, "Generation {Generation} (pid {Pid}) runs from its shadow copy {Copy} of {Source}; each upgrade copies {Source} anew.", EventName = "ShadowCopied")]
        public static partial void ShadowCopied(ILogger logger, int pid, int generation, string copy, string source);

        [LoggerMessage(66, LogLevel.Warning, "{Error}", EventName = "ShadowCopyIgnored")]
        public static partial void ShadowCopyIgnored(ILogger logger, string error);

        [LoggerMessage(49, LogLevel.Information, "Generation {Generation} (pid {Pid}) is shutting down: it reports unhealthy and goes on serving for {DelaySeconds} s (Handoff:ShutdownDelay), so that load balancers stop sending it connections; then it stops accepting and drains.", EventName = "ShutdownDelayed")]
        public static partial void ShutdownDelayed(ILogger logger, int pid, int generation, double delaySeconds);

        [LoggerMessage(50, LogLevel.Information, "Generation {Generation} (pid {Pid}): a second shutdown signal ends Handoff:ShutdownDelay now.", EventName = "ShutdownDelayEnded")]
        public static partial void ShutdownDelayEnded(ILogger logger, int pid, int generation);

        [LoggerMessage(48, LogLevel.Error, "Generation {Generation} (pid {Pid}): a callback registered on Upgrader.{Token} threw; the other callbacks ran and the generation goes on.", EventName = "TokenCallbackFailed")]
        public static partial void TokenCallbackFailed(ILogger logger, Exception exception, int pid, int generation, string token);

        [LoggerMessage(10, LogLevel.Information, "Generation {Generation} started as pid {Pid} (parent pid {ParentPid}, {InheritedCount} inherited listeners).", EventName = "GenerationStarted")]
        public static partial void Started(ILogger logger, int pid, int generation, int parentPid, int inheritedCount);

        // Its own id: event 10's template names a parent pid, which the first generation has not.
        [LoggerMessage(79, LogLevel.Information, "Generation {Generation} started as pid {Pid}: the first generation, no parent ({InheritedCount} inherited listeners).", EventName = "FirstGenerationStarted")]
        public static partial void FirstStarted(ILogger logger, int pid, int generation, int inheritedCount);

        [LoggerMessage(11, LogLevel.Information, "Generation {Generation} (pid {Pid}) is ready, serving on {ListenerCount} listeners.", EventName = "GenerationReady")]
        public static partial void Ready(ILogger logger, int pid, int generation, int listenerCount);

        [LoggerMessage(12, LogLevel.Information, "Generation {Generation} (pid {Pid}) received {Signal}: starting an upgrade.", EventName = "UpgradeSignal")]
        public static partial void SignalReceived(ILogger logger, int pid, int generation, string signal);

        [LoggerMessage(75, LogLevel.Information, "Generation {Generation} (pid {Pid}): upgrade asked for while {Reason}; it runs as soon as that ends (one waits at most: later requests join it).", EventName = "UpgradeQueued")]
        public static partial void UpgradeQueued(ILogger logger, int pid, int generation, string reason);

        [LoggerMessage(76, LogLevel.Information, "Generation {Generation} (pid {Pid}) starts the upgrade that was asked for while it could not begin one.", EventName = "QueuedUpgradeStarts")]
        public static partial void QueuedUpgradeStarts(ILogger logger, int pid, int generation);

        [LoggerMessage(77, LogLevel.Information, "Generation {Generation} (pid {Pid}) was superseded with an upgrade asked for meanwhile: pid {NewPid} runs it, asked {How}.", EventName = "QueuedUpgradeForwarded")]
        public static partial void QueuedUpgradeForwarded(ILogger logger, int pid, int generation, int newPid, string how);

        [LoggerMessage(78, LogLevel.Information, "Generation {Generation} (pid {Pid}): the upgrade it passed on ended: {Outcome}.", EventName = "QueuedUpgradeEnded")]
        public static partial void QueuedUpgradeEnded(ILogger logger, int pid, int generation, string outcome);

        [LoggerMessage(14, LogLevel.Warning, "Generation {Generation} (pid {Pid}) refused an upgrade: {Reason}.", EventName = "UpgradeRefused")]
        public static partial void UpgradeRefused(ILogger logger, int pid, int generation, string reason);

        [LoggerMessage(15, LogLevel.Information, "Generation {Generation} (pid {Pid}) is starting {Executable} with {ListenerCount} listeners.", EventName = "Spawning")]
        public static partial void Spawning(ILogger logger, int pid, int generation, string executable, int listenerCount);

        [LoggerMessage(16, LogLevel.Information, "Generation {Generation} (pid {Pid}) started generation {NewGeneration} as pid {NewPid}; waiting for it to report ready.", EventName = "Spawned")]
        public static partial void Spawned(ILogger logger, int pid, int generation, int newPid, int newGeneration);

        [LoggerMessage(17, LogLevel.Error, "Generation {Generation} (pid {Pid}): upgrade to pid {NewPid} failed, still serving. {Reason}", EventName = "UpgradeFailed")]
        public static partial void UpgradeFailed(ILogger logger, int pid, int generation, int newPid, string reason);

        [LoggerMessage(18, LogLevel.Information, "Generation {Generation} (pid {Pid}) is superseded: generation {NewGeneration} (pid {NewPid}) serves. Listeners closed; draining.", EventName = "Superseded")]
        public static partial void Superseded(ILogger logger, int pid, int generation, int newPid, int newGeneration);

        [LoggerMessage(19, LogLevel.Information, "Generation {Generation} (pid {Pid}): generation {NewGeneration} (pid {NewPid}) is ready. This generation stopped accepting and drains; it keeps its listeners for {WindowSeconds} s in case the new one dies.", EventName = "HandingOver")]
        public static partial void HandingOver(ILogger logger, int pid, int generation, int newPid, int newGeneration, double windowSeconds);

        [LoggerMessage(20, LogLevel.Warning, "Generation {Generation} (pid {Pid}) ignored {Signal}: it is not an upgrade signal (Handoff:UpgradeSignals is '{Configured}').", EventName = "SignalIgnored")]
        public static partial void SignalIgnored(ILogger logger, int pid, int generation, string signal, string configured);

        [LoggerMessage(21, LogLevel.Warning, "Generation {Generation} (pid {Pid}) ignored {Signal} received while it was starting.", EventName = "EarlySignalIgnored")]
        public static partial void EarlySignalIgnored(ILogger logger, int pid, int generation, string signal);

        [LoggerMessage(22, LogLevel.Warning, "Generation {Generation} (pid {Pid}): the generation that started it (pid {ParentPid}) has exited before it took over; it serves on the sockets it was handed and writes the pid file itself.", EventName = "Orphaned")]
        public static partial void Orphaned(ILogger logger, int pid, int generation, int parentPid);

        [LoggerMessage(83, LogLevel.Information, "Generation {Generation} (pid {Pid}) keeps accepting on {Address} until the handover commits: generation {NewGeneration} does not listen there (its configuration dropped it). Then it closes it, and connections to it are refused.", EventName = "ServingReleased")]
        public static partial void ServingReleased(ILogger logger, int pid, int generation, string address, int newGeneration);

        [LoggerMessage(81, LogLevel.Warning, "Generation {Generation} (pid {Pid}) rolled back after it had told the service manager that pid {NewPid} is the main process; it claims the main pid back (MAINPID=).", EventName = "MainPidTakenBack")]
        public static partial void MainPidTakenBack(ILogger logger, int pid, int generation, int newPid);

        [LoggerMessage(80, LogLevel.Debug, "Generation {Generation} (pid {Pid}) is the main generation and its parent (pid {ParentPid}) has exited; it claims the main pid (MAINPID=) in case the parent died before it handed it over.", EventName = "ClaimingMain")]
        public static partial void ClaimingMain(ILogger logger, int pid, int generation, int parentPid);

        [LoggerMessage(23, LogLevel.Warning, "Generation {Generation} (pid {Pid}): the previous generation (pid {ParentPid}) is gone; this generation writes the pid file itself.", EventName = "ParentGone")]
        public static partial void ParentGone(ILogger logger, int pid, int generation, int parentPid);

        [LoggerMessage(24, LogLevel.Error, "Generation {Generation} (pid {Pid}) could not {Action} the pid file {PidFile} (Handoff:PidFile): {Error}. Nothing else changes.", EventName = "PidFileFailed")]
        public static partial void PidFileFailed(ILogger logger, int pid, int generation, string pidFile, string action, string error);

        [LoggerMessage(25, LogLevel.Information, "Generation {Generation} (pid {Pid}) is stopping (it was {State}).", EventName = "StopRequested")]
        public static partial void StopRequested(ILogger logger, int pid, int generation, GenerationState state);

        [LoggerMessage(26, LogLevel.Warning, "Generation {Generation} (pid {Pid}) does not report ready: it is {State}.", EventName = "NotReporting")]
        public static partial void NotReporting(ILogger logger, int pid, int generation, GenerationState state);

        [LoggerMessage(28, LogLevel.Warning, "Generation {Generation} (pid {Pid}): the previous generation (pid {ParentPid}) did not take the ready report (it gave up waiting) and keeps serving.", EventName = "ParentGaveUp")]
        public static partial void ParentGaveUp(ILogger logger, int pid, int generation, int parentPid);

        [LoggerMessage(64, LogLevel.Warning, "Generation {Generation} (pid {Pid}): upgrade to pid {NewPid} failed; this generation is stopping. {Reason}", EventName = "UpgradeFailedStopping")]
        public static partial void UpgradeFailedStopping(ILogger logger, int pid, int generation, int newPid, string reason);

        [LoggerMessage(29, LogLevel.Information, "Generation {Generation} (pid {Pid}) told systemd that pid {NewPid} is the service's main process ({Outcome}).", EventName = "MainPidHanded")]
        public static partial void MainPidHanded(ILogger logger, int pid, int generation, int newPid, string outcome);

        [LoggerMessage(62, LogLevel.Information, "Generation {Generation} (pid {Pid}) runs under a service manager (systemd, or handoff run): notifying {Socket}, watchdog every {WatchdogSeconds} s (0: none), {ActivatedCount} activated sockets.", EventName = "UnderSystemd")]
        public static partial void UnderSystemd(ILogger logger, int pid, int generation, string socket, double watchdogSeconds, int activatedCount);

        [LoggerMessage(63, LogLevel.Warning, "{Warning}", EventName = "SystemdWarning")]
        public static partial void SystemdWarning(ILogger logger, string warning);

        [LoggerMessage(27, LogLevel.Information, "Generation {Generation} (pid {Pid}): generation {NewGeneration} (pid {NewPid}), which it started, exited ({How}).", EventName = "SuccessorExited")]
        public static partial void SuccessorExited(ILogger logger, int pid, int generation, int newPid, int newGeneration, string how);
    }
}
