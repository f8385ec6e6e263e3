namespace Handoff.AspNetCore;

/// <summary>
/// Paces a drain's closes of idle connections by the accept queue their clients reconnect to:
/// a tick closes no more of a listener's connections than would fill its queue to half, so
/// the clients of closed connections never find it full (the kernel would drop their SYNs, and
/// each would wait a second for its SYN to be sent again). The seam for tests.
/// </summary>
internal interface IAcceptQueuePacing : IDisposable
{
    /// <summary>Reads the queues for the coming tick; false when they cannot be read (the
    /// tick then paces by time alone).</summary>
    bool Refresh();

    /// <summary>Takes one close from the room left in the queue that the clients of
    /// <paramref name="owner"/>'s connections reconnect to; false when none is left this tick.
    /// True when that queue is unknown (a Unix socket, a socket no longer open anywhere).</summary>
    bool TryTake(object? owner);

    /// <summary>The first queue found half full or more this drain (the new generation fell
    /// behind), for the log; null if none was.</summary>
    (string Address, AcceptQueue Queue)? FirstHeldBack { get; }

    /// <summary>Why the queues could not be read, once they could not; for the log.</summary>
    string? Error { get; }
}

/// <summary>The accept queues of the listeners' sockets, read from the kernel.</summary>
internal sealed class AcceptQueuePacing : IAcceptQueuePacing
{
    private readonly Dictionary<uint, AcceptQueue> _queues = [];
    private readonly Dictionary<uint, int> _room = []; // by socket inode: owners may share a socket
    private AcceptQueues? _reader;
    private bool _unavailable;

    public string? Error { get; private set; }

    public (string Address, AcceptQueue Queue)? FirstHeldBack { get; private set; }

    public bool Refresh()
    {
        _room.Clear();
        if (_unavailable)
        {
            return false;
        }

        string? error = null;
        _reader ??= AcceptQueues.TryOpen(out error);
        if (_reader is null || !_reader.TryRead(_queues, out error))
        {
            // Not again this drain: the drain paces by time, as it would without this.
            _unavailable = true;
            Error = error;
            return false;
        }

        return true;
    }

    public bool TryTake(object? owner) =>
        owner is not HandoffConnectionListener handoff || TryTake(handoff, handoff.Listener);

    /// <summary><see cref="TryTake(object?)"/> for the connections of <paramref name="owner"/>,
    /// which accepts from <paramref name="listener"/>.</summary>
    internal bool TryTake(object owner, Listener listener)
    {
        if (listener.SocketInode is not { } inode || !_queues.TryGetValue(inode, out var queue))
        {
            return true;
        }

        if (!_room.TryGetValue(inode, out int room))
        {
            room = (queue.Capacity / 2) - queue.Queued;
        }

        if (room <= 0)
        {
            _room[inode] = 0;
            if (queue.Queued >= queue.Capacity / 2)
            {
                // The queue itself, not this tick's own closes, holds them back: the new
                // generation accepts more slowly than clients come.
                FirstHeldBack ??= (ListenerAddress.Format(listener.EndPoint), queue);
            }

            return false;
        }

        _room[inode] = room - 1;
        return true;
    }

    public void Dispose()
    {
        _reader?.Dispose();
        _reader = null;
    }
}
