namespace Handoff.AspNetCore;

/// <summary>
/// Where a generation that hands over sends the connections that move: the move channel to the
/// new generation (<see cref="MoveChannel"/>), written by one connection at a time, and the
/// count of what moved and what could not.
/// </summary>
internal sealed class MoveTarget(int channel) : IDisposable
{
    private readonly Lock _sending = new();
    private IReadOnlyDictionary<(int Fd, ulong Inode), EpollRegistration>? _registrations;
    private int _moved;
    private int _notMoved;
    private int _ineligible;
    private volatile bool _broken;
    private bool _closed;

    /// <summary>True once a send failed: the new generation no longer receives, nothing more is
    /// sent (each connection then closes as it would without moving).</summary>
    public bool IsBroken => _broken;

    public int Moved => Volatile.Read(ref _moved);

    public int NotMoved => Volatile.Read(ref _notMoved);

    /// <summary>Connections that could not move at all (TLS, HTTP/2, no request served yet),
    /// drained as before.</summary>
    public int Ineligible => Volatile.Read(ref _ineligible);

    public void CountIneligible() => Interlocked.Increment(ref _ineligible);

    /// <summary>This process's epoll registrations, read once for every connection that moves
    /// (reading them is linear in the open descriptors), and again when one is not in them
    /// (a connection accepted since).</summary>
    public IReadOnlyDictionary<(int Fd, ulong Inode), EpollRegistration> Registrations(int fd)
    {
        var known = Volatile.Read(ref _registrations);
        if (known is null || !known.ContainsKey((fd, ProcFs.SelfInode(fd))))
        {
            known = ProcFs.SelfEpollRegistrations();
            Volatile.Write(ref _registrations, known);
        }

        return known;
    }

    /// <summary>Sends one detached connection; false when the channel is broken (the caller
    /// closes it).</summary>
    public bool TrySend(int fd, ulong listenerInode, ReadOnlySpan<byte> bytes)
    {
        lock (_sending)
        {
            if (_broken)
            {
                return false;
            }

            try
            {
                MoveChannel.Send(channel, fd, MoveKind.Http1, listenerInode, bytes, []);
                Interlocked.Increment(ref _moved);
                return true;
            }
            catch (IOException)
            {
                _broken = true;
                return false;
            }
        }
    }

    /// <summary>Counts a connection that was to move and closed instead.</summary>
    public void CountNotMoved() => Interlocked.Increment(ref _notMoved);

    /// <summary>Closes the channel: the new generation has all it will get.</summary>
    public void Dispose()
    {
        lock (_sending)
        {
            if (!_closed)
            {
                _closed = true;
                _broken = true;
                Interop.Libc.Close(channel);
            }
        }
    }
}
