using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
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
/// Every change of state is decided here, under one lock, through one function
/// (<c>MoveLocked</c>) that accepts only the transitions listed in <c>Transitions</c>, as
/// tableflip's single loop owns its upgrader: a shutdown during an upgrade stops the new
/// generation before this one closes anything; once the new generation's "ready" has been read
/// the upgrade stands, whatever happens to the pid file; a generation that began stopping never
/// reports ready; only one upgrade runs at a time. The work with the new process is
/// <see cref="UpgradeAttempt"/>'s, what systemd is told <see cref="ServiceReporter"/>'s.
/// </remarks>
public sealed partial class Upgrader : IDisposable, IMainGeneration, IControlled
{
    /// <summary>Every legal change of <see cref="State"/>; any other is a bug and throws.</summary>
    internal static readonly IReadOnlyList<(GenerationState From, GenerationState To)> Transitions =
    [
        (GenerationState.Starting, GenerationState.Ready),          // ReadyAsync
        (GenerationState.Starting, GenerationState.Stopping),       // StopAsync before ready
        (GenerationState.Ready, GenerationState.Upgrading),         // UpgradeAsync
        (GenerationState.Ready, GenerationState.Stopping),          // StopAsync
        (GenerationState.Upgrading, GenerationState.HandingOver),   // the new generation is ready
        (GenerationState.Upgrading, GenerationState.Ready),         // it failed, hung or could not start
        (GenerationState.Upgrading, GenerationState.Stopping),      // StopAsync: it is stopped too
        (GenerationState.HandingOver, GenerationState.Superseded),  // the rollback window passed: commit
        (GenerationState.HandingOver, GenerationState.Ready),       // it died or withdrew: roll back
        (GenerationState.Superseded, GenerationState.Stopped),      // listeners closed after a handover
        (GenerationState.Stopping, GenerationState.Stopped),        // listeners closed after a stop
    ];

    // The state and the facts decided with it; written only under _lock.
    // After a commit with Handoff:MoveConnections, the channel to the new generation, until the
    // drain takes it (TakeMoveChannel); -1 otherwise.
    private int _moveChannel = -1;

    private readonly Lock _lock = new();
    private GenerationState _state = GenerationState.Starting;
    private MainRole _main;
    private bool _reportedReady;
    private bool _stopRequested;
    private UpgradeResult? _supersededBy;
    private CancellationTokenSource _draining = new();
    private readonly Queue<(GenerationState State, CancellationTokenSource? Drain)> _events = new();
    private readonly Lock _raising = new();

    // An upgrade asked for while this generation could not begin one (its own upgrade runs, or
    // its parent can still roll back): at most one waits, later requests join it, and it runs
    // as soon as that ends, here or, if this generation was superseded meanwhile, in its
    // successor (_forward). Nothing asked for is dropped.
    private TaskCompletionSource<UpgradeResult>? _queued;
    private Task? _forward;
    private Task<UpgradeResult>? _upgrade;

    // From an upgrade's start to its very end: a rollback makes the generation Ready a moment
    // before its upgrade has finished (the failed generation stopped, the outcome told), and an
    // upgrade asked for meanwhile waits for that end rather than race it.
    private bool _upgradeRunning;
    private Task? _stop;
    private long _upgradeStartedAt;

    private readonly HandoffOptions _options;
    private readonly Inheritance _inheritance;
    private readonly StartCommand _command;
    private readonly IGenerationLauncher _launcher;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _superseded = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _shutdownDelay = new();
    private readonly GenerationProcess? _self = GenerationProcess.Current(Environment.ProcessId);
    private readonly IReadOnlyList<PosixSignal> _upgradeSignals;
    private readonly bool _routesSignals;
    private readonly ServiceReporter _service;
    private readonly PidFileOwner _pidFile;
    private readonly StatusReport _status;
    private readonly string? _controlSocket;
    private readonly ControlServer? _control;
    private readonly ShadowCopy? _shadow;
    private readonly TimeProvider _time;
    private readonly DateTimeOffset _startedAt;
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

