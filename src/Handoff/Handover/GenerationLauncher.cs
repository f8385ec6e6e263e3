using System.Runtime.InteropServices;

namespace Handoff;

/// <summary>
/// Starts a new generation with <c>posix_spawn</c>, placing the listeners at descriptors 3, 4,
/// ... and the ready pipe after them. .NET's <see cref="System.Diagnostics.Process"/> cannot do
/// this: it passes on every descriptor without FD_CLOEXEC, in whatever numbers they have, to
/// every process any thread starts (dotnet/runtime#13943). Here the listeners keep FD_CLOEXEC
/// in this process all along; only the spawned child gets copies without it.
/// </summary>
internal sealed class GenerationLauncher(SystemdEnvironment? systemd = null) : IGenerationLauncher
{
    /// <summary>util-linux's setsid, whose <c>--fork</c> starts a program in a child and exits
    /// at once: the program's parent becomes the service manager (see <see cref="Start"/>).</summary>
    internal static readonly string? Setsid = new[] { "/usr/bin/setsid", "/bin/setsid" }.FirstOrDefault(IsUtilLinuxSetsid);

    /// <summary>Whether <paramref name="path"/> is util-linux's setsid, which knows
    /// <c>--fork</c>. BusyBox's (Alpine images) is a link to the busybox binary and does not:
    /// every upgrade through it would fail, so it counts as no setsid.</summary>
    internal static bool IsUtilLinuxSetsid(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }

