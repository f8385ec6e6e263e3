namespace Handoff;

// The upgrade and the stop, step by step: what happens between the transitions that
// Upgrader.cs lists, in the order it happens.
public sealed partial class Upgrader
{
    // UpgradeAsync never throws and StopAsync must always finish: an unexpected exception
    // (a throwing StateChanged handler, say) is logged and resolved the way the state says.
    private async Task<UpgradeResult> RunUpgradeGuardedAsync(int next)
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
                    MoveLocked(GenerationState.Superseded);
                }
            }

            if (handingOver)
            {
                await Listeners.CloseAllAsync().ConfigureAwait(false);
                RaiseEvents();
                FireToken(_superseded, nameof(Superseded));
            }

            return Fail(0, $"unexpected error during the upgrade: {e.GetType().Name}: {e.Message}", UpgradeFailureReason.Unexpected);
        }
        finally
        {
            lock (_lock)
            {
                _upgradeRunning = false;
            }

            // After this upgrade's own caller has its outcome.
            _ = Task.Run(RunQueued);
        }
    }

    private async Task<UpgradeResult> RunUpgradeAsync(int next)
    {
        UpgradeAttempt attempt;
        var listeners = Listeners.Listeners;
        try
        {
            var older = DrainingOlder().Prepend(_self ?? new GenerationProcess(Environment.ProcessId, 0)).ToList();
            var blocked = _upgradeSignals.Select(UpgradeSignalNames.ToNumber).Union(EarlyStart.AlwaysHandled).ToList();
            attempt = UpgradeAttempt.Start(new UpgradeLaunch(_launcher, _command, _shadow, next, older, blocked, _options.UpgradeTimeout, _time), listeners, _logger, _stopping.Token);
        }
#pragma warning disable CA1031 // Whatever stops the spawn fails this upgrade, never the server.
        catch (Exception e)
#pragma warning restore CA1031
        {
            return Fail(0, $"cannot start the new generation: {e.Message}", UpgradeFailureReason.SpawnFailed);
        }

        using var disposing = attempt;

        // First thing: a supervisor that learns of the new generation only after the log line
        // could lose it to a kill of this one in between.
        AnnounceSuccessor(attempt.Pid);
        Log.Spawned(_logger, Environment.ProcessId, Generation, attempt.Pid, next);
        var failure = await attempt.WaitReadyAsync(_options.UpgradeTimeout, _stopping.Token).ConfigureAwait(false);
        List<Listener> released = [];
        bool stopped;
        lock (_lock)
        {
            stopped = failure?.Reason == UpgradeFailureReason.Shutdown || _state != GenerationState.Upgrading;
            if (!stopped && failure is null)
            {
                // The decisive moment: from here on the upgrade stands.
                released = attempt.KeepServingReleased(listeners);
                attempt.NoteAcceptsMoves();
                Listeners.Gate.Close();
                MoveLocked(GenerationState.HandingOver);
            }
        }

        if (stopped || failure is not null)
        {
            string? ended = await attempt.TerminateAsync(_options.TerminateTimeout).ConfigureAwait(false);
            return stopped
                ? Fail(attempt.Pid, $"new generation {next} (pid {attempt.Pid}) was stopped because this generation is shutting down ({ended ?? "it had exited"})", UpgradeFailureReason.Shutdown)
                : Fail(attempt.Pid, $"new generation {next} (pid {attempt.Pid}) failed: {failure!.Message.TrimEnd('.')}" + (ended is null ? "" : $"; it was stopped ({ended})"), failure.Reason);
        }

        foreach (var listener in released)
        {
            Log.ServingReleased(_logger, Environment.ProcessId, Generation, ListenerAddress.Format(listener.EndPoint), next);
        }

        return await HandOverAsync(attempt, released).ConfigureAwait(false);
    }

    private async Task<UpgradeResult> HandOverAsync(UpgradeAttempt attempt, List<Listener> released)
    {
        int pid = Environment.ProcessId;
        var triggerToReady = _time.GetElapsedTime(_upgradeStartedAt);
        Log.HandingOver(_logger, pid, Generation, attempt.Pid, attempt.Generation, _options.RollbackWindow.TotalSeconds);
        RaiseEvents();
        attempt.Watch();
        _pidFile.Write(attempt.Pid);
        long windowStarted = _time.GetTimestamp();
        await attempt.WaitRollbackWindowAsync(_options.RollbackWindow, _stopping.Token).ConfigureAwait(false);
        long windowEnded = _time.GetTimestamp();

        // Commit. The watch takes a last look (a withdrawal written until now still counts:
        // nothing is closed yet, so this generation can still accept again); then systemd learns
        // the new main pid, while this generation still is the main process; then closing the
        // pipe tells the new generation that this one can no longer roll back, so it is the main
        // process and may start an upgrade of its own. A final look at the close catches a
        // withdrawal written meanwhile.
        string? why = await attempt.LastLookAsync().ConfigureAwait(false);
        bool terminate = false;
        if (why is null && !attempt.HasExited)
        {
            if (await HandMainPidAsync(attempt).ConfigureAwait(false) is { } notifyError)
            {
                // systemd would take this generation's exit for the service's: stay.
                why = $"could not be made the service's main process ({notifyError})";
                terminate = true;
            }
            else
            {
                why = await attempt.CommitAsync().ConfigureAwait(false);
            }
        }

        long committed = _time.GetTimestamp();
        why ??= attempt.HasExited ? "exited" : null;
        if (why is not null)
        {
            why = await attempt.ExplainAsync(why).ConfigureAwait(false);
        }

        bool rollBack;
        bool takeMainBack = false;
        var result = UpgradeResult.Success(attempt.Pid, attempt.Generation, attempt.TimeToReady) with
        {
            Timeline = UpgradeTimeline.From(_time, _upgradeStartedAt, attempt.SpawnedAt, attempt.Moments, attempt.ReportReadAt, windowStarted, windowEnded, committed),
        };
        lock (_lock)
        {
            // A stop that began during the handover lets the new generation serve on.
            rollBack = why is not null && !_stopRequested;
            if (rollBack)
            {
                takeMainBack = _main == MainRole.Handed;
                if (takeMainBack)
                {
                    _main = MainRole.Main;
                }

                MoveLocked(GenerationState.Ready);
            }
            else
            {
                _supersededBy = result;

                // Before the state changes: whoever sees Superseded finds the channel here.
                if (_options.MoveConnections)
                {
                    _moveChannel = attempt.TakeMoveChannel();
                    MoveResumes = attempt.Resumes;
                }

                MoveLocked(GenerationState.Superseded);
            }
        }

        if (rollBack)
        {
            // The drain ends (and Draining is new) before the gate opens: the clients that fell
            // off the dead generation reconnect now and must not meet a draining one.
            RaiseEvents();
            Listeners.Gate.Open();
            foreach (var listener in released)
            {
                // Back under the common gate; closing its own sends its accept loop there.
                var own = listener.Gate;
                listener.Gate = Listeners.Gate;
                own.Close();
            }

            _pidFile.Write(pid);
            if (takeMainBack)
            {
                // MAINPID= named the new generation a moment ago: whoever follows the main pid
                // must follow this one again. handoff run takes the claim once the new one is
                // gone; systemd (NotifyAccess=main) refuses it, but a main process that died
                // stops the unit there anyway. A new generation that withdrew gave it back too.
                Log.MainPidTakenBack(_logger, pid, Generation, attempt.Pid);
                NotifyService(ServiceReporter.MainPid(pid), SystemdConstants.Ready);
            }

            string reason = $"new generation {attempt.Generation} (pid {attempt.Pid}) {why} {attempt.SinceReadyMilliseconds} ms after it reported ready; this generation accepts again";
            if (terminate)
            {
                string? ended = await attempt.TerminateAsync(_options.TerminateTimeout).ConfigureAwait(false);
                reason += ended is null ? "" : $"; it was stopped ({ended})";
            }

            return Fail(attempt.Pid, reason, UpgradeFailureReason.RolledBack);
        }

        await attempt.CommitAsync().ConfigureAwait(false); // Closed already unless it withdrew too late.

        await Listeners.CloseAllAsync().ConfigureAwait(false);
        _status.TookOver(attempt.Generation, attempt.Pid);
        Metrics.UpgradeEnded(HandoffMetrics.Succeeded, null, triggerToReady);
        Metrics.UpgradeTimed(result.Timeline!);
        Log.Timeline(_logger, pid, Generation, attempt.Pid, attempt.Generation, result.Timeline!);
        Log.Superseded(_logger, pid, Generation, attempt.Pid, attempt.Generation);
        RaiseEvents();
        FireToken(_superseded, nameof(Superseded));
        if (why is not null && !attempt.HasExited)
        {
            // Both are stopping (a stop of the whole service during the handover). The new
            // generation may have looked at the pid file before this one wrote its pid there,
            // and found nothing of its own to remove: wait for its exit, so that this
            // generation's stop finds it gone and removes the file instead.
            await attempt.WaitForExitAsync(_options.DrainTimeout + _options.TerminateTimeout).ConfigureAwait(false);
        }

        return result;
    }

    /// <summary>Names the new generation to the service manager as soon as it runs, when this
    /// one is the main generation.</summary>
    private void AnnounceSuccessor(int childPid)
    {
        bool main;
        lock (_lock)
        {
            main = IsMainLocked();
        }

        if (main && _service.IsEnabled)
        {
            _service.AnnounceSuccessor(childPid);
        }
    }

    /// <summary>Hands the main pid to the new generation, when this one is the main
    /// generation; returns why it could not, or null. The keep-alives stop as it is handed:
    /// the datagram carries the last.</summary>
    private async Task<string?> HandMainPidAsync(UpgradeAttempt attempt)
    {
        MainRole was;
        lock (_lock)
        {
            if (!IsMainLocked() || !_service.IsEnabled)
            {
                return null;
            }

            was = _main;
            _main = MainRole.Handed;
        }

        var last = LastUpgrade.TookOver(attempt.Generation, attempt.Pid, _time.GetUtcNow());
        var (handed, error) = await _service.HandMainPidAsync(attempt.Pid, _status.HandedOver(attempt.Generation, attempt.Pid, last)).ConfigureAwait(false);
        if (handed)
        {
            _status.Set(last);
        }
        else
        {
            lock (_lock)
            {
                _main = was;
            }
        }

        return error;
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

        GenerationState state;
        lock (_lock)
        {
            if (_state == GenerationState.Upgrading)
            {
                MoveLocked(GenerationState.Ready);
            }

            state = _state;
        }

        if (state is GenerationState.Stopping or GenerationState.Stopped)
        {
            Log.UpgradeFailedStopping(_logger, Environment.ProcessId, Generation, newPid, reason, why.Tag());
        }
        else
        {
            Log.UpgradeFailed(_logger, Environment.ProcessId, Generation, newPid, reason, why.Tag());
        }

        _status.Failed(reason);
        Metrics.UpgradeEnded(HandoffMetrics.Failed, why.Tag(), _time.GetElapsedTime(_upgradeStartedAt));
        RaiseEvents();
        if (State == GenerationState.Ready)
        {
            // Ends the reload that RELOADING=1 began; this generation serves on.
            NotifyService(SystemdConstants.Ready);
        }

        return UpgradeResult.Failure(newPid, Generation + 1, why, reason);
    }

    private async Task StopCoreAsync(GenerationState was, bool main)
    {
        Log.StopRequested(_logger, Environment.ProcessId, Generation, was);
        bool final = was is GenerationState.Starting or GenerationState.Ready or GenerationState.Upgrading;
        if (final && main)
        {
            // The final stop. Only the main generation says so: STOPPING=1 stops the unit, and a
            // generation that is draining after an upgrade is not stopping the service.
            NotifyService(SystemdConstants.Stopping);
        }

        RaiseEvents();

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
                await Task.Delay(_options.ShutdownDelay, _time, _shutdownDelay.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Log.ShutdownDelayEnded(_logger, Environment.ProcessId, Generation);
            }

            CancellationTokenSource draining;
            lock (_lock)
            {
                draining = _draining;
            }

            FireToken(draining, nameof(Draining));
        }

        Listeners.Gate.Close();
        await Listeners.CloseAllAsync().ConfigureAwait(false);
        if (was is not GenerationState.Superseded)
        {
            // A stop, not a handover: unless another generation still accepts on these paths
            // (each stopping generation checks after closing its own copy, so the last one to
            // close removes them), no one serves them after this one. A new generation that
            // never became ready removes only what it bound itself: its parent still serves
            // the paths it inherited.
            Listeners.RemoveUnixSocketPaths();
        }

        _pidFile.RemoveAtStop(SupersededBy?.NewPid, _inheritance.Older.Select(g => g.Pid).Prepend(_inheritance.ParentPid));
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
            await forward.WaitAsync(_options.UpgradeTimeout + _options.RollbackWindow + ServiceReporter.BarrierTimeout, _time).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        if (_control is not null)
        {
            // Lets the client of the upgrade that superseded this generation read its outcome.
            await _control.StopAsync().ConfigureAwait(false);
        }

        lock (_lock)
        {
            MoveLocked(GenerationState.Stopped);
        }

        RaiseEvents();
    }

    // A final stop of a generation that serves waits ShutdownDelay; one that never served, or
    // is handing over, has nobody to keep serving.
    private bool DelaysShutdown(GenerationState was) =>
        _options.ShutdownDelay > TimeSpan.Zero && was is GenerationState.Ready or GenerationState.Upgrading;

    private void ParentExited()
    {
        if (_pidFile.Names(_inheritance.ParentPid) && State is GenerationState.Ready or GenerationState.Upgrading)
        {
            Log.ParentGone(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);
            _pidFile.Write(Environment.ProcessId);
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
            if (state == GenerationState.Superseded && _supersededBy is { } successor)
            {
                _forward = ForwardQueuedAsync(queued, successor);
                return;
            }
        }

        if (state == GenerationState.Ready)
        {
            // UpgradeAsync queues it again if this generation's own upgrade is still ending;
            // that end runs the queue once more.
            Log.QueuedUpgradeStarts(_logger, Environment.ProcessId, Generation);
            PassOn(UpgradeAsync(), queued);
        }
        else
        {
            var refusal = UpgradeResult.Refusal(Generation + 1, UpgradeFailureReason.ShuttingDown, "this generation began shutting down before the upgrade asked for could run");
            Log.UpgradeRefused(_logger, Environment.ProcessId, Generation, refusal.Error!, refusal.Reason.Tag());
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
                await Task.Delay(ParentCommitPoll, _time, _stopping.Token).ConfigureAwait(false);
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
            var (answer, asked) = await ControlRequest.UpgradeAsync(_controlSocket, successor.Generation + 1, _options.UpgradeTimeout + _options.RollbackWindow + ServiceReporter.BarrierTimeout).ConfigureAwait(false);
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
            Log.UpgradeRefused(_logger, pid, Generation, result.Error!, result.Reason.Tag());
        }

        queued.TrySetResult(result);
    }

    private static void PassOn(Task<UpgradeResult> upgrade, TaskCompletionSource<UpgradeResult> to) =>
        _ = upgrade.ContinueWith(static (t, q) => ((TaskCompletionSource<UpgradeResult>)q!).TrySetResult(t.Result), to, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
}
