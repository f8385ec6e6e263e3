using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Handoff.AspNetCore;

/// <summary>
/// Ties a generation's life to the host's: handles upgrade signals from the start, reports
/// ready once the host has started and the warm-up hook succeeded, stops the host when a newer
/// generation took over, and on any stop closes the listeners and drains before Kestrel stops.
/// </summary>
internal sealed partial class HandoffHostedService : IHostedLifecycleService, IDisposable
{
    private readonly Upgrader _upgrader;
    private readonly ConnectionDrainer _drainer;
    private readonly AcceptGate _gate;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly IServiceProvider _services;
    private readonly HandoffOptions _options;
    private readonly ILogger _logger;
    private CancellationTokenRegistration _supersededRegistration;

    public HandoffHostedService(Upgrader upgrader, ConnectionDrainer drainer, AcceptGate gate, IHostApplicationLifetime lifetime, IServiceProvider services, IOptions<HandoffOptions> options, ILogger<HandoffHostedService> logger)
    {
        _upgrader = upgrader;
        _drainer = drainer;
        _gate = gate;
        _lifetime = lifetime;
        _services = services;
        _options = options.Value;
        _logger = logger;
    }

    public Task StartingAsync(CancellationToken cancellationToken)
    {
        _upgrader.ListenForSignals();
        _supersededRegistration = _upgrader.Superseded.Register(_lifetime.StopApplication);
        _lifetime.ApplicationStarted.Register(() => _ = BecomeReadyAsync());
        return Task.CompletedTask;
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        bool superseded = _upgrader.SupersededBy is not null;
        if (!superseded)
        {
            _upgrader.BeginShutdown();
            _upgrader.ReportStartFailed("the new generation was stopped before it became ready");
        }

        Log.Stopping(_logger, Environment.ProcessId, _upgrader.Generation, superseded ? "a newer generation took over" : "shutdown requested");
        await _upgrader.Listeners.CloseAllAsync().ConfigureAwait(false);
        await _drainer.DrainAsync(_options.DrainTimeout, _options.DrainIdleTimeout, cancellationToken).ConfigureAwait(false);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken)
    {
        _upgrader.RemovePidFile();
        Log.Exiting(_logger, Environment.ProcessId, _upgrader.Generation);
        return Task.CompletedTask;
    }

    // The Upgrader is a singleton of the container, which disposes it.
    public void Dispose() => _supersededRegistration.Dispose();

    private async Task BecomeReadyAsync()
    {
        try
        {
            if (_options.WarmUp is { } warmUp)
            {
                Log.WarmingUp(_logger, Environment.ProcessId, _upgrader.Generation);
                await warmUp(_services, _lifetime.ApplicationStopping).ConfigureAwait(false);
            }

            // Accept first, then report: the old generation stops accepting only after this one
            // has started, so the accept queue is never without a reader.
            _gate.Open();
            await _upgrader.ReadyAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Any failure of the warm-up hook must fail the start, whatever its type.
        catch (Exception e)
#pragma warning restore CA1031
        {
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
    }
}
