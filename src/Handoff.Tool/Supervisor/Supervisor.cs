using System.Collections;
using System.Globalization;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Handoff.Tool;

/// <summary>
/// <c>handoff run</c>: a process with a stable pid above the generations of one server, for
/// containers (as PID 1) and for process managers that follow one pid. It is a child subreaper,
/// so every generation and every orphan of theirs becomes its child and is reaped here. It
/// learns the main generation the way systemd does, from the notification protocol
/// (<c>NOTIFY_SOCKET</c>, docs/systemd.md): the first generation's <c>READY=1</c>, each
/// handover's <c>MAINPID=</c> from the generation that is main. The application runs unchanged
/// under systemd and under this supervisor.
/// </summary>
/// <remarks>
/// One lock guards the supervisor's state (the main pid, the generations alive, the exit
/// code); three threads change it: the reaper (waitpid), the notification reader and the signal
/// handlers. A second lock keeps notifications in order when the reaper reads the queue itself. It never uses <see cref="System.Diagnostics.Process"/>, whose own reaping would race
/// with waitpid(-1).
/// </remarks>
internal sealed partial class Supervisor : IDisposable
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(250);

    // How long processes left behind by the generations get between SIGTERM and SIGKILL.
    private static readonly TimeSpan RemainingGrace = TimeSpan.FromSeconds(5);

    private readonly SupervisorOptions _options;
    private readonly ILogger _log;
    private readonly Lock _lock = new();
    private readonly Lock _reading = new();
    private readonly HashSet<int> _generations = [];

    // New generations a main one announced (X_HANDOFF_SUCCESSOR=) that are not main yet, with
    // the pid that started each: generations all the same, which must outlive a parent that
    // dies before its handover.
    private readonly Dictionary<int, int> _successors = [];

    // Every announcement (new generation -> the main one that started it): what a MAINPID= read
    // late (this process was stopped, SIGSTOP) is checked against.
    private readonly Dictionary<int, int> _announced = [];

    // Claims of the main pid (MAINPID= their own) from known generations while the main one
    // still ran: the first live one takes over when it is reaped.
    private readonly List<int> _claims = [];
    private readonly HashSet<int> _stopSignalled = [];
    private readonly TaskCompletionSource<int> _allGone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<PosixSignalRegistration> _signals = [];
    private readonly ServiceNotifier _upstream;
    private readonly SystemdEnvironment _systemd;
    private readonly Socket _notify;
    private readonly string _notifyName;
    private volatile bool _stopping;
    private int _ending;
    private int _stopSignal;
    private string? _shadowRoot;
    private int _main;
    private bool _mainGone;
    private int _mainExitCode;
    private bool _ready;

    public Supervisor(SupervisorOptions options, ILogger log)
    {
        _options = options;
        _log = log;

        // What systemd told this process (when it is a service) is for this process alone; the
        // generations talk to the supervisor instead.
        _systemd = SystemdEnvironment.Capture();
        foreach (string warning in _systemd.Warnings)
        {
            Log.SystemdWarning(_log, warning);
        }

        _upstream = new ServiceNotifier(_systemd.NotifySocket, _systemd.WatchdogInterval, log);

        // An abstract socket: nothing on disk to leave behind. Only the main generation is
        // listened to, as systemd's NotifyAccess=main does; SO_PASSCRED tells who sent what.
        _notifyName = string.Create(CultureInfo.InvariantCulture, $"handoff-run/{Environment.ProcessId}/{Random.Shared.Next():x8}");
        _notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        _notify.Bind(new UnixDomainSocketEndPoint("\0" + _notifyName));
        _notify.SetRawSocketOption(Interop.Libc.SOL_SOCKET, Interop.Libc.SO_PASSCRED, BitConverter.GetBytes(1));
    }

    /// <summary>Starts generation 1 and supervises until every generation is gone; returns the
    /// exit code of the last main generation (128 + N when a signal N ended it).</summary>
    public async Task<int> RunAsync()
    {
        if (Interop.Libc.Prctl(Interop.Libc.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"prctl(PR_SET_CHILD_SUBREAPER) failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }

        foreach (var signal in (PosixSignal[])[PosixSignal.SIGTERM, PosixSignal.SIGINT, PosixSignal.SIGQUIT])
        {
            _signals.Add(PosixSignalRegistration.Create(signal, OnStopSignal));
        }

        foreach (var signal in (PosixSignal[])[(PosixSignal)Interop.Libc.SIGUSR2, PosixSignal.SIGHUP])
        {
            _signals.Add(PosixSignalRegistration.Create(signal, OnUpgradeSignal));
        }

        int first = StartFirstGeneration();
        lock (_lock)
        {
            _main = first;
            _generations.Add(first);
        }

        Log.Started(_log, first, string.Join(' ', _options.Command));
        var reaper = new Thread(Reap) { IsBackground = true, Name = "handoff run: reaper" };
        reaper.Start();
        var reader = new Thread(ReadNotifications) { IsBackground = true, Name = "handoff run: notifications" };
        reader.Start();

        int exitCode = await _allGone.Task.ConfigureAwait(false);
        Log.AllGone(_log, exitCode);
        return exitCode;
    }

    public void Dispose()
    {
        foreach (var registration in _signals)
        {
            registration.Dispose();
        }

        _notify.Dispose();
        _upstream.Dispose();
        if (_shadowRoot is not null && Directory.Exists(_shadowRoot))
        {
            // Every generation is gone: no copy is in use.
            Directory.Delete(_shadowRoot, recursive: true);
        }

        if (_options.ControlSocket is { } control && Interop.Libc.FileType(control) == Interop.Libc.S_IFSOCK && ListenerRegistry.IsStaleUnixSocket(new UnixDomainSocketEndPoint(control)))
        {
            // Left by a generation that did not stop cleanly (killed, crashed): nobody serves it.
            File.Delete(control);
        }
    }

    private int StartFirstGeneration()
    {
        var environment = Environment.GetEnvironmentVariables().Cast<DictionaryEntry>()
            .Select(e => KeyValuePair.Create((string)e.Key, (string?)e.Value ?? ""))
            .Where(e => e.Key is not (SystemdConstants.NotifySocket or SystemdConstants.WatchdogUsec or SystemdConstants.WatchdogPid
                or SystemdConstants.ListenPid or SystemdConstants.ListenFds or SystemdConstants.ListenFdNames or ShadowCopy.VariableName))
            .Select(e => $"{e.Key}={e.Value}")
            .Append($"{SystemdConstants.NotifySocket}=@{_notifyName}")
            .ToList();
        if (_systemd.WatchdogInterval is { } watchdog)
        {
            // The generations keep the service's watchdog alive through this process.
            environment.Add(string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.WatchdogUsec}={(long)watchdog.TotalMicroseconds}"));
        }

        if (_options.ControlSocket is { } control)
        {
            environment.Add($"Handoff__ControlSocket={control}");
        }

        string directory = Environment.CurrentDirectory;
        var command = new StartCommand(_options.Command, directory, []);
        string executable;
        try
        {
            executable = ResolveExecutable(command, environment);
        }
        catch (FileNotFoundException e)
        {
            throw new ToolException(ToolExitCodes.CommandNotFound, e.Message);
        }

        string? copy = null;
        if (_options.ShadowCopyParent is { } parent)
        {
            var shadow = ShadowCopyFirst(command, environment, parent);
            copy = shadow.Copy;
            command = ShadowCopy.Rewrite(command, shadow.Source, copy, shadow);
            executable = ResolveExecutable(command, environment);
            environment.Add($"{ShadowCopy.VariableName}={shadow.Format()}");
        }

        int pid;
        try
        {
            pid = GenerationLauncher.Spawn(executable, command.Arguments, environment, command.WorkingDirectory, [], []);
        }
        catch (IOException e)
        {
            throw new ToolException(ToolExitCodes.CommandNotFound, $"cannot start {executable}: {e.Message}");
        }

        if (copy is not null)
        {
            ShadowCopy.SetOwner(copy, pid);
        }

        return pid;
    }

    /// <summary>Generation 1's private copy of the application directory; every later
    /// generation gets its own from the one before (<see cref="ShadowCopy"/>).</summary>
    private ShadowCopy ShadowCopyFirst(StartCommand command, List<string> environment, string parent)
    {
        string? source = ShadowCopy.ApplicationDirectory(command.Arguments, command.WorkingDirectory, name => ResolveExecutable(command with { Arguments = [name] }, environment), out string? error)
            ?? throw new ToolException(ToolExitCodes.CouldNotAsk, $"--shadow-copy: {error}");
        // The pid says whose it is (see PruneAbandonedRoots); the suffix keeps two supervisors
        // that are both PID 1 of their containers apart on a shared directory.
        string root = Path.Combine(Path.GetFullPath(parent), string.Create(CultureInfo.InvariantCulture, $"handoff-shadow-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}"));
        if ((root + "/").StartsWith(source + "/", StringComparison.Ordinal))
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"--shadow-copy: the copies ({root}) cannot live inside the application directory ({source}); choose another --shadow-copy-dir");
        }

        PruneAbandonedRoots(Path.GetDirectoryName(root)!);
        Directory.CreateDirectory(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        _shadowRoot = root;
        string copy;
        try
        {
            copy = ShadowCopy.CreateCopy(source, root, 1);
        }
        catch (IOException e)
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, e.Message);
        }

        Log.ShadowCopy(_log, source, copy);
        return new ShadowCopy(source, copy);
    }

    /// <summary>Deletes the copies of supervisors that are gone (killed before they could clean
    /// up): <c>handoff-shadow-PID-XXXX</c> whose PID no longer runs (in this pid namespace).</summary>
    private static void PruneAbandonedRoots(string parent)
    {
        foreach (string root in Directory.Exists(parent) ? Directory.GetDirectories(parent, "handoff-shadow-*") : [])
        {
            string[] parts = Path.GetFileName(root).Split('-');
            if (parts.Length == 4 && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && !GenerationProcess.IsRunning(pid))
            {
                try
                {
                    Directory.Delete(root, recursive: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Another user's, or in use after all: left alone.
                }
            }
        }
    }

    private static string ResolveExecutable(StartCommand command, List<string> environment)
    {
        string? path = environment.FirstOrDefault(e => e.StartsWith("PATH=", StringComparison.Ordinal))?[5..];
        return (command with { Environment = path is null ? [] : [KeyValuePair.Create("PATH", path)] }).ResolveExecutable();
    }

    /// <summary>Reaps every child, generations and adopted orphans alike, until none is left.</summary>
    private void Reap()
    {
        while (true)
        {
            int pid = Interop.Libc.WaitPid(-1, out int status, 0);
            if (pid < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Interop.Libc.EINTR)
                {
                    continue;
                }

                // ECHILD: no child left, and as a subreaper no descendant either.
                int code;
                lock (_lock)
                {
                    code = _mainExitCode;
                }

                _allGone.TrySetResult(code);
                return;
            }

            int exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f);
            string how = (status & 0x7f) == 0 ? $"exited with code {exitCode}" : $"was killed by signal {status & 0x7f}";
            bool wasMain;
            int left;
            int claimed = 0;
            string successors;
            lock (_lock)
            {
                wasMain = pid == _main;
                bool generation = _generations.Remove(pid) | _successors.Remove(pid);
                _claims.Remove(pid);

                if (wasMain)
                {
                    _mainExitCode = exitCode;
                    _mainGone = true;
                    claimed = _claims.FirstOrDefault(GenerationProcess.IsRunning);
                    if (claimed != 0)
                    {
                        BecomeMainLocked(claimed);
                    }
                }

                left = _generations.Count + _successors.Count;
                successors = string.Join(", ", _successors.Keys);
                if (!generation && !wasMain)
                {
                    Log.ReapedOrphan(_log, pid, how);
                    continue;
                }
            }

            if (wasMain)
            {
                Log.MainExited(_log, exitCode == 0 || _stopping ? LogLevel.Information : LogLevel.Warning, pid, how, left);
                if (claimed != 0)
                {
                    Log.MainClaimed(_log, claimed, pid);
                }
                else if (successors.Length > 0)
                {
                    Log.AwaitingSuccessor(_log, pid, successors);
                }
            }
            else
            {
                Log.GenerationExited(_log, pid, how, left);
            }

            if (left == 0)
            {
                // Whatever the generations said before they exited is read first: an
                // announcement still queued, or handovers queued while this process was stopped
                // (SIGSTOP) that name the one serving now.
                DrainNotifications();
                bool mainGone;
                lock (_lock)
                {
                    left = _generations.Count + _successors.Count;
                    successors = string.Join(", ", _successors.Keys);
                    mainGone = _mainGone;
                }

                if (left == 0)
                {
                    EndRemainingProcesses();
                }
                else if (wasMain && mainGone && successors.Length > 0)
                {
                    Log.AwaitingSuccessor(_log, pid, successors);
                }
            }
        }
    }

    private void DrainNotifications()
    {
        try
        {
            HandleQueued(new byte[4096]);
        }
        catch (Exception e) when (e is ObjectDisposedException or SocketException or IOException)
        {
            Log.NotificationFailed(_log, e.Message);
        }
    }

    /// <summary>Handles every notification queued now. One reader at a time, so datagrams are
    /// handled in the order sent (the reaper reads too, before it decides that no generation is
    /// left).</summary>
    private void HandleQueued(byte[] buffer)
    {
        lock (_reading)
        {
            int length;
            while ((length = Interop.Libc.ReceiveDatagram((int)_notify.Handle, buffer, out int sender)) >= 0)
            {
                Handle(sender, Encoding.UTF8.GetString(buffer, 0, length));
            }
        }
    }

    /// <summary>Once no generation is left, what remains (helpers the generations started and
    /// left behind) is asked to stop and then killed, so that this process can exit: as PID 1
    /// its exit would kill them anyway, without a chance to finish.</summary>
    private void EndRemainingProcesses()
    {
        if (Interlocked.Exchange(ref _ending, 1) != 0)
        {
            return;
        }

        var remaining = Children();
        if (remaining.Count == 0)
        {
            return;
        }

        Log.EndingRemaining(_log, string.Join(", ", remaining), RemainingGrace.TotalSeconds);
        foreach (int pid in remaining)
        {
            _ = Interop.Libc.Kill(pid, Interop.Libc.SIGTERM);
        }

        _ = Task.Run(async () =>
        {
            await Task.Delay(RemainingGrace).ConfigureAwait(false);
            foreach (int pid in Children())
            {
                _ = Interop.Libc.Kill(pid, Interop.Libc.SIGKILL);
            }
        });
    }

    /// <summary>This process's children (not zombies), from /proc.</summary>
    private static List<int> Children()
    {
        int self = Environment.ProcessId;
        return [.. ProcFs.Pids().Where(pid => GenerationProcess.IsRunning(pid) && GenerationProcess.ParentOf(pid) == self)];
    }

    /// <summary>Reads the generations' notifications and acts on those of the main one.</summary>
    private void ReadNotifications()
    {
        byte[] buffer = new byte[4096];
        while (!_allGone.Task.IsCompleted)
        {
            try
            {
                if (!_notify.Poll(PollInterval, SelectMode.SelectRead))
                {
                    continue;
                }

                HandleQueued(buffer);
            }
            catch (Exception e) when (e is ObjectDisposedException or SocketException or IOException)
            {
                if (_allGone.Task.IsCompleted)
                {
                    return;
                }

                Log.NotificationFailed(_log, e.Message);
            }
        }
    }

    private void Handle(int sender, string message)
    {
        var lines = message.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var upstream = new List<string>(lines.Length);
        bool becameReady = false;
        int claimedFrom = 0;
        lock (_lock)
        {
            if (sender != _main)
            {
                // A claim: a generation this process knows names itself the main one, because
                // the main one died before it handed over (or after it handed over to one that
                // then died, and rolled back). Taken only once the main one is gone.
                bool claim = lines.Contains(MainPidLine(sender)) && (_generations.Contains(sender) || _successors.ContainsKey(sender));
                if (!claim)
                {
                    Log.NotificationIgnored(_log, sender, _main);
                    return;
                }

                if (!_mainGone && GenerationProcess.IsRunning(_main))
                {
                    if (!_claims.Contains(sender))
                    {
                        _claims.Add(sender);
                    }

                    Log.ClaimPending(_log, sender, _main);
                    return;
                }

                claimedFrom = _main;
                BecomeMainLocked(sender);
            }

            foreach (string line in lines)
            {
                if (line.StartsWith(SystemdConstants.MainPid, StringComparison.Ordinal))
                {
                    if (int.TryParse(line.AsSpan(SystemdConstants.MainPid.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0 && pid != _main)
                    {
                        bool running = GenerationProcess.IsRunning(pid);
                        if (!running && !(_announced.TryGetValue(pid, out int by) && by == sender))
                        {
                            // As systemd does: a main pid that has exited would be followed
                            // to nowhere (the next upgrade signal lost, a phantom at stop).
                            Log.MainPidRefused(_log, pid, sender);
                            continue;
                        }

                        // One this process was told of and that has exited is followed all the
                        // same: read late (this process was stopped), its own MAINPID= for the
                        // generation after it may be next in the queue, or the sender's claim
                        // back after a rollback.
                        Log.MainChanged(_log, pid, sender);
                        BecomeMainLocked(pid);
                    }
                }
                else if (line.StartsWith(SystemdConstants.Successor, StringComparison.Ordinal))
                {
                    if (int.TryParse(line.AsSpan(SystemdConstants.Successor.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0 && pid != sender)
                    {
                        _announced[pid] = sender;
                        if (Exists(pid))
                        {
                            // Running, or a zombie the reaper will find: not reaped yet.
                            _successors[pid] = sender;
                        }

                        Log.SuccessorStarted(_log, sender, pid);
                    }
                }
                else if (line == SystemdConstants.Ready)
                {
                    becameReady = !_ready;
                    _ready = true;
                    upstream.Add(line);
                }
                else if (line.StartsWith(SystemdConstants.Status, StringComparison.Ordinal) ||
                         line.StartsWith(SystemdConstants.MonotonicUsec, StringComparison.Ordinal) ||
                         line is SystemdConstants.Reloading or SystemdConstants.Stopping or SystemdConstants.Watchdog)
                {
                    upstream.Add(line);
                }

                // BARRIER=1 needs nothing: its descriptor was closed on receipt, after every
                // earlier message had been handled.
            }
        }

        if (claimedFrom != 0)
        {
            Log.MainClaimed(_log, sender, claimedFrom);
        }

        if (becameReady)
        {
            Log.Ready(_log, sender);
        }

        if (upstream.Count > 0)
        {
            // This process stays the service's main process: never MAINPID= upwards.
            _upstream.Notify([.. upstream]);
        }
    }

    // Not reaped yet (running or a zombie): the reaper will see it exit.
    private static bool Exists(int pid) => GenerationProcess.Current(pid) is not null;

    private static string MainPidLine(int pid) => string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.MainPid}{pid}");

    private void BecomeMainLocked(int pid)
    {
        _main = pid;
        _successors.Remove(pid);
        _claims.Clear();
        if (!Exists(pid))
        {
            // Reaped already: nothing left to wait for; the next claim or MAINPID= takes over.
            _mainGone = true;
            return;
        }

        _mainGone = false;
        _generations.Add(pid);
        if (_stopping && _stopSignalled.Add(pid))
        {
            // The stop signal reached the generations before this one was among them: it gets
            // it now.
            Log.ForwardingLate(_log, pid);
            _ = Interop.Libc.Kill(pid, _stopSignal);
        }
    }

    private void OnStopSignal(PosixSignalContext context)
    {
        // This process ends when its generations have: it must not die first (as PID 1 that
        // would kill them all at once), so the default action is cancelled.
        context.Cancel = true;
        int signal = context.Signal switch
        {
            PosixSignal.SIGTERM => Interop.Libc.SIGTERM,
            PosixSignal.SIGINT => 2,
            _ => 3,
        };
        int[] pids;
        lock (_lock)
        {
            // Kept for a generation that becomes main later: one past the point of no return
            // of an upgrade (its rollback window) takes over even from a stopping generation.
            _stopSignal = signal;
            _stopping = true;

            // Never twice to one process: a generation that has finished its shutdown no longer
            // handles the signal, and its default action would turn its exit code into 143. (A
            // second stop signal to the supervisor reaches only generations that had none yet.)
            // A new generation whose parent still runs is stopped by that parent (its upgrade
            // ends); one whose parent died has nobody else to stop it.
            pids = [.. _generations.Concat(_successors.Where(s => !GenerationProcess.IsRunning(s.Value)).Select(s => s.Key)).Where(_stopSignalled.Add)];
        }

        Log.Forwarding(_log, UpgradeSignalNames.Format(context.Signal), string.Join(", ", pids));
        foreach (int pid in pids)
        {
            _ = Interop.Libc.Kill(pid, signal);
        }
    }

    private void OnUpgradeSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        int main;
        bool ready;
        bool mainGone;
        lock (_lock)
        {
            main = _main;
            ready = _ready;
            mainGone = _mainGone;
        }

        if (!ready || _stopping || mainGone)
        {
            string why = _stopping ? "this supervisor is stopping"
                : mainGone ? $"the main generation, pid {main}, has exited and the new one has not taken over yet"
                : "generation 1 is not ready yet";
            Log.UpgradeIgnored(_log, UpgradeSignalNames.Format(context.Signal), why);
            return;
        }

        Log.Upgrading(_log, UpgradeSignalNames.Format(context.Signal), main, UpgradeSignalNames.Format(_options.UpgradeSignal));
        _ = Interop.Libc.Kill(main, UpgradeSignalNames.ToNumber(_options.UpgradeSignal));
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Started generation 1 as pid {Pid}: {Command}.", EventName = "Started")]
        public static partial void Started(ILogger logger, int pid, string command);

        [LoggerMessage(2, LogLevel.Information, "Generation 1 (pid {Pid}) is ready.", EventName = "Ready")]
        public static partial void Ready(ILogger logger, int pid);

        [LoggerMessage(3, LogLevel.Information, "Pid {Pid} is the main generation now (handed over by pid {Sender}).", EventName = "MainChanged")]
        public static partial void MainChanged(ILogger logger, int pid, int sender);

        [LoggerMessage(EventId = 4, Message = "The main generation, pid {Pid}, {How}; {Left} other generations still running.", EventName = "MainExited")]
        public static partial void MainExited(ILogger logger, LogLevel level, int pid, string how, int left);

        [LoggerMessage(5, LogLevel.Information, "Generation pid {Pid} {How}; {Left} generations still running.", EventName = "GenerationExited")]
        public static partial void GenerationExited(ILogger logger, int pid, string how, int left);

        [LoggerMessage(6, LogLevel.Debug, "Reaped pid {Pid}, which {How}.", EventName = "ReapedOrphan")]
        public static partial void ReapedOrphan(ILogger logger, int pid, string how);

        [LoggerMessage(7, LogLevel.Information, "Every generation is gone; exiting with code {ExitCode}, the last main generation's.", EventName = "AllGone")]
        public static partial void AllGone(ILogger logger, int exitCode);

        [LoggerMessage(8, LogLevel.Information, "Received {Signal}; passing it to every generation (pids {Pids}).", EventName = "Forwarding")]
        public static partial void Forwarding(ILogger logger, string signal, string pids);

        [LoggerMessage(9, LogLevel.Warning, "Received {Signal}, but no generation can upgrade now ({Why}); ignored.", EventName = "UpgradeIgnored")]
        public static partial void UpgradeIgnored(ILogger logger, string signal, string why);

        [LoggerMessage(10, LogLevel.Information, "Received {Signal}; asking the main generation (pid {Pid}) to upgrade with {UpgradeSignal}.", EventName = "Upgrading")]
        public static partial void Upgrading(ILogger logger, string signal, int pid, string upgradeSignal);

        [LoggerMessage(11, LogLevel.Debug, "Ignored a notification from pid {Sender}, which is not the main generation (pid {Main}).", EventName = "NotificationIgnored")]
        public static partial void NotificationIgnored(ILogger logger, int sender, int main);

        [LoggerMessage(12, LogLevel.Warning, "Reading a notification failed: {Error}", EventName = "NotificationFailed")]
        public static partial void NotificationFailed(ILogger logger, string error);

        [LoggerMessage(14, LogLevel.Information, "No generation is left; stopping the processes they left behind (pids {Pids}): SIGTERM now, SIGKILL in {Seconds} s.", EventName = "EndingRemaining")]
        public static partial void EndingRemaining(ILogger logger, string pids, double seconds);

        [LoggerMessage(15, LogLevel.Information, "Shadow copy: generation 1 runs from {Copy}, a copy of {Source}; each upgrade copies {Source} again, so files changed there in place never touch a running generation.", EventName = "ShadowCopy")]
        public static partial void ShadowCopy(ILogger logger, string source, string copy);

        [LoggerMessage(16, LogLevel.Information, "Pid {Pid} became the main generation after the stop signal was passed on; passing it to pid {Pid} too.", EventName = "ForwardingLate")]
        public static partial void ForwardingLate(ILogger logger, int pid);

        [LoggerMessage(17, LogLevel.Debug, "The main generation (pid {Sender}) started pid {Pid} as its new generation.", EventName = "SuccessorStarted")]
        public static partial void SuccessorStarted(ILogger logger, int sender, int pid);

        [LoggerMessage(18, LogLevel.Warning, "Pid {Pid} is the main generation now: it claimed the main pid after pid {Previous} exited without handing it over.", EventName = "MainClaimed")]
        public static partial void MainClaimed(ILogger logger, int pid, int previous);

        [LoggerMessage(19, LogLevel.Information, "Pid {Pid} claims the main pid while the main generation (pid {Main}) still runs; it takes over if pid {Main} exits first.", EventName = "ClaimPending")]
        public static partial void ClaimPending(ILogger logger, int pid, int main);

        [LoggerMessage(20, LogLevel.Warning, "The main generation (pid {Pid}) exited before its new generation took over; waiting for pids {Successors} to claim the main pid (they keep serving).", EventName = "AwaitingSuccessor")]
        public static partial void AwaitingSuccessor(ILogger logger, int pid, string successors);

        [LoggerMessage(21, LogLevel.Warning, "Pid {Sender} named pid {Pid} the main generation, but pid {Pid} has exited; the main generation stays pid {Sender}.", EventName = "MainPidRefused")]
        public static partial void MainPidRefused(ILogger logger, int pid, int sender);

        [LoggerMessage(13, LogLevel.Warning, "{Warning}", EventName = "SystemdWarning")]
        public static partial void SystemdWarning(ILogger logger, string warning);
    }
}

/// <summary>What <c>handoff run</c> was told.</summary>
internal sealed record SupervisorOptions(IReadOnlyList<string> Command, string? ControlSocket, PosixSignal UpgradeSignal, string? ShadowCopyParent = null);
