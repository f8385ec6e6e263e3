namespace Handoff;

/// <summary>
/// The new generation's end of the handover: reads <see cref="HandoverEnvironment"/>,
/// authenticates every inherited descriptor, and takes ownership of them. A first generation
/// (no variable) inherits nothing.
/// </summary>
internal sealed class Inheritance
{
    private Inheritance(int generation, int parentPid, bool parentAlive, IReadOnlyList<Listener> listeners, ReadyPipe? readyPipe, IReadOnlyList<GenerationProcess> older)
    {
        Older = older;
        Generation = generation;
        ParentPid = parentPid;
        ParentAlive = parentAlive;
        Listeners = listeners;
        ReadyPipe = readyPipe;
    }

    /// <summary>This process's generation number: 1 for a first start.</summary>
    public int Generation { get; }

    /// <summary>The pid of the generation that started this one, or 0 for a first start.</summary>
    public int ParentPid { get; }

    /// <summary>False when the parent had died before this process checked it: nobody waits
    /// for the ready report, and this generation writes the pid file itself.</summary>
    public bool ParentAlive { get; }

    public IReadOnlyList<Listener> Listeners { get; }

    /// <summary>Where to report ready to the parent, or null for a first start.</summary>
    public ReadyPipe? ReadyPipe { get; }

    /// <summary>When Handoff's first code ran in this process and when it had taken this over
    /// (<see cref="System.Diagnostics.Stopwatch"/> timestamps, set by <see cref="EarlyStart"/>;
    /// zero in tests), for the ready report.</summary>
    public (long StartedAt, long AdoptedAt) Moments { get; internal set; }

    /// <summary>Whether the generation that started this one still runs (by pid and start time,
    /// so a recycled pid does not count; getppid() does not tell when this one was started
    /// detached).</summary>
    public bool IsParentRunning() =>
        ParentPid != 0 && (Older.FirstOrDefault(g => g.Pid == ParentPid) is { Pid: > 0, StartTime: > 0 } parent ? parent.IsAlive() : Interop.Libc.GetParentPid() == ParentPid);

    /// <summary>The older generations, the parent first, that may still be draining.</summary>
    public IReadOnlyList<GenerationProcess> Older { get; }

    public static Inheritance None { get; } = new(1, 0, false, [], null, []);

    /// <summary>The new generation's end of the move channel (<see cref="Handoff.MoveChannel"/>),
    /// or -1 when the previous generation sent none (an older build, a first start) or named one
    /// that is not what it says.</summary>
    public int MoveChannel { get => Volatile.Read(ref _moveChannel); private init => _moveChannel = value; }

    private int _moveChannel = -1;

    /// <summary>Set when <see cref="TakeMoveChannel()"/> gave the channel to its reader (the
    /// ASP.NET Core adoption, or a raw server's connection drain) before the ready report, which
    /// then tells the previous generation that connections may move here.</summary>
    public bool AcceptsMoves { get; set; }

    /// <summary>The WebSocket endpoints this generation resumes (set by ASP.NET Core's mapping
    /// before the ready report, which names them to the previous generation).</summary>
    public IReadOnlyCollection<string> Resumes { get; set; } = [];

    /// <summary>Gives <see cref="MoveChannel"/> to its one reader, which owns it from now on, and
    /// notes that this generation accepts moved connections; -1 when there is none or another
    /// reader took it (two readers would each get half of every frame).</summary>
    public int TakeMoveChannel()
    {
        int fd = Interlocked.Exchange(ref _moveChannel, -1);
        if (fd >= 0)
        {
            AcceptsMoves = true;
        }

        return fd;
    }

    // The channel named by HANDOFF_MOVES, when the descriptor is the socket it names: kept out
    // of any process this one starts. Anything else is ignored (nothing moves here then).
    private static int TakeMoveChannel(string? moves, Func<int, string?> readLink)
    {
        if (Handoff.MoveChannel.Parse(moves) is not var (fd, inode) || readLink(fd) != $"socket:[{inode}]")
        {
            return -1;
        }

        Interop.Libc.SetCloseOnExec(fd, true);
        return fd;
    }

