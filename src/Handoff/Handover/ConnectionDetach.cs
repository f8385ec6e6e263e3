namespace Handoff;

/// <summary>
/// Takes a connected socket away from the .NET socket engine of this process without closing or
/// shutting it down, so that another process can serve the same connection.
/// </summary>
/// <remarks>
/// <para>A socket owned by a <see cref="System.Net.Sockets.Socket"/> cannot simply be let go: its
/// owner (Kestrel's socket transport, an application's read loop) may have a receive pending in
/// the engine, which would take the next bytes the client sends away from the new owner, and
/// closing it the usual way sends the client a FIN (Kestrel calls <c>shutdown()</c>, which acts on
/// the connection, not on this process's descriptor).</para>
/// <para>So the descriptor's number is made to refer to something else. <see cref="Detach"/>
/// duplicates the connection to a new number (which goes to the new owner), then, atomically
/// (dup3), points the old number at one end of a Unix socket pair whose other end is closed: any
/// receive there returns end of file, any send fails, <c>shutdown()</c> and <c>close()</c> touch
/// nothing that matters. A receive already waiting in the engine waits for an epoll event of the
/// old number: the connection's own registration is removed (before, while the number still
/// names the connection) and the stand-in is registered under the same number with the same
/// data (the engine finds its context by that data, which .NET sets to the descriptor number),
/// and since it is at end of file the event comes at once: the pending receive completes with end
/// of file. A receive that had already taken bytes before the switch hands them to its owner
/// first (Kestrel: into the transport pipe, then end of file), so whoever reads the old owner's
/// input to its end has every byte the process ever took from the connection, and the new owner
/// reads the rest from the socket. No byte is read twice or lost, and the client sees nothing.</para>
/// <para>It depends on the engine registering each socket in an epoll instance with the
/// descriptor number as data, as .NET's <c>SocketAsyncEngine</c> does on Linux. When no such
/// registration is found (a socket the engine never saw, another engine), nothing is changed and
/// <see cref="Detach"/> returns -1: the caller closes or drains the connection as before.</para>
/// </remarks>
internal static class ConnectionDetach
{
    /// <summary>
    /// Detaches connected socket <paramref name="fd"/> (see the remarks) and returns a new
    /// descriptor for the connection (FD_CLOEXEC set), or -1 when the socket is not registered
    /// with an epoll engine the way this needs (nothing was changed then). Afterwards
    /// <paramref name="fd"/> refers to the stand-in, and is closed by whoever owned it.
    /// </summary>
    /// <param name="fd">The descriptor of a connected stream socket owned by a .NET <c>Socket</c>.</param>
    /// <param name="inode">The socket's inode (<see cref="ProcFs.SelfInode"/>), which tells it
    /// from an earlier socket that had the same number.</param>
    /// <param name="registrations">This process's epoll registrations
    /// (<see cref="ProcFs.SelfEpollRegistrations"/>), read once for many connections.</param>
    public static int Detach(int fd, ulong inode, IReadOnlyDictionary<(int Fd, ulong Inode), EpollRegistration> registrations)
    {
        if (!registrations.TryGetValue((fd, inode), out var engine))
        {
            return -1;
        }

        int connection = Interop.Libc.DuplicateCloseOnExec(fd, 3);
        int standIn = -1;
        bool removed = false;
        try
        {
            var (first, second) = Interop.Libc.StreamSocketPair();
            standIn = first;
            Interop.Libc.Close(second);

            int error = Interop.Libc.EpollControl(engine.EpollFd, Interop.Libc.EPOLL_CTL_DEL, fd, 0, 0);
            if (error != 0)
            {
                throw new IOException($"epoll_ctl(DEL) of fd {fd} failed (errno {error}).");
            }

            removed = true;
            Interop.Libc.Dup3(standIn, fd);
        }
        catch
        {
            // Nothing happened to the connection: its registration goes back as it was.
            if (removed)
            {
                _ = Interop.Libc.EpollControl(engine.EpollFd, Interop.Libc.EPOLL_CTL_ADD, fd, engine.Events, engine.Data);
            }

            if (standIn >= 0)
            {
                Interop.Libc.Close(standIn);
            }

            Interop.Libc.Close(connection);
            throw;
        }

        Interop.Libc.Close(standIn);

        // The stand-in under the old number and data: it is at end of file, so the engine gets an
        // event for it at once and completes what waits there. Should this fail, a receive
        // waiting there stays waiting until its owner disposes the socket; it can take nothing
        // from the connection either way.
        _ = Interop.Libc.EpollControl(engine.EpollFd, Interop.Libc.EPOLL_CTL_ADD, fd, engine.Events, engine.Data);
        return connection;
    }
}
