using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff;

/// <summary>
/// One generation of a server and its part in upgrades: it owns the listeners, starts the
/// next generation on a signal or on <see cref="UpgradeAsync"/>, hands it the listeners, waits
/// for it to report ready, and then tells the server to drain (<see cref="Superseded"/>).
/// In a new generation it also adopts the inherited listeners and reports ready to the old one.
/// </summary>
/// <remarks>
/// The life of a generation: created at start-up (adopting inherited listeners), servers call
/// <see cref="ListenerRegistry.Listen"/>, the host starts, the application calls
/// <see cref="ReadyAsync"/>; later an upgrade succeeds and <see cref="Superseded"/> fires, or a
/// shutdown comes. Only one upgrade runs at a time; a trigger during one is logged and ignored.
/// </remarks>
public sealed partial class Upgrader : IDisposable
{
    private readonly HandoffOptions _options;
    private readonly Inheritance _inheritance;
    private readonly StartCommand _command;
    private readonly IGenerationLauncher _launcher;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _superseded = new();
    private readonly List<PosixSignalRegistration> _signalRegistrations = [];
    private int _upgrading;
    private volatile bool _ready;
    private volatile bool _stopping;
    private bool _ownsPidFile;

    /// <summary>
    /// Creates this process's generation: adopts what a previous generation handed over (if
    /// this process is a new generation) and captures how the process was started.
    /// </summary>
    /// <exception cref="HandoffProtocolException">The handover is malformed, forged or stale.</exception>
    /// <exception cref="ArgumentException">An option is invalid; the message names it.</exception>
    public Upgrader(HandoffOptions options, ILoggerFactory? loggerFactory = null)
        : this(
            options,
            Inheritance.Load(Environment.GetEnvironmentVariable(HandoverEnvironment.VariableName), Interop.Libc.GetParentPid()),
            StartCommand.Capture(),
            new GenerationLauncher(),
            loggerFactory ?? NullLoggerFactory.Instance)
    {
    }

