using System.Collections.Concurrent;

namespace Handoff;

/// <summary>
/// Where a generation that hands over sends the connections that move: the move channel to the
/// new generation (<see cref="MoveChannel"/>), written by a thread of its own, one connection at
/// a time, and the count of what moved and what could not.
/// </summary>
/// <remarks>
/// A send blocks while the new generation does not read (a Unix socket holds a few hundred
/// frames), so it never runs on the thread pool: connections that wait to be sent would take
/// every pool thread, and the pool would stop running anything else, the disposal of the
/// connections already sent included.
/// </remarks>
internal sealed class MoveTarget : IDisposable
{
    // How long one send may wait for the new generation to read: a generation that is stopped
    // or hung would otherwise keep connections waiting here until the drain timeout. Past it
    // the channel counts as broken, and the connections not sent yet close as they would
    // without moving.
    private static readonly TimeSpan SendLimit = TimeSpan.FromSeconds(2);

    // How long the new generation may take to answer once everything went: it adopts what it
    // has received first (microseconds each), or sends it on to a newer generation.
    private static readonly TimeSpan AnswerLimit = TimeSpan.FromSeconds(5);

    private const int MaxDetached = 64;

    private readonly TaskCompletionSource _completed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Connections detached and not yet sent, each holding a descriptor more: the channel takes
    // a few hundred frames at a time anyway, and one thread sends.
    private readonly SemaphoreSlim _detached = new(MaxDetached);

    private readonly int _channel;
    private readonly BlockingCollection<Outgoing> _queue = [];
    private readonly Lock _sending = new();
    private IReadOnlyDictionary<(int Fd, ulong Inode), EpollRegistration>? _registrations;
    private Thread? _sender;
    private int _moved;
    private int _notMoved;
    private int _ineligible;
    private int _asked;
    private int _failed;
    private volatile bool _broken;
    private bool _closed;

    public MoveTarget(int channel, IReadOnlySet<string>? resumes = null)
    {
        _channel = channel;
        Resumes = resumes ?? new HashSet<string>();
        try
        {
            Interop.Libc.SetSendTimeout(channel, SendLimit);
        }
        catch (IOException)
        {
            _broken = true; // Not a socket this process can use: nothing moves.
        }
    }

    /// <summary>The WebSocket endpoints the new generation resumes: only their WebSockets are
    /// sent (<see cref="MoveKind.WebSocket"/>).</summary>
    public IReadOnlySet<string> Resumes { get; }

    /// <summary>True once a send failed: the new generation no longer receives, nothing more is
    /// sent (each connection then closes as it would without moving).</summary>
    public bool IsBroken => _broken;

    /// <summary>True while connections can still be sent: not broken, not closed.</summary>
    public bool IsOpen
    {
        get
        {
            lock (_sending)
            {
                return !_broken && !_closed;
            }
        }
    }

    public int Moved => Volatile.Read(ref _moved);

    public int NotMoved => Volatile.Read(ref _notMoved);

    /// <summary>Connections that could not move at all (TLS, HTTP/2, no request served yet),
    /// drained as before.</summary>
    public int Ineligible => Volatile.Read(ref _ineligible);

    /// <summary>The same counts by kind, outcome (moved, closed, drained) and reason.</summary>
    public ConnectionTally Tally { get; } = new();

    /// <summary>Counts connections that could not move at all, drained (a WebSocket: closed
    /// with 1012) as before; <paramref name="reason"/> as in <see cref="ConnectionTally.Add"/>.</summary>
    public void CountIneligible(int count = 1, MoveKind kind = MoveKind.Http1, string? reason = null)
    {
        Interlocked.Add(ref _ineligible, count);
        Tally.Add(kind, "drained", reason, count);
    }

    /// <summary>
    /// Detaches connected socket <paramref name="fd"/> from this process's socket engine
    /// (<see cref="ConnectionDetach"/>) once there is room among the connections detached and
    /// not yet sent, and returns the connection's new descriptor; -1 when it cannot be detached
    /// (nothing changed: the connection stays its owner's, to close as before). After a
    /// descriptor was returned, send it, close it and call <see cref="Exit"/>.
    /// </summary>
    /// <param name="fd">The connection's descriptor number.</param>
    /// <param name="expectedInode">When given, the socket the number must still name: a number
    /// its owner closed meanwhile may name another socket by now, which is left alone.</param>
    public async Task<int> DetachAsync(int fd, ulong? expectedInode = null)
    {
        // A detached connection holds a descriptor more until it is sent; a few at a time, so
        // that a generation near its descriptor limit does not run out (10,000 connections under
        // a limit of 12,048 lost 221 here).
        await _detached.WaitAsync().ConfigureAwait(false);
        int connection;
        try
        {
            // The inode once: it finds the registration and tells this socket from an earlier one.
            ulong inode = ProcFs.SelfInode(fd);
            connection = expectedInode is { } expected && expected != inode ? -1 : ConnectionDetach.Detach(fd, inode, Registrations(fd, inode));
        }
        catch (IOException)
        {
            connection = -1; // Out of descriptors, say: nothing changed.
        }

        if (connection < 0)
        {
            _detached.Release();
        }

        return connection;
    }

    /// <summary>A connection <see cref="DetachAsync"/> returned was sent or closed.</summary>
    public void Exit() => _detached.Release();

    /// <summary>Connections whose move failed unexpectedly (closed instead), and the first
    /// error, for the drain's log line.</summary>
    public int Failed => Volatile.Read(ref _failed);

    public string? FirstError { get; private set; }

