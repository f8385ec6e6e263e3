using System.Runtime.InteropServices;

namespace Handoff;

// How the generation meets what is around it: the signals that ask for an upgrade, systemd told
// who the main process is and what the status line says, the control socket, the status report.
// State changes only in Upgrader.cs: these members read it under the lock or act after a
// transition; the one main-role fact set here (an orphan claims the main pid) is set under it.
public sealed partial class Upgrader
{
    // After ReadyAsync's transition: systemd and the pid file learn who serves. A generation
    // whose parent took the report waits for the parent's commit (it writes the pid file); one
    // whose parent gave up on it changes nothing; an orphan or a first generation speaks itself.
    private void AnnounceReady(bool parentTold)
    {
        if (!IsInherited)
        {
            // The first generation is systemd's main process: Type=notify becomes active now.
            NotifyService(SystemdConstants.Ready, ServiceReporter.MainPid(Environment.ProcessId));
        }

        if (parentTold)
        {
            // The previous generation writes the pid file once it has read the report; if it
            // dies first, the file would name a dead process.
            if (_pidFile.IsEnabled)
            {
                ParentWatch.Start(_inheritance.ParentPid, _inheritance.IsParentRunning, ParentExited);
            }
        }
        else if (IsInherited && _inheritance.IsParentRunning())
        {
            // The report failed but the previous generation lives: it gave up on this one (its
            // UpgradeTimeout passed) and is about to stop it; it keeps serving and its pid file.
            Log.ParentGaveUp(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);
            _pidFile.Owns = false;
        }
        else
        {
            if (IsInherited)
            {
                // Nobody hands the main pid to this orphan; systemd takes it only where it
                // accepts notifications from any process of the unit (NotifyAccess=all).
                Log.ParentGone(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);
                lock (_lock)
                {
                    _main = MainRole.Main;
                }

                NotifyService(SystemdConstants.Ready, ServiceReporter.MainPid(Environment.ProcessId));
            }

            _pidFile.Write(Environment.ProcessId);
        }
    }

    // An upgrade refused at once (not ready, shutting down, superseded, too many draining): the
    // log, the metric and the status report say why.
    private void AnnounceRefusal(UpgradeResult refusal, bool answersSystemd)
    {
        Log.UpgradeRefused(_logger, Environment.ProcessId, Generation, refusal.Error!, refusal.Reason.Tag());
        Metrics.UpgradeEnded(HandoffMetrics.Refused, refusal.Reason.Tag(), null);
        _status.Refused(refusal.Error!);
        if (answersSystemd)
        {
            // A reload systemd asked for (Type=notify-reload) ends with READY=1 either way,
            // and the status line says why nothing changed.
            NotifyService(SystemdConstants.Reloading, ServiceReporter.Monotonic());
            NotifyService(SystemdConstants.Ready);
        }
    }

    // An upgrade to this generation stands once this one reported ready and the previous one
    // can no longer roll back: counted here, by the generation that serves after it.
    private bool TookOver()
    {
        lock (_lock)
        {
            return _reportedReady && _inheritance.ReadyPipe?.IsParentCommitted() == true;
        }
    }

    (bool Main, bool AwaitingCommit) IMainGeneration.MainRole()
    {
        lock (_lock)
        {
            bool main = IsMainLocked() && _state != GenerationState.Stopped;
            return (main, IsInherited && !main && _main != MainRole.Handed && _state != GenerationState.Stopped);
        }
    }

    bool IMainGeneration.ClaimIfParentGone()
    {
        if (!IsInherited || _inheritance.IsParentRunning())
        {
            return false;
        }

        // The pipe closed and the parent is gone: it committed and exited at once (nothing to
        // drain), or it died before it handed the main pid over. The claim covers the second
        // and changes nothing in the first. handoff run takes it from a generation it was told
        // of once its main one is gone, and says so; systemd only with NotifyAccess=all.
        Log.ClaimingMain(_logger, Environment.ProcessId, Generation, _inheritance.ParentPid);
        lock (_lock)
        {
            _main = MainRole.Main;
        }

        return true;
    }

    /// <summary>What <c>systemctl status</c> shows on its Status: line.</summary>
    internal string StatusText()
    {
        GenerationState state;
        int? successor;
        lock (_lock)
        {
            (state, successor) = (_state, _supersededBy?.NewPid);
        }

        return _status.Text(state, successor, OpenConnections?.Invoke(), [.. DrainingOlder().Select(g => g.Pid)]);
    }

    string IMainGeneration.StatusText() => StatusText();

    GenerationStatus IControlled.GetStatus() => GetStatus();

    /// <summary>What <c>handoff status</c> shows.</summary>
    internal GenerationStatus GetStatus() => new(
        Environment.ProcessId,
        Generation,
        State,
        _self?.StartedAt() ?? _startedAt,
        [.. Listeners.Listeners.Where(l => l != Listeners.Control)],
        _controlSocket,
        OpenConnections?.Invoke(),
        [.. DrainingOlder().Select(g => new DrainingGeneration(g.Pid, g.StartedAt(), ProcessSockets.CountConnections(g.Pid)))],
        _status.Last,
        _inheritance.ParentPid,
        MoveReceiver is { } moves && (moves.Adopted + moves.Closed + moves.PassedOn > 0 || !moves.Ended.IsCompleted)
            ? new MovedHere(moves.Adopted, moves.Closed, moves.PassedOn, moves.Ended.IsCompleted, ByKind(moves.Tally))
            : null);

    private static Dictionary<string, MovedKind> ByKind(ConnectionTally tally) =>
        tally.Entries.Select(e => e.Kind).Distinct().ToDictionary(
            ConnectionTally.Name,
            kind => new MovedKind(tally.Count(kind, "adopted"), tally.Count(kind, "closed"), tally.Count(kind, "passed_on")));

    /// <summary>What reads the connections the previous generation moves here (set by the
    /// ASP.NET Core adoption or a raw server's connection drain), for the status.</summary>
    internal MoveReceiver? MoveReceiver { get; set; }

    /// <summary>Ends <see cref="HandoffOptions.ShutdownDelay"/> now, if a shutdown waits in
    /// it (a second SIGTERM or SIGINT).</summary>
    internal void EndShutdownDelay() => _shutdownDelay.Cancel();

    /// <summary>One datagram to the service manager with <paramref name="assignments"/> and
    /// the current status line. Nothing outside a service.</summary>
    private void NotifyService(params string[] assignments)
    {
        if (_service.IsEnabled)
        {
            _service.Notify(StatusText(), assignments);
        }
    }

    private Listener ListenControl(string path)
    {
        try
        {
            return Listeners.ListenControl(path);
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"{HandoffOptions.SectionName}:{nameof(HandoffOptions.ControlSocket)} '{path}' cannot be used: {e.Message}. " +
                (e is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.AddressAlreadyInUse }
                    ? "A running server answers there ('handoff status --control " + path + "' says which); give each server its own path."
                    : "Create its directory, writable by this user, or choose another path."), e);
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
}
