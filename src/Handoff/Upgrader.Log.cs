using Microsoft.Extensions.Logging;

namespace Handoff;

// Every line the upgrader logs, with its event id (docs/metrics.md lists them).
public sealed partial class Upgrader
{
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

        [LoggerMessage(84, LogLevel.Error, "Generation {Generation} (pid {Pid}): a handler of the change to {State} threw; the change stands and the generation goes on.", EventName = "StateHandlerFailed")]
        public static partial void StateHandlerFailed(ILogger logger, Exception exception, int pid, int generation, GenerationState state);

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

        [LoggerMessage(14, LogLevel.Warning, "Generation {Generation} (pid {Pid}) refused an upgrade: {Reason}. [{ErrorType}]", EventName = "UpgradeRefused")]
        public static partial void UpgradeRefused(ILogger logger, int pid, int generation, string reason, string errorType);

        [LoggerMessage(16, LogLevel.Information, "Generation {Generation} (pid {Pid}) started generation {NewGeneration} as pid {NewPid}; waiting for it to report ready.", EventName = "Spawned")]
        public static partial void Spawned(ILogger logger, int pid, int generation, int newPid, int newGeneration);

        [LoggerMessage(17, LogLevel.Error, "Generation {Generation} (pid {Pid}): upgrade to pid {NewPid} failed, still serving. {Reason} [{ErrorType}]", EventName = "UpgradeFailed")]
        public static partial void UpgradeFailed(ILogger logger, int pid, int generation, int newPid, string reason, string errorType);

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

        [LoggerMessage(25, LogLevel.Information, "Generation {Generation} (pid {Pid}) is stopping (it was {State}).", EventName = "StopRequested")]
        public static partial void StopRequested(ILogger logger, int pid, int generation, GenerationState state);

        [LoggerMessage(26, LogLevel.Warning, "Generation {Generation} (pid {Pid}) does not report ready: it is {State}.", EventName = "NotReporting")]
        public static partial void NotReporting(ILogger logger, int pid, int generation, GenerationState state);

        [LoggerMessage(28, LogLevel.Warning, "Generation {Generation} (pid {Pid}): the previous generation (pid {ParentPid}) did not take the ready report (it gave up waiting) and keeps serving.", EventName = "ParentGaveUp")]
        public static partial void ParentGaveUp(ILogger logger, int pid, int generation, int parentPid);

        [LoggerMessage(64, LogLevel.Warning, "Generation {Generation} (pid {Pid}): upgrade to pid {NewPid} failed; this generation is stopping. {Reason} [{ErrorType}]", EventName = "UpgradeFailedStopping")]
        public static partial void UpgradeFailedStopping(ILogger logger, int pid, int generation, int newPid, string reason, string errorType);

        [LoggerMessage(85, LogLevel.Debug, "Generation {Generation} (pid {Pid}) handed over to generation {NewGeneration} (pid {NewPid}); from the request: {Timeline}.", EventName = "UpgradeTimeline")]
        public static partial void Timeline(ILogger logger, int pid, int generation, int newPid, int newGeneration, UpgradeTimeline timeline);
    }
}
