using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>
/// The listening sockets of this generation: those inherited from the previous generation and
/// those bound here. <see cref="Listen"/> is the one way a server gets a listener, so every
/// listener is known and handed to the next generation.
/// </summary>
public sealed partial class ListenerRegistry
{
    // The backlog Kestrel uses too; the kernel caps it at net.core.somaxconn.
    private const int Backlog = 512;

    private readonly Lock _gate = new();
    private readonly List<Listener> _unclaimed;
    private readonly List<Listener> _inherited;
    private readonly List<Listener> _claimed = [];
    private readonly ILogger _logger;
    private Listener? _control;

    internal ListenerRegistry(IEnumerable<Listener> inherited, AcceptGate gate, ILogger logger)
    {
        _unclaimed = [.. inherited];
        _inherited = [.. _unclaimed];
        Gate = gate;
        _logger = logger;
        foreach (var listener in _unclaimed)
        {
            listener.Gate = gate;
        }
    }

    /// <summary>Whether this generation accepts connections on its listeners.</summary>
    internal AcceptGate Gate { get; }

    /// <summary>The listeners in use, in the order they were claimed: the order in which they
    /// are handed to the next generation.</summary>
    public IReadOnlyList<Listener> Listeners
    {
        get
        {
            lock (_gate)
            {
                return [.. _claimed.Where(l => !l.IsClosed)];
            }
        }
    }

    /// <summary>
    /// Returns the listener for <paramref name="endPoint"/>: the inherited socket bound to that
    /// address if there is one, otherwise a newly bound and listening socket. A port of 0 is
    /// satisfied by an inherited socket on the same address, so a server started on a dynamic
    /// port keeps it across upgrades.
    /// </summary>
    /// <exception cref="NotSupportedException">The address is not TCP or a Unix socket path.</exception>
    /// <exception cref="SocketException">Binding a new socket failed (e.g. address in use).</exception>
    public Listener Listen(EndPoint endPoint)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        if (!ListenerAddress.IsSupported(endPoint))
        {
            throw new NotSupportedException($"Handoff can hand over TCP and Unix domain sockets only, not {endPoint.GetType().Name} '{endPoint}'.");
        }