    // For testing: the OS behind a seam.
    internal Upgrader(HandoffOptions options, Inheritance inheritance, StartCommand command, IGenerationLauncher launcher, ILoggerFactory loggerFactory)
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
        Listeners = new ListenerRegistry(inheritance.Listeners, loggerFactory.CreateLogger("Handoff.Listeners"));
        Log.Started(_logger, Environment.ProcessId, Generation, inheritance.ParentPid, inheritance.Listeners.Count);
    }

    /// <summary>This process's generation number: 1 for the first start, one more for each
    /// upgrade since.</summary>
    public int Generation => _inheritance.Generation;

    /// <summary>True when this process was started by an upgrade of a previous generation.</summary>
    public bool IsInherited => _inheritance.ParentPid != 0;

    /// <summary>The listening sockets of this generation.</summary>
    public ListenerRegistry Listeners { get; }

    /// <summary>True once <see cref="ReadyAsync"/> has been called.</summary>
    public bool IsReady => _ready;

    /// <summary>Cancelled when a newer generation has reported ready: this one must stop
    /// accepting, finish its requests and exit.</summary>
    public CancellationToken Superseded => _superseded.Token;

    /// <summary>The result of the upgrade that superseded this generation, or null.</summary>
    public UpgradeResult? SupersededBy { get; private set; }

    /// <summary>Starts handling the configured upgrade signals (see
    /// <see cref="HandoffOptions.UpgradeSignals"/>). Call it as early as possible: an
    /// unhandled SIGUSR2 or SIGHUP terminates the process.</summary>
    public void ListenForSignals()
    {
        if (!UpgradeSignalNames.TryParse(_options.UpgradeSignals, out var signals, out _))
        {
            return; // Unreachable: the constructor validated the options.
        }

        foreach (var signal in signals)
        {
            _signalRegistrations.Add(PosixSignalRegistration.Create(signal, OnUpgradeSignal));
        }
    }

    /// <summary>
    /// Marks this generation ready: it accepts connections on all its listeners and has
    /// finished warming up. Closes inherited listeners that nobody claimed, reports ready to the
    /// previous generation (which then drains) and writes the pid file.
    /// </summary>
    public async ValueTask ReadyAsync()
    {
        if (_ready)
        {
            return;
        }

        await Listeners.CloseUnclaimedAsync().ConfigureAwait(false);
        _ready = true;
        if (_inheritance.ReadyPipe is { } pipe)
        {
            // The previous generation writes the pid file once it has accepted this report.
            pipe.ReportReady();
            _ownsPidFile = _options.PidFile is not null;
        }
        else if (_options.PidFile is { } pidFile)
        {
            PidFile.Write(pidFile, Environment.ProcessId);
            _ownsPidFile = true;
        }

        Log.Ready(_logger, Environment.ProcessId, Generation, Listeners.Listeners.Count);
    }

    /// <summary>Tells the previous generation that this one failed to start (e.g. its warm-up
    /// threw), so the upgrade fails with this reason; it keeps serving. No-op in a first
    /// generation or after <see cref="ReadyAsync"/>.</summary>
    public void ReportStartFailed(string reason)
    {
        if (!_ready && _inheritance.ReadyPipe is { } pipe)
        {
            pipe.ReportFailed(reason);
        }
    }

    /// <summary>
    /// Starts a new generation from the executable and arguments this process was started
    /// with, hands it every listener, and waits until it reports ready. On success the new
    /// generation serves and <see cref="Superseded"/> fires; on failure the new generation is
    /// stopped and nothing else changes.
    /// </summary>
    /// <returns>The outcome, with the new pid or the reason for failure. Never throws for a
    /// failed upgrade.</returns>
    public async Task<UpgradeResult> UpgradeAsync()
    {
        int next = Generation + 1;
        string? refusal = _stopping ? "this generation is shutting down"
            : !_ready ? "this generation is not ready yet"
            : SupersededBy is { } done ? $"this generation was already superseded by pid {done.NewPid}"
            : null;
        if (refusal is not null)
        {
            Log.UpgradeRefused(_logger, Environment.ProcessId, Generation, refusal);
            return UpgradeResult.Failure(0, next, refusal);
        }

        if (Interlocked.CompareExchange(ref _upgrading, 1, 0) != 0)
        {
            Log.UpgradeIgnored(_logger, Environment.ProcessId, Generation);
            return UpgradeResult.Failure(0, next, "an upgrade is already in progress");
        }

        bool succeeded = false;
        try
        {
            var result = await RunUpgradeAsync(next).ConfigureAwait(false);
            succeeded = result.Succeeded;
            return result;
        }
        finally
        {
            if (!succeeded)
            {
                Volatile.Write(ref _upgrading, 0);
            }
        }
    }

    /// <summary>Marks the start of a final shutdown: upgrades are refused from now on.</summary>
    public void BeginShutdown() => _stopping = true;

    /// <summary>Removes the pid file if it still names this process. Call it last, at final
    /// shutdown.</summary>
    public void RemovePidFile()
    {
        if (_ownsPidFile && _options.PidFile is { } pidFile && SupersededBy is null)
        {
            PidFile.RemoveIfOwner(pidFile, Environment.ProcessId);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var registration in _signalRegistrations)
        {
            registration.Dispose();
        }

        _signalRegistrations.Clear();
        _superseded.Dispose();
    }

    private async Task<UpgradeResult> RunUpgradeAsync(int next)
    {
        int pid = Environment.ProcessId;
        IStartedGeneration child;
        try
        {
            string executable = _command.ResolveExecutable();
            var listeners = Listeners.Listeners;
            var handover = HandoverEnvironment.ForChild(pid, next, listeners.Count);
            Log.Spawning(_logger, pid, Generation, executable, listeners.Count);
            child = _launcher.Start(executable, _command, listeners, handover);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or UnauthorizedAccessException)
        {
            string reason = $"cannot start the new generation: {e.Message}";
            Log.UpgradeFailed(_logger, pid, Generation, 0, reason);
            return UpgradeResult.Failure(0, next, reason);
        }

        Log.Spawned(_logger, pid, Generation, child.Pid, next);
        string? failure = await child.WaitReadyAsync(_options.UpgradeTimeout).ConfigureAwait(false);
        if (failure is not null)
        {
            string? ended = await child.TerminateAsync(_options.TerminateTimeout).ConfigureAwait(false);
            string reason = $"new generation {next} (pid {child.Pid}) failed: {failure}" + (ended is null ? "" : $"; it was stopped ({ended})");
            Log.UpgradeFailed(_logger, pid, Generation, child.Pid, reason);
            return UpgradeResult.Failure(child.Pid, next, reason);
        }

        if (_stopping)
        {
            // A SIGTERM arrived while the new generation started: the service is being
            // stopped, so the new generation must not outlive this one.
            string? stopped = await child.TerminateAsync(_options.TerminateTimeout).ConfigureAwait(false);
            string reason = $"new generation {next} (pid {child.Pid}) became ready after this generation began shutting down; it was stopped ({stopped ?? "already exited"})";
            Log.UpgradeFailed(_logger, pid, Generation, child.Pid, reason);
            return UpgradeResult.Failure(child.Pid, next, reason);
        }

        child.ReapWhenExited();
        if (_options.PidFile is { } pidFile)
        {
            PidFile.Write(pidFile, child.Pid);
        }

        var result = UpgradeResult.Success(child.Pid, next);
        SupersededBy = result;
        Log.Superseded(_logger, pid, Generation, child.Pid, next);
        _superseded.Cancel();
        return result;
    }

    private void OnUpgradeSignal(PosixSignalContext context)
    {
        // Without Cancel the default action (terminate) would run after this handler.
        context.Cancel = true;
        Log.SignalReceived(_logger, Environment.ProcessId, Generation, UpgradeSignalNames.Format(context.Signal));
        _ = Task.Run(UpgradeAsync);
    }

    private static partial class Log
    {
        [LoggerMessage(10, LogLevel.Information, "Generation {Generation} started as pid {Pid} (parent pid {ParentPid}, {InheritedCount} inherited listeners).", EventName = "GenerationStarted")]
        public static partial void Started(ILogger logger, int pid, int generation, int parentPid, int inheritedCount);

        [LoggerMessage(11, LogLevel.Information, "Generation {Generation} (pid {Pid}) is ready, serving on {ListenerCount} listeners.", EventName = "GenerationReady")]
        public static partial void Ready(ILogger logger, int pid, int generation, int listenerCount);

        [LoggerMessage(12, LogLevel.Information, "Generation {Generation} (pid {Pid}) received {Signal}: starting an upgrade.", EventName = "UpgradeSignal")]
        public static partial void SignalReceived(ILogger logger, int pid, int generation, string signal);

        [LoggerMessage(13, LogLevel.Warning, "Generation {Generation} (pid {Pid}) ignored an upgrade trigger: an upgrade is already in progress.", EventName = "UpgradeIgnored")]
        public static partial void UpgradeIgnored(ILogger logger, int pid, int generation);

        [LoggerMessage(14, LogLevel.Warning, "Generation {Generation} (pid {Pid}) refused an upgrade: {Reason}.", EventName = "UpgradeRefused")]
        public static partial void UpgradeRefused(ILogger logger, int pid, int generation, string reason);

        [LoggerMessage(15, LogLevel.Information, "Generation {Generation} (pid {Pid}) is starting {Executable} with {ListenerCount} listeners.", EventName = "Spawning")]
        public static partial void Spawning(ILogger logger, int pid, int generation, string executable, int listenerCount);

        [LoggerMessage(16, LogLevel.Information, "Generation {Generation} (pid {Pid}) started generation {NewGeneration} as pid {NewPid}; waiting for it to report ready.", EventName = "Spawned")]
        public static partial void Spawned(ILogger logger, int pid, int generation, int newPid, int newGeneration);

        [LoggerMessage(17, LogLevel.Error, "Generation {Generation} (pid {Pid}): upgrade to pid {NewPid} failed, still serving. {Reason}", EventName = "UpgradeFailed")]
        public static partial void UpgradeFailed(ILogger logger, int pid, int generation, int newPid, string reason);

        [LoggerMessage(18, LogLevel.Information, "Generation {Generation} (pid {Pid}) is superseded: generation {NewGeneration} (pid {NewPid}) is ready. Draining.", EventName = "Superseded")]
        public static partial void Superseded(ILogger logger, int pid, int generation, int newPid, int newGeneration);
    }
}
