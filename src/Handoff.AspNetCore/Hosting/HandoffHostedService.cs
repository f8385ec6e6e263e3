using System.Runtime.InteropServices;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Handoff.AspNetCore;

/// <summary>
/// Ties a generation's life to the host's. The <see cref="Upgrader"/> owns the state; this
/// service reports to it (ready once the host has started and the warm-up succeeded, stopping
/// the moment the host begins to stop) and acts on its changes: it drains while handing over,
/// stops draining if the new generation died, and stops the host once superseded.
/// </summary>
internal sealed partial class HandoffHostedService : IHostedLifecycleService, IDisposable
{
    private readonly Upgrader _upgrader;
    private readonly ConnectionDrainer _drainer;
    private readonly ConnectionAdoption? _adoption;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly IServiceProvider _services;
    private readonly HandoffWarmUp[] _warmUps;
    private readonly HandoffOptions _options;
    private readonly HandoffConfigurationWarnings _warnings;
    private readonly ILogger _logger;
    private CancellationTokenRegistration _stoppingRegistration;
    private PosixSignalRegistration? _hangUp;
    private PosixSignalRegistration[] _shutdownSignals = [];
    private int _shutdownSignalCount;

    public HandoffHostedService(Upgrader upgrader, ConnectionDrainer drainer, IHostApplicationLifetime lifetime, IServiceProvider services, IEnumerable<HandoffWarmUp> warmUps, IOptions<HandoffOptions> options, HandoffConfigurationWarnings warnings, ILogger<HandoffHostedService> logger, ConnectionAdoption? adoption = null)
    {
        _adoption = adoption;
        _upgrader = upgrader;
        _drainer = drainer;
        _lifetime = lifetime;
        _services = services;
        _warmUps = [.. warmUps];
        _options = options.Value;
        _warnings = warnings;
        _logger = logger;
    }