        try
        {
            string? target = new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.Name;
            return target is null || !target.Contains("busybox", StringComparison.OrdinalIgnoreCase);
        }
        catch (IOException)
        {
            return false;
        }
    }

    private readonly SystemdEnvironment _systemd = systemd ?? SystemdEnvironment.None;

    /// <summary>True once nobody receives at the notification socket (set by the
    /// <see cref="Upgrader"/> from its <see cref="ServiceNotifier"/>).</summary>
    internal Func<bool> ServiceManagerGone { get; set; } = static () => false;

    /// <summary>
    /// Under systemd the new generation is started detached, through <c>setsid --fork</c>: its
    /// parent is then systemd itself (orphans go to PID 1, or to the user manager), so when it
    /// becomes the main process systemd sees it as its own child. Otherwise systemd 252 marks it
    /// "not our child": it would not notice its death while the old generation lives, and would
    /// not wait for it at a stop. The detached generation reports its pid first thing.
    /// </summary>
    public IStartedGeneration Start(string executable, StartCommand command, IReadOnlyList<Listener> listeners, int generation, IReadOnlyList<GenerationProcess> older, IReadOnlyList<int> blockedSignals, TimeSpan timeout, CancellationToken cancellationToken)
    {
        // Once the service manager is gone, the new generation is not told of it either.
        var systemd = ServiceManagerGone() ? SystemdEnvironment.None : _systemd;
        bool detached = systemd.NotifySocket is not null && Setsid is not null;
        var (readyRead, readyWrite) = Interop.Libc.CreatePipe();
        var (moves, childMoves) = Interop.Libc.StreamSocketPair();
        var sources = new List<int>();
        StartedGeneration started;
        ulong pipeInode = 0;
        try
        {
            // Copies above every target number, so that placing copy i at 3+i can never
            // overwrite a copy still to be placed. They keep FD_CLOEXEC and vanish at exec.
            int firstFree = HandoverEnvironment.FirstFd + listeners.Count + 1;
            foreach (var listener in listeners)
            {
                int fd = listener.FileDescriptor;
                if (fd < 0)
                {
                    throw new InvalidOperationException($"Listener {listener} was closed while an upgrade started.");
                }

                sources.Add(Interop.Libc.DuplicateCloseOnExec(fd, firstFree));
            }

            sources.Add(Interop.Libc.DuplicateCloseOnExec(readyWrite, firstFree));
            pipeInode = ProcFs.SelfInode(readyWrite);
            var handover = HandoverEnvironment.ForChild(Environment.ProcessId, generation, [.. sources.Select(ProcFs.SelfInode)], older, [.. listeners.Select(l => l.IsActivated)], detached);

            // The move channel's other end, right after the ready pipe, named by a variable of
            // its own (an older build ignores it; see MoveChannel.VariableName).
            int movesFd = HandoverEnvironment.FirstFd + sources.Count;
            sources.Add(Interop.Libc.DuplicateCloseOnExec(childMoves, firstFree));
            var environment = ChildEnvironment(command, handover, systemd);
            environment.Add($"{MoveChannel.VariableName}={MoveChannel.Format(movesFd, ProcFs.SelfInode(childMoves))}");
            started = detached
                ? StartedGeneration.Detached(Spawn(Setsid!, ["setsid", "--fork", executable, .. command.Arguments.Skip(1)], environment, command.WorkingDirectory, sources, blockedSignals), readyRead)
                : new StartedGeneration(Spawn(executable, command.Arguments, environment, command.WorkingDirectory, sources, blockedSignals), readyRead);
        }
        catch
        {
            Interop.Libc.Close(readyRead);
            Interop.Libc.Close(moves);
            throw;
        }
        finally
        {
            // The child has its own copies now; the parent must hold no write end, or it would
            // never see end-of-file when the child dies.
            Interop.Libc.Close(readyWrite);
            Interop.Libc.Close(childMoves);
            foreach (int fd in sources)
            {
                Interop.Libc.Close(fd);
            }
        }

        started.MoveChannel = moves;
        if (detached)
        {
            try
            {
                // Throws (and closes the pipe, so that a late new generation stops itself) when
                // no pid comes.
                started.AwaitPid(timeout, pipeInode, cancellationToken);
            }
            catch
            {
                Interop.Libc.Close(started.TakeMoveChannel());
                throw;
            }
        }

        return started;
    }

    /// <summary>The start environment, plus the handover, the startup hook that adopts it before
    /// <c>Main</c>, <c>PWD</c> naming the directory the child starts in (as a shell sets it), and
    /// what it needs to notify systemd.</summary>
    internal static List<string> ChildEnvironment(StartCommand command, HandoverEnvironment handover, SystemdEnvironment? systemd = null)
    {
        var environment = command.Environment
            .Where(e => e.Key is not (HandoverEnvironment.VariableName or MoveChannel.VariableName or "PWD" or EarlyStart.StartupHooksVariable
                or SystemdConstants.NotifySocket or SystemdConstants.WatchdogUsec or SystemdConstants.WatchdogPid
                or SystemdConstants.ListenPid or SystemdConstants.ListenFds or SystemdConstants.ListenFdNames))
            .Select(e => $"{e.Key}={e.Value}")
            .ToList();
        string? hooks = command.Environment.FirstOrDefault(e => e.Key == EarlyStart.StartupHooksVariable).Value;
        environment.Add($"{EarlyStart.StartupHooksVariable}={EarlyStart.StartupHookEntry}{(string.IsNullOrEmpty(hooks) ? "" : Path.PathSeparator + hooks)}");
        environment.Add($"PWD={command.WorkingDirectory}");
        environment.Add($"{HandoverEnvironment.VariableName}={handover.Format()}");
        environment.AddRange(systemd?.ForNewGeneration() ?? []);
        return environment;
    }

    internal static unsafe int Spawn(string executable, IReadOnlyList<string> argv, IReadOnlyList<string> environment, string workingDirectory, List<int> sources, IReadOnlyList<int> blockedSignals)
    {
        byte* fileActions = stackalloc byte[Interop.Libc.SpawnFileActionsSize];
        byte* attributes = stackalloc byte[Interop.Libc.SpawnAttributesSize];
        byte* blockedSet = stackalloc byte[Interop.Libc.SignalSetSize];
        byte* defaultSet = stackalloc byte[Interop.Libc.SignalSetSize];
        var strings = new List<nint>();
        Check(Interop.Libc.PosixSpawnFileActionsInit(fileActions), "posix_spawn_file_actions_init");
        Check(Interop.Libc.PosixSpawnAttrInit(attributes), "posix_spawnattr_init");
        try
        {
            for (int i = 0; i < sources.Count; i++)
            {
                // dup2 onto a different number clears FD_CLOEXEC on the new descriptor.
                Check(Interop.Libc.PosixSpawnFileActionsAddDup2(fileActions, sources[i], HandoverEnvironment.FirstFd + i), "posix_spawn_file_actions_adddup2");
            }

            // Exactly stdin, stdout, stderr and the handed descriptors: whatever else this process
            // inherited without FD_CLOEXEC (from a shell, a supervisor) ends here.
            Check(Interop.Libc.PosixSpawnFileActionsAddCloseFrom(fileActions, HandoverEnvironment.FirstFd + sources.Count), "posix_spawn_file_actions_addclosefrom_np");
            Check(Interop.Libc.PosixSpawnFileActionsAddChdir(fileActions, Utf8(workingDirectory, strings)), "posix_spawn_file_actions_addchdir_np");

            // The runtime blocks and handles signals for itself, and ignores SIGPIPE; a new
            // program starts with default dispositions and only the upgrade signals blocked:
            // one sent to the whole process group must not kill it before its handlers exist
            // (its startup hook installs them and unblocks these).
            Check(Interop.Libc.SigEmptySet(blockedSet), "sigemptyset");
            foreach (int signal in blockedSignals)
            {
                Check(Interop.Libc.SigAddSet(blockedSet, signal), "sigaddset");
            }

            Check(Interop.Libc.SigEmptySet(defaultSet), "sigemptyset");
            for (int signal = 1; signal < 32; signal++)
            {
                if (signal is not (9 or 19))
                {
                    Check(Interop.Libc.SigAddSet(defaultSet, signal), "sigaddset");
                }
            }

            Check(Interop.Libc.PosixSpawnAttrSetSigMask(attributes, blockedSet), "posix_spawnattr_setsigmask");
            Check(Interop.Libc.PosixSpawnAttrSetSigDefault(attributes, defaultSet), "posix_spawnattr_setsigdefault");
            Check(Interop.Libc.PosixSpawnAttrSetFlags(attributes, Interop.Libc.POSIX_SPAWN_SETSIGMASK | Interop.Libc.POSIX_SPAWN_SETSIGDEF), "posix_spawnattr_setflags");

            byte** argvArray = NullTerminated(argv, strings);
            byte** envArray = NullTerminated(environment, strings);
            int error = Interop.Libc.PosixSpawn(out int pid, Utf8(executable, strings), fileActions, attributes, argvArray, envArray);
            if (error != 0)
            {
                throw new IOException($"posix_spawn of '{executable}' in '{workingDirectory}' failed: {Marshal.GetPInvokeErrorMessage(error)} (errno {error})", error);
            }

            return pid;
        }
        finally
        {
            _ = Interop.Libc.PosixSpawnFileActionsDestroy(fileActions);
            _ = Interop.Libc.PosixSpawnAttrDestroy(attributes);
            foreach (nint p in strings)
            {
                Marshal.FreeCoTaskMem(p);
            }
        }
    }

    private static unsafe byte* Utf8(string value, List<nint> allocations)
    {
        nint p = Marshal.StringToCoTaskMemUTF8(value);
        allocations.Add(p);
        return (byte*)p;
    }

    private static unsafe byte** NullTerminated(IReadOnlyList<string> values, List<nint> allocations)
    {
        nint array = Marshal.AllocCoTaskMem((values.Count + 1) * sizeof(nint));
        allocations.Add(array);
        var items = (byte**)array;
        for (int i = 0; i < values.Count; i++)
        {
            items[i] = Utf8(values[i], allocations);
        }

        items[values.Count] = null;
        return items;
    }

    private static void Check(int error, string call)
    {
        if (error != 0)
        {
            throw new IOException($"{call} failed: {Marshal.GetPInvokeErrorMessage(error)} (errno {error})", error);
        }
    }
}