    // For testing: the OS behind a seam, and the clock (the rollback window, the shutdown
    // delay, the waits for a parent's commit). Does not handle signals.
    internal Upgrader(HandoffOptions options, Inheritance inheritance, StartCommand command, IGenerationLauncher launcher, ILoggerFactory loggerFactory, SystemdEnvironment? systemd = null, string? shadowCopy = null, HandoffMetrics? metrics = null, TimeProvider? time = null)
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
        _time = time ?? TimeProvider.System;
        _startedAt = _time.GetUtcNow();
        LoggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("Handoff.Upgrader");
        _main = IsInherited ? MainRole.Successor : MainRole.Main;
        _status = new StatusReport(Generation, inheritance.ParentPid, _startedAt, _time);
        _pidFile = new PidFileOwner(options.PidFile, _logger, Generation);
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

        _service = new ServiceReporter(systemd ?? SystemdEnvironment.None, loggerFactory.CreateLogger("Handoff.Systemd"), Generation, IsInherited, inheritance.Listeners.Count(l => l.IsActivated));
        if (launcher is GenerationLauncher real)
        {
            real.ServiceManagerGone = () => _service.IsGone;
        }

        _service.Start(this);
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
            _control = new ControlServer(this, ListenControl(_controlSocket), loggerFactory.CreateLogger("Handoff.Control"));
            _control.Start();
        }
    }

    /// <summary>Whether this process speaks for the service to its manager (systemd's main
    /// process), the second half of the generation's state.</summary>
    private enum MainRole
    {
        /// <summary>A new generation that has not reported ready to a live parent (or whose
        /// parent gave up on it).</summary>
        Successor,

        /// <summary>Reported ready: main once the parent commits (closes the ready pipe), having
        /// sent the new main pid first.</summary>
        Reported,

        /// <summary>The first generation, or one that claimed the main pid (its parent died).</summary>
        Main,

        /// <summary>Named its new generation as the main process.</summary>
        Handed,
    }

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

    /// <summary>The result of the upgrade that superseded this generation, or null.</summary>
    public UpgradeResult? SupersededBy
    {
        get
        {
            lock (_lock)
            {
                return _supersededBy;
            }
        }
    }

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
    /// new state, in the order the changes happened. The ASP.NET Core integration drains on it.</summary>
    internal event Action<GenerationState>? StateChanged;

    internal HandoffOptions Options => _options;

    /// <summary>The path of the control socket, or null for none.</summary>
    internal string? ControlSocketPath => _controlSocket;

    /// <summary>How many connections this generation has open, for the status line systemd
    /// shows; set by the server integration (null: not known).</summary>
    internal Func<int>? OpenConnections { get; set; }

    /// <summary>kill(2), behind a seam: a test's new generations have made-up pids.</summary>
    internal Func<int, int, int> SendSignal { get; set; } = Interop.Libc.Kill;

    /// <summary>Handoff's instruments; the drains report to them too.</summary>
    internal HandoffMetrics Metrics { get; }

    // How often a queued upgrade looks whether the parent committed; the rollback window it
    // waits for is seconds long.
    internal TimeSpan ParentCommitPoll { get; set; } = TimeSpan.FromMilliseconds(50);

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
            // has started, so the accept queue is never without a reader. Written even when the
            // parent is known to be gone: the write fails (EPIPE) and the pipe is closed, rather
            // than held open for the life of the process.
            Listeners.Gate.Open();
            var (startedAt, adoptedAt) = _inheritance.Moments;
            parentTold = _inheritance.ReadyPipe?.ReportReady(released, startedAt == 0 ? null : ChildMoments.Now(startedAt, adoptedAt), _inheritance.AcceptsMoves, _inheritance.Resumes) == true && _inheritance.ParentAlive;
            _reportedReady = parentTold;
            if (parentTold)
            {
                _main = MainRole.Reported;
            }

            _pidFile.Owns = true;
            MoveLocked(GenerationState.Ready);
        }

        Log.Ready(_logger, Environment.ProcessId, Generation, Listeners.Listeners.Count);
        RaiseEvents();
        AnnounceReady(parentTold);
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
        string? waitsFor;
        UpgradeResult? refusal;
        bool answersSystemd;
        bool watchParent = false;
        TaskCompletionSource<UpgradeResult>? joining = null;
        Task<UpgradeResult> upgrade;
        lock (_lock)
        {
            // Only the main process may speak for the service (a new generation whose parent
            // can still roll back is not, and would be refused by systemd).
            answersSystemd = _state == GenerationState.Ready && IsMainLocked();
            bool parentCanRollBack = _state == GenerationState.Ready && _inheritance.ReadyPipe is { } pipe && !pipe.IsParentCommitted();
            waitsFor = _state switch
            {
                GenerationState.Upgrading => "an upgrade is already in progress",
                GenerationState.HandingOver => "this generation is handing over to a new one",
                GenerationState.Ready when parentCanRollBack =>
                    $"the previous generation (pid {_inheritance.ParentPid}) can still roll back to itself (Handoff:RollbackWindow)",
                GenerationState.Ready when _upgradeRunning => "the last upgrade is still ending (its new generation is being stopped)",
                _ => null,
            };
            refusal = waitsFor is not null ? null : _state switch
            {
                GenerationState.Starting => UpgradeResult.Refusal(next, UpgradeFailureReason.NotReady, "this generation is not ready yet"),
                GenerationState.Superseded => UpgradeResult.Refusal(next, UpgradeFailureReason.Superseded, $"this generation was already superseded by pid {_supersededBy?.NewPid}"),
                GenerationState.Stopping or GenerationState.Stopped => UpgradeResult.Refusal(next, UpgradeFailureReason.ShuttingDown, "this generation is shutting down"),
                _ => DrainingBoundRefusal() is { } tooMany ? UpgradeResult.Refusal(next, UpgradeFailureReason.TooManyDraining, tooMany) : null,
            };
            if (waitsFor is not null)
            {
                // Only a parent's commit needs watching: the end of this generation's own upgrade
                // runs the queue itself.
                watchParent = _queued is null && parentCanRollBack;
                _queued ??= new TaskCompletionSource<UpgradeResult>(TaskCreationOptions.RunContinuationsAsynchronously);
                upgrade = _queued.Task;
            }
            else if (refusal is null)
            {
                MoveLocked(GenerationState.Upgrading);
                _upgradeRunning = true;
                _upgradeStartedAt = _time.GetTimestamp();

                // Before the upgrade's task exists: a spawn that fails at once ends the reload
                // with READY=1 from that task, which must not reach systemd first.
                NotifyService(SystemdConstants.Reloading, ServiceReporter.Monotonic());
                upgrade = _upgrade = Task.Run(() => RunUpgradeGuardedAsync(next));

                // One still waiting (the moment it waited for has just ended, and its own start
                // had not come yet) is answered by this upgrade, which starts after it was asked
                // for: a second would upgrade again to the same build.
                joining = _queued;
                _queued = null;
            }
            else
            {
                upgrade = Task.FromResult(refusal);
            }
        }

        if (joining is not null)
        {
            Log.QueuedUpgradeStarts(_logger, Environment.ProcessId, Generation);
            PassOn(upgrade, joining);
        }

        if (waitsFor is not null)
        {
            Log.UpgradeQueued(_logger, Environment.ProcessId, Generation, waitsFor);
            if (watchParent)
            {
                _ = Task.Run(RunQueuedAfterParentCommitsAsync);
            }
        }
        else if (refusal is not null)
        {
            AnnounceRefusal(refusal, answersSystemd);
        }
        else
        {
            RaiseEvents();
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
            if (_stop is not null)
            {
                return _stop;
            }

            // The state changes here, on the caller's thread (the signal's), not in the task:
            // under load the thread pool may take a moment to run it, and a health check must
            // say "shutting down" from the signal on.
            _stopRequested = true;
            var was = _state;
            bool main = IsMainLocked(); // Before the withdrawal below closes the ready pipe.
            if (was is GenerationState.Starting or GenerationState.Ready or GenerationState.Upgrading)
            {
                // With a shutdown delay the generation still serves: the drain (and its token)
                // begins when the delay ends.
                MoveLocked(GenerationState.Stopping, drain: !DelaysShutdown(was));
                if (was == GenerationState.Starting)
                {
                    _inheritance.ReadyPipe?.ReportFailed("the new generation was stopped before it became ready");
                }
                else
                {
                    if (!main && _main == MainRole.Reported && _service.IsEnabled)
                    {
                        // The previous generation may have told systemd this pid is the main
                        // process an instant ago, before it saw this withdrawal: give it back,
                        // first, so that the exit of this process does not count as the
                        // service's. Refused (harmlessly) when systemd had not made it main.
                        _service.Send(ServiceReporter.MainPid(_inheritance.ParentPid));
                    }

                    // If the previous generation can still roll back, it accepts again.
                    _inheritance.ReadyPipe?.ReportStopping();
                }

                // A queued upgrade is refused now; one waiting for the handover is passed on
                // (or refused) when the handover ends.
                _ = Task.Run(RunQueued);
            }

            return _stop = Task.Run(() => StopCoreAsync(was, main));
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

        _service.Dispose();
        _superseded.Dispose();
        Metrics.Dispose();
        int moves = TakeMoveChannel();
        if (moves >= 0)
        {
            Interop.Libc.Close(moves);
        }
    }

    /// <summary>After a commit with <see cref="HandoffOptions.MoveConnections"/>, when the new
    /// generation adopts moved connections: the channel to it (the caller owns it from now on and
    /// closes it when it has moved all it will); -1 otherwise.</summary>
    internal int TakeMoveChannel() => Interlocked.Exchange(ref _moveChannel, -1);

    /// <summary>After a commit: the WebSocket endpoints the new generation said it resumes
    /// (<see cref="MoveChannel.ResumesPrefix"/>).</summary>
    internal IReadOnlySet<string> MoveResumes { get; private set; } = new HashSet<string>();

    /// <summary>Where this generation's parts log (a raw server's connection drain).</summary>
    internal ILoggerFactory LoggerFactory { get; }

    /// <summary>What this generation inherited from the previous one.</summary>
    internal Inheritance Inheritance => _inheritance;

    /// <summary>Throws unless <paramref name="from"/> to <paramref name="to"/> is in
    /// <see cref="Transitions"/>.</summary>
    internal static void CheckTransition(GenerationState from, GenerationState to)
    {
        if (!Transitions.Contains((from, to)))
        {
            throw new InvalidOperationException($"Handoff bug: a generation cannot go from {from} to {to}; the legal transitions are listed in Upgrader.Transitions.");
        }
    }

    /// <summary>The one place <see cref="State"/> changes. Under the lock: the event goes into
    /// the queue <see cref="RaiseEvents"/> empties in order; entering a draining state marks the
    /// <see cref="Draining"/> token to fire after it, returning to Ready gives a fresh one.</summary>
    private void MoveLocked(GenerationState to, bool drain = true)
    {
        CheckTransition(_state, to);
        _state = to;
        CancellationTokenSource? fire = null;
        if (drain && to is GenerationState.HandingOver or GenerationState.Superseded or GenerationState.Stopping)
        {
            fire = _draining;
        }
        else if (to == GenerationState.Ready && _draining.IsCancellationRequested)
        {
            // The cancelled source is left to the collector: a caller may have just read its token.
            _draining = new CancellationTokenSource();
        }

        _events.Enqueue((to, fire));
    }

    // Every state change goes out through here, in order, one at a time: first the event, then
    // the Draining token. The event begins the connections' drain (HandoffHostedService): an
    // HTTP/2 connection then has its first GOAWAY waiting for the next stream's end, so a long
    // response that the application ends on Draining (a gRPC stream, server-sent events)
    // carries it, and the client's next request goes to a new connection, not back here.
    private void RaiseEvents()
    {
        lock (_raising)
        {
            while (true)
            {
                (GenerationState State, CancellationTokenSource? Drain) next;
                lock (_lock)
                {
                    if (!_events.TryDequeue(out next))
                    {
                        return;
                    }
                }

                try
                {
                    StateChanged?.Invoke(next.State);
                }
#pragma warning disable CA1031 // A handler that throws must not stop the transition it reports.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    // Thrown from here it would escape UpgradeAsync (the signal's thread) or fault
                    // a stop before the listeners close.
                    Log.StateHandlerFailed(_logger, e, Environment.ProcessId, Generation, next.State);
                }
                finally
                {
                    if (next.Drain is not null)
                    {
                        FireToken(next.Drain, nameof(Draining));
                    }
                }
            }
        }
    }

    /// <summary>Whether this process speaks for the service now (as far as it can know).</summary>
    private bool IsMainLocked() => _main switch
    {
        MainRole.Main => true,
        MainRole.Reported => _inheritance.ReadyPipe?.IsParentCommitted() == true,
        _ => false,
    };
}