    /// <summary>A first generation, serving on the sockets systemd created for it (socket
    /// activation) if any. Each is checked to be a listening TCP or Unix stream socket and gets
    /// FD_CLOEXEC; one that is not is left alone with a warning in <paramref name="warnings"/>.</summary>
    public static Inheritance FirstStart(IReadOnlyList<(int Fd, string Name)> activated, List<string> warnings)
    {
        if (activated.Count == 0)
        {
            return None;
        }

        var listeners = new List<Listener>();
        foreach (var (fd, name) in activated)
        {
            string source = $"Activated fd {fd} (LISTEN_FDS, name '{name}')";
            try
            {
                Interop.Libc.SetCloseOnExec(fd, true);
                listeners.Add(new Listener(fd, Listener.CheckListening(fd, source), inherited: true, activated: true));
            }
            catch (Exception e) when (e is HandoffProtocolException or IOException)
            {
                warnings.Add($"{e.Message} Handoff serves only listening TCP and Unix stream sockets (ListenStream= with Accept=no); it leaves this one alone.");
            }
        }

        return new Inheritance(1, 0, false, listeners, null, []);
    }

    // For testing: a new generation without listeners, with a ready pipe to a live parent if
    // one is given.
    internal static Inheritance ForTesting(int generation, int parentPid, IReadOnlyList<GenerationProcess> older, ReadyPipe? readyPipe = null) =>
        new(generation, parentPid, parentAlive: readyPipe is not null, [], readyPipe, older);

    /// <summary>
    /// Takes over what the previous generation handed to this process. Nothing is touched
    /// before every descriptor the variable names is shown to be the socket or pipe the
    /// previous generation handed over (same inode).
    /// </summary>
    /// <param name="value">The variable's value, or null for a first start.</param>
    /// <param name="actualParentPid">getppid().</param>
    /// <param name="readLink">Reads /proc/self/fd/N (a seam for tests).</param>
    /// <param name="moves">The value of <see cref="MoveChannel.VariableName"/>, if set.</param>
    /// <exception cref="HandoffProtocolException">The handover is malformed, forged or stale;
    /// the parent has been told why when its ready pipe was authentic.</exception>
    public static Inheritance Load(string? value, int actualParentPid, Func<int, string?>? readLink = null, string? moves = null)
    {
        if (value is null)
        {
            return None;
        }

        var handover = HandoverEnvironment.Parse(value);
        readLink ??= ProcFs.SelfFd;
        foreach (var (fd, expected) in handover.ExpectedLinks())
        {
            string? actual = readLink(fd);
            if (actual != expected)
            {
                throw new HandoffProtocolException(
                    $"fd {fd} named in the environment variable {HandoverEnvironment.VariableName} is {(actual is null ? "not open" : $"'{actual}'")}, not the '{expected}' the previous generation handed over: the variable is stale (copied into a process it was not meant for) or forged. No descriptor was touched. Remove {HandoverEnvironment.VariableName} from the environment to start a first generation.");
            }
        }

        // Authentic: from here on the descriptors are this process's. First of all keep them out
        // of any process this one starts (dotnet/aspnetcore#29189 is this leak in UseSystemd).
        foreach (int fd in handover.ListenFds.Append(handover.ReadyFd))
        {
            Interop.Libc.SetCloseOnExec(fd, true);
        }

        var readyPipe = new ReadyPipe(handover.ReadyFd);
        if (handover.Detached && !readyPipe.ReportPid(Environment.ProcessId))
        {
            // Not this process's child: the old generation cannot stop it, so it stops itself.
            throw new HandoffProtocolException($"the previous generation (pid {handover.ParentPid}) no longer waits for this one (its Handoff:UpgradeTimeout passed, or it is gone); this process was started detached and must not serve.");
        }

        try
        {
            var listeners = handover.ListenFds.Select(fd => new Listener(fd, Listener.CheckListening(fd, $"Inherited fd {fd} (named in {HandoverEnvironment.VariableName})"), inherited: true, activated: handover.ActivatedFds.Contains(fd))).ToList();
            // Started detached, this process's parent is systemd, not the old generation; that
            // one read the pid report just now, so it lives.
            bool parentAlive = handover.Detached || handover.ParentPid == actualParentPid;
            return new Inheritance(handover.Generation, handover.ParentPid, parentAlive, listeners, readyPipe, handover.Older)
            {
                MoveChannel = TakeMoveChannel(moves, readLink),
            };
        }
        catch (HandoffProtocolException e)
        {
            readyPipe.ReportFailed(e.Message);
            throw;
        }
    }
}