        lock (_gate)
        {
            if (_control is not null && ListenerAddress.Satisfies(_control.EndPoint, endPoint))
            {
                throw new InvalidOperationException($"{ListenerAddress.Format(endPoint)} is Handoff's control socket ({HandoffOptions.SectionName}:{nameof(HandoffOptions.ControlSocket)}); give the server another address.");
            }

            return ListenLocked(endPoint, unixMode: null);
        }
    }

    /// <summary>The control socket (<see cref="HandoffOptions.ControlSocket"/>): the inherited
    /// one at <paramref name="path"/>, or a new one, created with mode 0600 before it listens,
    /// so that no other user can connect in between. Handed over like every listener.</summary>
    internal Listener ListenControl(string path)
    {
        lock (_gate)
        {
            _control = ListenLocked(new UnixDomainSocketEndPoint(path), UnixFileMode.UserRead | UnixFileMode.UserWrite);
            return _control;
        }
    }

    /// <summary>The control socket, or null.</summary>
    internal Listener? Control
    {
        get
        {
            lock (_gate)
            {
                return _control;
            }
        }
    }

    private Listener ListenLocked(EndPoint endPoint, UnixFileMode? unixMode)
    {
        var inherited = FindInherited(endPoint);
        bool occupied = false;
        if (inherited?.EndPoint is UnixDomainSocketEndPoint unix)
        {
            // As a client's connect(2) sees the path: through a symlink to the live socket, it
            // still reaches the inherited one.
            int? type = Interop.Libc.FileType(unix.ToString(), followLinks: true);
            if (type is not null && type != Interop.Libc.S_IFSOCK)
            {
                // Somebody put a file or directory there: binding is impossible (EADDRINUSE)
                // and deleting it would destroy their data. Serving the inherited socket, which
                // nobody reaches by the path until it is cleared, loses less than failing
                // every upgrade from now on.
                Log.UnixPathOccupied(_logger, unix.ToString(), inherited.FileDescriptor, type == Interop.Libc.S_IFDIR ? "a directory" : "a file");
                occupied = true;
            }
            else if (type is null || IsStaleUnixSocket(unix))
            {
                // Someone deleted (or replaced) the path: nobody can connect to the inherited
                // socket any more. (A socket file nobody listens on is not the inherited socket,
                // which listens: it was left by a process that bound the path after it was
                // deleted.) Bind a new one there; the inherited one is closed at ready.
                Log.UnixPathGone(_logger, unix.ToString(), inherited.FileDescriptor);
                inherited = null;
            }
        }

        if (inherited is not null)
        {
            if (unixMode is { } mode && !occupied)
            {
                // Whatever became of the file's mode meanwhile, it is private again.
                Interop.Libc.Chmod(inherited.EndPoint.ToString()!, mode);
            }

            _unclaimed.Remove(inherited);
            _claimed.Add(inherited);
            Log.ListenerAdopted(_logger, ListenerAddress.Format(inherited.EndPoint), inherited.FileDescriptor);
            return inherited;
        }

        var bound = Bind(endPoint, unixMode);
        bound.Gate = Gate;
        _claimed.Add(bound);
        if (unixMode is null)
        {
            Log.ListenerBound(_logger, ListenerAddress.Format(bound.EndPoint), bound.FileDescriptor);
        }
        else
        {
            Log.ControlBound(_logger, bound.EndPoint.ToString()!, bound.FileDescriptor);
        }
        return bound;
    }

    /// <summary>The sockets systemd created (socket activation) that no address has claimed
    /// yet, in descriptor order.</summary>
    internal IReadOnlyList<Listener> UnclaimedActivated
    {
        get
        {
            lock (_gate)
            {
                return [.. _unclaimed.Where(l => l.IsActivated)];
            }
        }
    }

    /// <summary>Claims the inherited or activated socket at descriptor <paramref name="fd"/>
    /// for a server that asks for it by descriptor rather than by address. Returns null when an
    /// address claimed it already (the server serves it through that address).</summary>
    /// <exception cref="ArgumentException">No inherited socket has that descriptor.</exception>
    internal Listener? ClaimDescriptor(int fd)
    {
        lock (_gate)
        {
            if (_claimed.Any(l => l.FileDescriptor == fd))
            {
                return null;
            }

            var listener = _unclaimed.FirstOrDefault(l => l.FileDescriptor == fd)
                ?? throw new ArgumentException($"fd {fd} is not a socket this generation inherited or was given by systemd.", nameof(fd));
            _unclaimed.Remove(listener);
            _claimed.Add(listener);
            Log.ListenerAdopted(_logger, ListenerAddress.Format(listener.EndPoint), fd);
            return listener;
        }
    }

    /// <summary>Closes the inherited sockets that no configured address asked for, so an
    /// address removed from the configuration stops being served. Internal, as the other
    /// closes: <see cref="Upgrader.ReadyAsync"/> and the handover decide when.</summary>
    internal async ValueTask CloseUnclaimedAsync() => await CloseUnclaimedReleasingAsync().ConfigureAwait(false);

    /// <summary><see cref="CloseUnclaimedAsync"/>; returns the positions, in the handover, of
    /// the inherited sockets closed (not those systemd activated): the previous generation
    /// serves them until it commits (<see cref="ReadyPipe.ReleasedPrefix"/>).</summary>
    internal async ValueTask<IReadOnlyList<int>> CloseUnclaimedReleasingAsync()
    {
        var released = new List<int>();
        Listener[] unclaimed;
        lock (_gate)
        {
            unclaimed = [.. _unclaimed];
            _unclaimed.Clear();
        }

        foreach (var listener in unclaimed)
        {
            if (listener.IsActivated)
            {
                // systemd keeps the socket and queues connections that nobody will accept.
                Log.ActivatedUnclaimed(_logger, ListenerAddress.Format(listener.EndPoint), listener.FileDescriptor);
            }
            else
            {
                Log.ListenerUnclaimed(_logger, ListenerAddress.Format(listener.EndPoint), listener.FileDescriptor);
                released.Add(_inherited.IndexOf(listener));
            }

            await listener.CloseAsync().ConfigureAwait(false);
        }

        return released;
    }

    /// <summary>
    /// Takes back a listener that the server let go of while this generation goes on, as
    /// Kestrel does when a configuration reload rebinds an endpoint (a replaced certificate,
    /// say): the socket stays open with the connections queued on it, and the next
    /// <see cref="Listen"/> for its address gets it back, so the endpoint is never unbound and
    /// never bound again. One that no address claims within <paramref name="grace"/> (the
    /// endpoint was removed) is closed then.
    /// </summary>
    internal void Release(Listener listener, TimeSpan grace)
    {
        lock (_gate)
        {
            if (listener.IsClosed || !_claimed.Remove(listener))
            {
                return;
            }

            _unclaimed.Add(listener);
        }

        Log.ListenerReleased(_logger, ListenerAddress.Format(listener.EndPoint), listener.FileDescriptor, grace.TotalSeconds);
        _ = CloseIfUnclaimedAsync(listener, grace);
    }

    /// <summary>A listener for <paramref name="endPoint"/> that this generation let go of
    /// (<see cref="Release"/>) or inherited and has not claimed, or null: never a new socket.
    /// For a generation that drains, which must not bind an address a newer one serves.</summary>
    internal Listener? Reclaim(EndPoint endPoint)
    {
        lock (_gate)
        {
            var found = FindInherited(endPoint);
            if (found is not null)
            {
                _unclaimed.Remove(found);
                _claimed.Add(found);
            }

            return found;
        }
    }

    private async Task CloseIfUnclaimedAsync(Listener listener, TimeSpan grace)
    {
        await Task.Delay(grace).ConfigureAwait(false);
        lock (_gate)
        {
            if (!_unclaimed.Remove(listener))
            {
                return;
            }
        }

        Log.ReleasedUnclaimed(_logger, ListenerAddress.Format(listener.EndPoint), listener.FileDescriptor, grace.TotalSeconds);
        await listener.CloseAsync().ConfigureAwait(false);

        // A removed Unix endpoint leaves no socket file behind (unless another process, a newer
        // generation, still accepts on it).
        if (listener.EndPoint is UnixDomainSocketEndPoint unix && !listener.IsActivated)
        {
            RemoveIfStale(unix.ToString()!);
        }
    }

    /// <summary>Stops accepting on every listener in this process (see
    /// <see cref="Listener.CloseAsync"/>). A newer generation holding the same sockets keeps
    /// accepting on them. Internal: only the <see cref="Upgrader"/> knows when no generation
    /// needs them any more (a user's <c>await using</c> would close them under it).</summary>
    internal async ValueTask CloseAllAsync()
    {
        Listener[] all;
        lock (_gate)
        {
            all = [.. _claimed, .. _unclaimed];
            _unclaimed.Clear();
        }

        foreach (var listener in all)
        {
            await listener.CloseAsync().ConfigureAwait(false);
        }
    }

    /// <summary>For tests' <c>await using</c>: <see cref="CloseAllAsync"/>.</summary>
    internal ValueTask DisposeAsync() => CloseAllAsync();

    /// <summary>After the final stop: removes the paths of Unix socket listeners that nobody
    /// accepts on any more (a newer generation would still accept on them), so a stopped
    /// service leaves no socket file behind.</summary>
    internal void RemoveUnixSocketPaths()
    {
        List<string> paths;
        lock (_gate)
        {
            // An activated socket's path belongs to systemd, which keeps listening on it.
            paths = [.. _claimed.Where(l => !l.IsActivated).Select(l => l.EndPoint).OfType<UnixDomainSocketEndPoint>().Select(e => e.ToString())];
        }

        foreach (string path in paths)
        {
            RemoveIfStale(path);
        }
    }

    private void RemoveIfStale(string path)
    {
        try
        {
            if (IsStaleUnixSocket(new UnixDomainSocketEndPoint(path)))
            {
                File.Delete(path);
                Log.UnixPathRemoved(_logger, path);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SocketException)
        {
            Log.UnixPathNotRemoved(_logger, path, e.Message);
        }
    }

    // Inherited listeners arrive in the order the previous generation claimed them, and a
    // server asks for its addresses in the same order each start, so a port-0 request meets
    // the socket it had before.
    private Listener? FindInherited(EndPoint requested) =>
        _unclaimed.FirstOrDefault(candidate => ListenerAddress.Satisfies(candidate.EndPoint, requested));

    private static Listener Bind(EndPoint endPoint, UnixFileMode? unixMode)
    {
        // Never set SocketOptionName.ReuseAddress: on Linux .NET turns it into SO_REUSEPORT as
        // well, which lets a second process bind the same port and silently split the traffic.
        using var creator = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);

        // Handoff keeps its own copy of the descriptor, and binds it with libc rather than
        // Socket.Bind: a Socket that bound a Unix path unlinks it when disposed, even when it
        // does not own the descriptor, which would take the path away from the generation that
        // serves on it next.
        int fd = Interop.Libc.DuplicateCloseOnExec((int)creator.Handle, 3);
        try
        {
            using (var options = new Socket(new SafeSocketHandle(fd, ownsHandle: false)))
            {
                if (endPoint is IPEndPoint ip && ip.Address.Equals(IPAddress.IPv6Any))
                {
                    // Kestrel's meaning of [::]: IPv6 and IPv4 on one socket.
                    options.DualMode = true;
                }

                // What .NET does in Socket.Bind on Unix for TCP: SO_REUSEADDR (only that, unlike
                // the ReuseAddress option), so a restart does not wait for TIME_WAIT to pass.
                if (endPoint is IPEndPoint)
                {
                    options.SetRawSocketOption(Interop.Libc.SOL_SOCKET, Interop.Libc.SO_REUSEADDR, BitConverter.GetBytes(1));
                }
            }

            BindRemovingStaleUnixPath(fd, endPoint);
            if (unixMode is { } mode)
            {
                // Before listen(2): until then every connect is refused.
                Interop.Libc.Chmod(endPoint.ToString()!, mode);
            }

            Interop.Libc.Listen(fd, Backlog);
            return new Listener(fd, Listener.CheckListening(fd, $"The socket bound for {ListenerAddress.Format(endPoint)} (fd {fd})"), inherited: false);
        }
        catch
        {
            Interop.Libc.Close(fd);
            throw;
        }
    }

    private static void BindRemovingStaleUnixPath(int fd, EndPoint endPoint)
    {
        try
        {
            Interop.Libc.Bind(fd, endPoint.Serialize());
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse &&
                                         endPoint is UnixDomainSocketEndPoint unix &&
                                         IsStaleUnixSocket(unix))
        {
            // A socket file left by a process that is gone: nobody accepts on it, so it is
            // safe to replace. A live one (a connect succeeds) is reported as in use.
            File.Delete(unix.ToString());
            Interop.Libc.Bind(fd, endPoint.Serialize());
        }
    }

    internal static bool IsStaleUnixSocket(UnixDomainSocketEndPoint endPoint)
    {
        // Only a socket file can be stale; any other file at the path is somebody's data.
        if (Interop.Libc.FileType(endPoint.ToString()) != Interop.Libc.S_IFSOCK)
        {
            return false;
        }

        // Non-blocking: a listener whose queue is full answers EAGAIN instead of holding the
        // probe; only a refusal means that nobody listens.
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { Blocking = false };
        try
        {
            probe.Connect(endPoint);
            return false;
        }
        catch (SocketException e)
        {
            return e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Adopted inherited listener {Address} (fd {Fd}).", EventName = "ListenerAdopted")]
        public static partial void ListenerAdopted(ILogger logger, string address, int fd);

        [LoggerMessage(2, LogLevel.Information, "Bound new listener {Address} (fd {Fd}).", EventName = "ListenerBound")]
        public static partial void ListenerBound(ILogger logger, string address, int fd);

        [LoggerMessage(8, LogLevel.Information, "Bound the control socket {Path} (fd {Fd}, mode 0600).", EventName = "ControlBound")]
        public static partial void ControlBound(ILogger logger, string path, int fd);

        [LoggerMessage(4, LogLevel.Warning, "The Unix socket path {Path} of inherited listener fd {Fd} was deleted or replaced; binding a new socket there.", EventName = "UnixPathGone")]
        public static partial void UnixPathGone(ILogger logger, string path, int fd);

        [LoggerMessage(14, LogLevel.Warning, "The Unix socket path {Path} of inherited listener fd {Fd} is now {What}, not the socket: somebody replaced it. This generation keeps serving the inherited socket, but nobody can connect to it by that path; remove what is there, and the next generation binds the socket at the path again.", EventName = "UnixPathOccupied")]
        public static partial void UnixPathOccupied(ILogger logger, string path, int fd, string what);

        [LoggerMessage(5, LogLevel.Information, "Removed the Unix socket path {Path}: nobody accepts on it any more.", EventName = "UnixPathRemoved")]
        public static partial void UnixPathRemoved(ILogger logger, string path);

        [LoggerMessage(6, LogLevel.Warning, "Could not remove the Unix socket path {Path}: {Error}.", EventName = "UnixPathNotRemoved")]
        public static partial void UnixPathNotRemoved(ILogger logger, string path, string error);

        [LoggerMessage(7, LogLevel.Warning, "The socket systemd passed for {Address} (fd {Fd}, socket activation) matches no configured address and is not served; connections to it wait in systemd's queue. Configure that address, or configure none to serve every activated socket.", EventName = "ActivatedUnclaimed")]
        public static partial void ActivatedUnclaimed(ILogger logger, string address, int fd);

        [LoggerMessage(3, LogLevel.Information, "Closing inherited listener {Address} (fd {Fd}): no configured address asks for it.", EventName = "ListenerUnclaimed")]
        public static partial void ListenerUnclaimed(ILogger logger, string address, int fd);

        [LoggerMessage(13, LogLevel.Information, "Closing listener {Address} (fd {Fd}): no endpoint asked for it within {GraceSeconds} s of a configuration reload (it was removed).", EventName = "ReleasedUnclaimed")]
        public static partial void ReleasedUnclaimed(ILogger logger, string address, int fd, double graceSeconds);

        [LoggerMessage(9, LogLevel.Information, "Listener {Address} (fd {Fd}) was let go by the server (a configuration reload): it stays open, with its queued connections, for the endpoint that replaces it ({GraceSeconds} s).", EventName = "ListenerReleased")]
        public static partial void ListenerReleased(ILogger logger, string address, int fd, double graceSeconds);
    }
}