    public void CountFailed(Exception error, MoveKind kind = MoveKind.Http1)
    {
        Tally.Add(kind, "closed", "failed");
        if (Interlocked.Increment(ref _failed) == 1)
        {
            FirstError = $"{error.GetType().Name}: {error.Message}";
        }
    }

    /// <summary>Connections asked to move (each then moves, or closes counted in <see cref="NotMoved"/>).</summary>
    public int Asked => Volatile.Read(ref _asked);

    public void CountAsked() => Interlocked.Increment(ref _asked);

    /// <summary>This process's epoll registrations, read once for every connection that moves
    /// (reading them is linear in the open descriptors), and again when one is not in them
    /// (a connection accepted since).</summary>
    private IReadOnlyDictionary<(int Fd, ulong Inode), EpollRegistration> Registrations(int fd, ulong inode)
    {
        var known = Volatile.Read(ref _registrations);
        if (known is null || !known.ContainsKey((fd, inode)))
        {
            known = ProcFs.SelfEpollRegistrations();
            Volatile.Write(ref _registrations, known);
        }

        return known;
    }

    /// <summary>Sends one detached connection on the sending thread; true once it went, false
    /// when the channel is broken or closed. The caller still owns <paramref name="fd"/> and
    /// closes it once this completes, either way.</summary>
    public Task<bool> SendAsync(int fd, ulong listenerInode, byte[] bytes, MoveKind kind = MoveKind.Http1, byte[]? state = null)
    {
        var outgoing = new Outgoing(fd, listenerInode, bytes, kind, state ?? []);
        lock (_sending)
        {
            if (_broken || _closed)
            {
                return Task.FromResult(false);
            }

            _sender ??= StartSender();
            _queue.Add(outgoing);
        }

        return outgoing.Done.Task;
    }

    /// <summary>Sends on a connection this generation received and never served (moved here
    /// while it hands over too), then closes this process's descriptor for it; false (counted
    /// as not moved) when it could not go.</summary>
    public async Task<bool> PassOnAsync(MovedConnection moved)
    {
        bool sent = await SendAsync(moved.Fd, moved.ListenerInode, moved.Bytes, moved.Kind, moved.State).ConfigureAwait(false);
        if (!sent)
        {
            // A WebSocket's client must hear of it; an idle HTTP/1.1 connection's sees the end.
            if (moved.Kind == MoveKind.WebSocket)
            {
                WebSocketRestart.Write(moved.Fd);
            }

            CountNotMoved(moved.Kind, NotSent);
        }

        Interop.Libc.Close(moved.Fd);

        return sent;
    }

    private Thread StartSender()
    {
        var thread = new Thread(Send) { IsBackground = true, Name = "Handoff moving connections" };
        thread.Start();
        return thread;
    }

    private void Send()
    {
        foreach (var outgoing in _queue.GetConsumingEnumerable())
        {
            bool sent = false;
            if (!_broken)
            {
                try
                {
                    MoveChannel.Send(_channel, outgoing.Fd, outgoing.Kind, outgoing.ListenerInode, outgoing.Bytes, outgoing.State);
                    Interlocked.Increment(ref _moved);
                    Tally.Add(outgoing.Kind, "moved");
                    sent = true;
                }
                catch (IOException)
                {
                    // The new generation is gone, or read nothing for SendLimit.
                    _broken = true;
                }
            }

            outgoing.Done.TrySetResult(sent);
        }

        // Everything went: the new generation reads the end of the channel and answers with
        // what it took and what it closed. A new generation that died answers nothing (end of
        // file at once); one that hangs, nothing within the bound.
        if (!_broken && Interop.Libc.ShutdownWrite(_channel) == 0)
        {
            try
            {
                Interop.Libc.SetReceiveTimeout(_channel, AnswerLimit);
                Confirmed = MoveChannel.ReadTotals(_channel);
            }
            catch (IOException)
            {
                // No answer: the counts stay what was sent.
            }
        }

        Interop.Libc.Close(_channel);
        _completed.TrySetResult();
    }

    /// <summary>The new generation's answer once everything went: how many connections it took
    /// and how many it closed; null before, or when it did not answer.</summary>
    public (int Taken, int Closed)? Confirmed { get; private set; }

    /// <summary>Completes once the channel is closed (after <see cref="Dispose"/>), with
    /// <see cref="Confirmed"/> read if it came.</summary>
    public Task Completion => _completed.Task;

    /// <summary>The reason of a connection the channel did not take (the new generation died,
    /// stopped reading, or the channel closed).</summary>
    public const string NotSent = "not_sent";

    /// <summary>Counts a connection that was to move and closed instead;
    /// <paramref name="reason"/> as in <see cref="ConnectionTally.Add"/>.</summary>
    public void CountNotMoved(MoveKind kind = MoveKind.Http1, string reason = "other")
    {
        Interlocked.Increment(ref _notMoved);
        Tally.Add(kind, "closed", reason);
    }

    /// <summary>Closes the channel once what is queued has gone (<see cref="Completion"/>): the
    /// new generation has all it will get.</summary>
    public void Dispose()
    {
        lock (_sending)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            _queue.CompleteAdding();
            if (_sender is null)
            {
                // Nothing was sent: nothing to confirm.
                Interop.Libc.Close(_channel);
                _completed.TrySetResult();
            }
        }
    }

    private sealed record Outgoing(int Fd, ulong ListenerInode, byte[] Bytes, MoveKind Kind, byte[] State)
    {
        public TaskCompletionSource<bool> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