    public Task StartingAsync(CancellationToken cancellationToken)
    {
        foreach (string warning in _warnings.Messages)
        {
            Log.ConfigurationWarning(_logger, warning);
        }

        _upgrader.StateChanged += OnStateChanged;

        // The earliest moment a stop is known (SIGTERM may come before the host has even
        // started): from now on this generation never reports ready and starts no upgrade.
        _stoppingRegistration = _lifetime.ApplicationStopping.Register(() => _ = _upgrader.StopAsync());
        _lifetime.ApplicationStarted.Register(() => _ = BecomeReadyAsync());

        // A hang-up (the terminal of a server started by hand closed) ends the server as SIGTERM
        // does, with a drain, instead of by the default action, which would abort requests and
        // leave the pid file and socket files behind. Unless SIGHUP is an upgrade signal.
        if (UpgradeSignalNames.TryParse(_options.UpgradeSignals, out var upgradeSignals, out _) && !upgradeSignals.Contains(PosixSignal.SIGHUP))
        {
            _hangUp = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true;
                Log.HangUp(_logger, Environment.ProcessId, _upgrader.Generation);
                CountShutdownSignal();
                _lifetime.StopApplication();
            });
        }

        // The host's lifetime stops on the first SIGTERM, SIGINT or SIGQUIT (and SIGHUP, above);
        // a second one, during Handoff:ShutdownDelay, means "now". Counted here, alongside the
        // host's own handler, which cancels the default action.
        if (_options.ShutdownDelay > TimeSpan.Zero)
        {
            _shutdownSignals = [.. new[] { PosixSignal.SIGTERM, PosixSignal.SIGINT, PosixSignal.SIGQUIT }.Select(signal => PosixSignalRegistration.Create(signal, _ => CountShutdownSignal()))];
        }

        return Task.CompletedTask;
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private void CountShutdownSignal()
    {
        if (Interlocked.Increment(ref _shutdownSignalCount) > 1)
        {
            _upgrader.EndShutdownDelay();
        }
    }

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        await _upgrader.StopAsync().ConfigureAwait(false);
        Log.Stopping(_logger, Environment.ProcessId, _upgrader.Generation, _upgrader.SupersededBy is null ? "shutdown requested" : "a newer generation took over");
        try
        {
            // A drain that began with the handover goes on; one that begins here is a stop.
            await _drainer.DrainAsync(_options.DrainTimeout, _options.DrainIdleTimeout, cancellationToken, restart: _upgrader.SupersededBy is not null).ConfigureAwait(false);
        }
        finally
        {
            // Kestrel stops next (hosted services stop before the server).
            _drainer.ServerStopping = true;

            // Every connection has moved or closed: the new generation stops reading. Unless the
            // previous generation still moves connections here (this upgrade came in the middle
            // of its move): they go on to the new generation as they come, until it is done.
            if (_drainer.Moves is { } moves)
            {
                if (_adoption?.Ended is { IsCompleted: false } previous)
                {
                    Log.WaitingForPreviousMove(_logger, Environment.ProcessId, _upgrader.Generation);
                    await previous.WaitAsync(_options.DrainTimeout, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                }

                moves.Dispose();
                await moves.Completion.ConfigureAwait(false);
                string there = moves.Confirmed is { } confirmed
                    ? $"it took {confirmed.Taken} and closed {confirmed.Closed}"
                    : moves.Moved == 0 ? "none was sent" : "it did not confirm what it took";
                Log.Moved(_logger, Environment.ProcessId, _upgrader.Generation, moves.Moved, moves.Asked, there, moves.NotMoved, moves.Ineligible);
                if (moves.Failed > 0)
                {
                    Log.MoveFailed(_logger, Environment.ProcessId, _upgrader.Generation, moves.Failed, moves.FirstError);
                }

                _upgrader.Metrics.ConnectionsHandedOver(moves.Tally);
            }
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken)
    {
        Log.Exiting(_logger, Environment.ProcessId, _upgrader.Generation);
        return Task.CompletedTask;
    }

    // The Upgrader is a singleton of the container, which disposes it.
    public void Dispose()
    {
        _upgrader.StateChanged -= OnStateChanged;
        _stoppingRegistration.Dispose();
        _hangUp?.Dispose();
        foreach (var registration in _shutdownSignals)
        {
            registration.Dispose();
        }
    }

    private void OnStateChanged(GenerationState state)
    {
        switch (state)
        {
            case GenerationState.HandingOver:
                // Connections that may move wait for the commit: until then this generation
                // serves them as before (a rollback keeps them). The rest drain now, as they
                // always did: a WebSocket's close in particular must go before the application
                // stops at the commit (SignalR then closes its connections without one).
                _drainer.BeginDrain(_options.DrainTimeout, _options.DrainIdleTimeout, holdForMove: _options.MoveConnections);

                break;
            case GenerationState.Ready:
                // Back from a handover whose new generation died: keep the connections.
                _drainer.EndDrain();
                break;
            case GenerationState.Superseded:
                if (_options.MoveConnections)
                {
                    int channel = _upgrader.TakeMoveChannel();
                    if (channel < 0)
                    {
                        Log.NoMoves(_logger, Environment.ProcessId, _upgrader.Generation);
                    }
                    _drainer.StartMoves(channel >= 0 ? new MoveTarget(channel, _upgrader.MoveResumes) : null);
                }

                _lifetime.StopApplication();
                break;
        }
    }

    private async Task BecomeReadyAsync()
    {
        try
        {
            if (_warmUps.Length > 0)
            {
                Log.WarmingUp(_logger, Environment.ProcessId, _upgrader.Generation);
                foreach (var warmUp in _warmUps)
                {
                    await warmUp.Run(_services, _lifetime.ApplicationStopping).ConfigureAwait(false);
                }
            }

            // Refused by the Upgrader when a stop has begun meanwhile.
            await _upgrader.ReadyAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Any failure of the warm-up hook must fail the start, whatever its type.
        catch (Exception e)
#pragma warning restore CA1031
        {
            if (_lifetime.ApplicationStopping.IsCancellationRequested)
            {
                return; // The warm-up saw the stop; StopAsync has told the old generation.
            }

            string reason = $"warm-up failed: {e.GetType().Name}: {e.Message}";
            Log.StartFailed(_logger, e, Environment.ProcessId, _upgrader.Generation, reason);
            _upgrader.ReportStartFailed(reason);
            Environment.ExitCode = 1;
            _lifetime.StopApplication();
        }
    }

    private static partial class Log
    {
        [LoggerMessage(40, LogLevel.Information, "Generation {Generation} (pid {Pid}) is stopping: {Reason}.", EventName = "Stopping")]
        public static partial void Stopping(ILogger logger, int pid, int generation, string reason);

        [LoggerMessage(41, LogLevel.Information, "Generation {Generation} (pid {Pid}) exits.", EventName = "Exiting")]
        public static partial void Exiting(ILogger logger, int pid, int generation);

        [LoggerMessage(42, LogLevel.Information, "Generation {Generation} (pid {Pid}) is running its warm-up before reporting ready.", EventName = "WarmingUp")]
        public static partial void WarmingUp(ILogger logger, int pid, int generation);

        [LoggerMessage(43, LogLevel.Error, "Generation {Generation} (pid {Pid}) cannot become ready: {Reason}", EventName = "StartFailed")]
        public static partial void StartFailed(ILogger logger, Exception exception, int pid, int generation, string reason);

        [LoggerMessage(95, LogLevel.Warning, "Generation {Generation} (pid {Pid}): moving {Count} connections failed unexpectedly, and they were closed instead; the first error: {Error}.", EventName = "MoveFailed")]
        public static partial void MoveFailed(ILogger logger, int pid, int generation, int count, string? error);

        [LoggerMessage(94, LogLevel.Information, "Generation {Generation} (pid {Pid}): the new generation does not take moved connections (a build without them, or its channel is gone); they drain.", EventName = "NoMoveChannel")]
        public static partial void NoMoves(ILogger logger, int pid, int generation);

        [LoggerMessage(92, LogLevel.Information, "Generation {Generation} (pid {Pid}) waits for the previous generation to finish moving its connections here; they go on to the new generation.", EventName = "WaitingForPreviousMove")]
        public static partial void WaitingForPreviousMove(ILogger logger, int pid, int generation);

        [LoggerMessage(89, LogLevel.Information, "Generation {Generation} (pid {Pid}) moved {Moved} connections to the new generation ({There}); of {Asked} asked to move, {NotMoved} closed instead; {Ineligible} could not move (TLS, HTTP/2, or no request yet) and drained.", EventName = "ConnectionsMoved")]
        public static partial void Moved(ILogger logger, int pid, int generation, int moved, int asked, string there, int notMoved, int ineligible);

        [LoggerMessage(45, LogLevel.Information, "Generation {Generation} (pid {Pid}) received SIGHUP (hang-up): stopping gracefully.", EventName = "HangUp")]
        public static partial void HangUp(ILogger logger, int pid, int generation);

        [LoggerMessage(44, LogLevel.Warning, "{Warning}", EventName = "ConfigurationWarning")]
        public static partial void ConfigurationWarning(ILogger logger, string warning);
    }
}
