using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>
/// The connections of a raw <see cref="Socket"/> server, counted so that a generation can finish
/// them before it exits, as Go's gracehttp wraps its listener and connections with a WaitGroup:
/// accept through <see cref="AcceptAsync"/>, dispose each <see cref="CountedConnection"/> when
/// it is done, and when the generation stops accepting (superseded, or SIGTERM) call
/// <see cref="DrainAsync"/>.
/// </summary>
/// <remarks>
/// <para><see cref="Draining"/> (also on every connection) fires when the drain starts: a protocol
/// that can say goodbye (finish the current message, then close) does so then; one that cannot
/// keeps serving until the client leaves or <see cref="DrainAsync"/>'s timeout aborts the
/// connection.</para>
/// <para>Made with the generation's <see cref="Upgrader"/>, a drain can also move its connections
/// to the new generation instead (<see cref="HandoffOptions.MoveConnections"/>): at a point the
/// application chooses, <see cref="CountedConnection.MoveAsync"/> hands the connected socket over
/// with a state of the application's own, and the new generation's drain returns it from
/// <see cref="AcceptAsync"/> with <see cref="CountedConnection.MovedState"/> set. The client sees
/// nothing: the same TCP connection, served by the new process.</para>
/// </remarks>
public sealed class ConnectionDrain : IDisposable
{
    private readonly Lock _lock = new();
    private readonly HashSet<CountedConnection> _connections = [];
    private readonly CancellationTokenSource _draining = new();
    private readonly Upgrader? _upgrader;
    private readonly MoveReceiver? _receiver;
    private readonly Dictionary<ulong, Inbox> _inboxes = [];
    private TaskCompletionSource? _empty;
    private MoveTarget? _target;
    private bool _drainStarted;
    private bool _disposed;
    private int _moved;

    /// <summary>A drain that counts connections and drains them (none moves).</summary>
    public ConnectionDrain()
    {
    }

    /// <summary>
    /// A drain whose connections may move to the new generation at an upgrade, and which
    /// receives those the previous generation moves here. Make it before
    /// <see cref="Upgrader.ReadyAsync"/>: the ready report tells the previous generation whether
    /// anything here takes moved connections.
    /// </summary>
    /// <param name="upgrader">This generation's upgrader.</param>
    public ConnectionDrain(Upgrader upgrader)
    {
        ArgumentNullException.ThrowIfNull(upgrader);
        _upgrader = upgrader;
        if (upgrader.Inheritance.TakeMoveChannel() is >= 0 and var channel)
        {
            _receiver = new MoveReceiver(upgrader.LoggerFactory.CreateLogger<ConnectionDrain>(), upgrader.Metrics, Receive);
            upgrader.MoveReceiver = _receiver;
            _receiver.Start(channel);
            _ = _receiver.Ended.ContinueWith(_ => EndInboxes(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    /// <summary>The connections open now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _connections.Count;
            }
        }
    }

    /// <summary>Cancelled when <see cref="DrainAsync"/> starts.</summary>
    public CancellationToken Draining => _draining.Token;

    /// <summary>
    /// Accepts the next connection on <paramref name="listener"/> (only while this generation
    /// accepts, see <see cref="Listener.AcceptAsync"/>) and tracks it until it is disposed.
    /// Returns null once the listener is closed.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    /// <remarks>While the previous generation moves its connections here, those it moved from
    /// <paramref name="listener"/>'s socket come from here too, before the next accepted one,
    /// with <see cref="CountedConnection.MovedState"/> set. Call it from one loop per listener.</remarks>
    public async ValueTask<CountedConnection?> AcceptAsync(Listener listener, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(listener);
        ulong? inode = listener.SocketInode;
        if (_receiver is not null && inode is { } key && InboxFor(key) is { } inbox)
        {
            return await inbox.AcceptAsync(this, listener, key, cancellationToken).ConfigureAwait(false);
        }

        return await listener.AcceptAsync(cancellationToken).ConfigureAwait(false) is { } socket
            ? Track(new CountedConnection(socket, this, inode, movedState: null))
            : null;
    }

    private CountedConnection Track(CountedConnection connection)
    {
        lock (_lock)
        {
            _connections.Add(connection);
        }

        return connection;
    }

    /// <summary>
    /// Fires <see cref="Draining"/>, waits until every connection has been disposed or
    /// <paramref name="timeout"/> has passed, and aborts (resets) the connections still open
    /// then. Call it after the generation stopped accepting (<see cref="Upgrader.StopAsync"/>).
    /// </summary>
    /// <returns>How many connections that were open when the drain started finished by
    /// themselves, and how many were aborted.</returns>
    /// <remarks>When this generation was superseded by one that takes moved connections (the
    /// drain was made with the <see cref="Upgrader"/>), <see cref="CountedConnection.MoveAsync"/>
    /// moves connections from when <see cref="Draining"/> fires until the drain ends, and the
    /// result counts them in <see cref="DrainResult.Moved"/>.</remarks>
    public async Task<DrainResult> DrainAsync(TimeSpan timeout)
    {
        Task empty;
        int open;
        List<MovedConnection> stranded;
        MoveTarget? target = null;
        if (_upgrader?.TakeMoveChannel() is >= 0 and var channel)
        {
            target = new MoveTarget(channel);
        }

        lock (_lock)
        {
            _target ??= target;
            _drainStarted = true;
            stranded = [.. _inboxes.Values.SelectMany(inbox => inbox.TakeAll())];
            open = _connections.Count;
            _empty ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (open == 0)
            {
                _empty.TrySetResult();
            }

            empty = _empty.Task;
        }

        // Moved here while this generation handed over, before the application took them:
        // they go on to the new generation, or close as an idle connection would.
        foreach (var waiting in stranded)
        {
            if (target is null)
            {
                Interop.Libc.Close(waiting.Fd);
            }
            else
            {
                await target.PassOnAsync(waiting).ConfigureAwait(false);
            }
        }

        long started = Environment.TickCount64;
        await _draining.CancelAsync().ConfigureAwait(false);
        int aborted = 0;
        try
        {
            await empty.WaitAsync(timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // What is left never finished: abort it. A connection being moved right now is not
            // aborted: its move ends within the channel's send limit, and it is then the new
            // generation's, or closed.
            CountedConnection[] left;
            lock (_lock)
            {
                left = [.. _connections];
            }

            aborted = left.Count(connection => connection.Abort());
            await empty.WaitAsync(MovingLimit).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        if (target is not null)
        {
            try
            {
                // Every move has been sent (a connection that moves is disposed once it went).
                // A previous generation may still be moving connections here (a second upgrade
                // came during its move): they go on through this target, which stays open until
                // that channel ends, within what is left of the timeout. Then the new generation
                // has all it will get, and answers with what it took.
                if (_receiver is not null)
                {
                    var left = timeout - TimeSpan.FromMilliseconds(Environment.TickCount64 - started);
                    await _receiver.Ended.WaitAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                }
            }
            finally
            {
                target.Dispose();
            }

            await target.Completion.ConfigureAwait(false);
        }

        int moved = Volatile.Read(ref _moved);
        int finished = Math.Max(0, open - aborted - moved);
        if (target is not null)
        {
            target.Tally.Add(MoveKind.Tcp, "drained", count: finished + aborted);
            _upgrader?.Metrics.ConnectionsHandedOver(target.Tally);
        }

        return new DrainResult(finished, aborted) { Moved = moved };
    }

    // How long the drain waits, after aborting what was left at its timeout, for connections
    // that were being moved then: each send waits at most MoveTarget's send limit.
    private static readonly TimeSpan MovingLimit = TimeSpan.FromSeconds(5);

    /// <inheritdoc />
    public void Dispose()
    {
        _draining.Dispose();
        _receiver?.Dispose();
        List<MovedConnection> stranded;
        List<Inbox> inboxes;
        lock (_lock)
        {
            // A connection that arrives from now on is closed (Receive).
            _disposed = true;
            inboxes = [.. _inboxes.Values];
            stranded = [.. inboxes.SelectMany(inbox => inbox.TakeAll())];
        }

        foreach (var moved in stranded)
        {
            Interop.Libc.Close(moved.Fd);
        }

        foreach (var inbox in inboxes)
        {
            inbox.Dispose();
        }
    }

    /// <summary>Where a connection moves, once this generation drains towards a new one that
    /// takes moved connections; null otherwise.</summary>
    internal MoveTarget? Target
    {
        get
        {
            lock (_lock)
            {
                return _target;
            }
        }
    }

    internal void CountMoved() => Interlocked.Increment(ref _moved);

    private Inbox? InboxFor(ulong inode)
    {
        lock (_lock)
        {
            // Once nothing more comes and none waits for this listener: accept as without moves.
            return _inboxes.ContainsKey(inode) || !_receiver!.Ended.IsCompleted ? InboxLocked(inode) : null;
        }
    }

    private Inbox InboxLocked(ulong inode)
    {
        if (!_inboxes.TryGetValue(inode, out var inbox))
        {
            _inboxes[inode] = inbox = new Inbox();
        }

        return inbox;
    }

    // On the receiving thread: a connection the previous generation moved here.
    private MoveOutcome Receive(MovedConnection moved)
    {
        string? refused = moved.Kind != MoveKind.Tcp ? $"a {moved.Kind} connection, which a raw server's drain does not serve"
            : !_upgrader!.Listeners.Listeners.Any(l => l.SocketInode == moved.ListenerInode) ? "no listener here serves its socket"
            : null;
        if (refused is not null)
        {
            // Closed: its client sees the end of an idle connection, as without moving.
            Interop.Libc.Close(moved.Fd);
            _receiver!.LogRefused(refused, moved.ListenerInode);
            return MoveOutcome.Closed;
        }

        MoveTarget? onward;
        lock (_lock)
        {
            onward = _target;
            if (_disposed)
            {
                Interop.Libc.Close(moved.Fd);
                return MoveOutcome.Closed;
            }

            if (onward is null && !_drainStarted)
            {
                InboxLocked(moved.ListenerInode).Add(moved);
                return MoveOutcome.Adopted;
            }
        }

        if (onward is null)
        {
            // This generation drains without a newer one to move to (SIGTERM): it serves
            // nothing new, so the connection closes as an idle one would.
            Interop.Libc.Close(moved.Fd);
            return MoveOutcome.Closed;
        }

        return MoveReceiver.PassOn(onward, moved);
    }

    private void EndInboxes()
    {
        lock (_lock)
        {
            foreach (var inbox in _inboxes.Values)
            {
                inbox.End();
            }
        }
    }

    /// <summary>The connections moved here from one listening socket, until the application's
    /// accept loop takes them, and that loop's pending accept.</summary>
    private sealed class Inbox : IDisposable
    {
        private readonly Lock _lock = new();
        private readonly Queue<MovedConnection> _queue = new();
        private readonly SemaphoreSlim _oneLoop = new(1);
        private TaskCompletionSource _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private Task<Socket?>? _accepting;
        private bool _ended;

        public void Add(MovedConnection moved)
        {
            lock (_lock)
            {
                _queue.Enqueue(moved);
                _arrived.TrySetResult();
            }
        }

        /// <summary>Nothing more comes: the previous generation has moved all it will.</summary>
        public void End()
        {
            lock (_lock)
            {
                _ended = true;
                _arrived.TrySetResult();
            }
        }

        public List<MovedConnection> TakeAll()
        {
            lock (_lock)
            {
                List<MovedConnection> all = [.. _queue];
                _queue.Clear();
                return all;
            }
        }

        public async ValueTask<CountedConnection?> AcceptAsync(ConnectionDrain drain, Listener listener, ulong inode, CancellationToken cancellationToken)
        {
            await _oneLoop.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                while (true)
                {
                    if (TryTake() is { } moved)
                    {
                        if (Adopt(drain, moved) is { } adopted)
                        {
                            return adopted;
                        }

                        continue;
                    }

                    // An accept started by an earlier call that returned a moved connection (or
                    // was cancelled) is the one awaited now: no accepted socket is left behind.
                    _accepting ??= listener.AcceptAsync(CancellationToken.None).AsTask();
                    if (!_accepting.IsCompleted)
                    {
                        await (Arrival() is { } arrival ? Task.WhenAny(_accepting, arrival) : (Task)_accepting).WaitAsync(cancellationToken).ConfigureAwait(false);
                    }

                    if (_accepting.IsCompleted)
                    {
                        var accepting = _accepting;
                        _accepting = null;
                        if (await accepting.ConfigureAwait(false) is { } socket)
                        {
                            return drain.Track(new CountedConnection(socket, drain, inode, movedState: null));
                        }

                        // The listener closed: what was moved here before still comes.
                        while (TryTake() is { } left)
                        {
                            if (Adopt(drain, left) is { } adopted)
                            {
                                return adopted;
                            }
                        }

                        return null;
                    }
                }
            }
            finally
            {
                _oneLoop.Release();
            }
        }

        private static CountedConnection? Adopt(ConnectionDrain drain, MovedConnection moved)
        {
            var handle = new SafeSocketHandle(moved.Fd, ownsHandle: true);
            Socket socket;
            try
            {
                socket = new Socket(handle);
            }
            catch (SocketException)
            {
                handle.Dispose(); // Not a socket after all: never served. Closed once, by its owner.
                return null;
            }

            return drain.Track(new CountedConnection(socket, drain, moved.ListenerInode, moved.State));
        }

        public void Dispose()
        {
            if (_accepting is { IsCompletedSuccessfully: true, Result: { } socket })
            {
                socket.Dispose();
            }
        }

        private MovedConnection? TryTake()
        {
            lock (_lock)
            {
                return _queue.TryDequeue(out var moved) ? moved : null;
            }
        }

        // Completes when a moved connection arrives; null once none will.
        private Task? Arrival()
        {
            lock (_lock)
            {
                if (_queue.Count == 0 && _ended)
                {
                    return null;
                }

                if (_arrived.Task.IsCompleted && _queue.Count == 0)
                {
                    _arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }

                return _arrived.Task;
            }
        }
    }

    internal void Remove(CountedConnection connection)
    {
        lock (_lock)
        {
            if (_connections.Remove(connection) && _connections.Count == 0)
            {
                _empty?.TrySetResult();
            }
        }
    }
}

/// <summary>One accepted connection of a <see cref="ConnectionDrain"/>: its socket, and the
/// drain's token. Dispose it when the connection is done.</summary>
public sealed class CountedConnection : IDisposable
{
    private readonly ConnectionDrain _drain;
    private readonly ulong? _listenerInode;

    // Open, being moved, or disposed: the drain's abort at its timeout leaves a connection that
    // is being moved alone (its socket's number may already be the stand-in's, or be detached).
    private int _state;
    private const int Open = 0;
    private const int Moving = 1;
    private const int Disposed = 2;

    internal CountedConnection(Socket socket, ConnectionDrain drain, ulong? listenerInode, byte[]? movedState)
    {
        Socket = socket;
        _drain = drain;
        _listenerInode = listenerInode;
        MovedState = movedState;
    }

    /// <summary>The connected socket.</summary>
    public Socket Socket { get; }

    /// <summary>The state the previous generation gave <see cref="MoveAsync"/> when it moved this
    /// connection here (possibly empty); null for a connection this generation accepted.</summary>
    public byte[]? MovedState { get; }

    /// <summary>
    /// Moves the connection to the new generation, with <paramref name="state"/>, instead of
    /// closing it: the client keeps its TCP connection, and the new generation's
    /// <see cref="ConnectionDrain.AcceptAsync"/> returns it with <see cref="MovedState"/> set to
    /// <paramref name="state"/>. Call it once <see cref="Draining"/> has fired, at a point where
    /// nothing is half read or half written, with no receive or send pending on the socket
    /// (cancel the pending receive first, with <see cref="Draining"/> as its token): every byte
    /// this process read and has not answered must be in <paramref name="state"/>.
    /// </summary>
    /// <param name="state">What the new generation needs to go on (at most 1 MiB).</param>
    /// <returns>True when the connection went: it is disposed here and its socket must not be
    /// used again. False when it could not move (this generation is not draining towards a new
    /// one that takes moved connections, <see cref="HandoffOptions.MoveConnections"/> is off,
    /// or the new generation stopped taking them): serve it on as a connection that cannot
    /// move; if it was let go and could not be sent, it is closed and its next receive returns
    /// end of file.</returns>
    /// <exception cref="ArgumentException"><paramref name="state"/> is longer than 1 MiB.</exception>
    public async ValueTask<bool> MoveAsync(ReadOnlyMemory<byte> state)
    {
        if (state.Length > MoveChannel.MaxState)
        {
            throw new ArgumentException($"A moved connection's state is at most {MoveChannel.MaxState} bytes, not {state.Length}: keep what the new generation needs to go on, and let it find the rest by itself.", nameof(state));
        }

        if (_drain.Target is not { IsOpen: true } target || _listenerInode is not { } listener ||
            Interlocked.CompareExchange(ref _state, Moving, Open) != Open)
        {
            return false;
        }

        int fd = (int)Socket.SafeHandle.DangerousGetHandle();
        int connection = await target.DetachAsync(fd).ConfigureAwait(false);
        if (connection < 0)
        {
            Volatile.Write(ref _state, Open);
            return false;
        }

        // From here the connection is no longer this process's to serve: sent, or closed.
        bool sent;
        try
        {
            sent = await target.SendAsync(connection, listener, [], MoveKind.Tcp, state.ToArray()).ConfigureAwait(false);
        }
        finally
        {
            Interop.Libc.Close(connection);
            target.Exit();
        }

        if (!sent)
        {
            target.CountNotMoved(MoveKind.Tcp, MoveTarget.NotSent);
            Volatile.Write(ref _state, Open); // Closed: its next receive returns end of file.
            return false;
        }

        _drain.CountMoved();
        Dispose(); // Closes the stand-in that took the socket's number: the client sees nothing.
        return true;
    }

    /// <summary>Cancelled when the generation starts draining: finish the current exchange and
    /// close, if the protocol allows it.</summary>
    public CancellationToken Draining => _drain.Draining;

    /// <summary>Closes the socket and stops counting the connection.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _state, Disposed) != Disposed)
        {
            Socket.Dispose();
            _drain.Remove(this);
        }
    }

    /// <summary>Resets the connection (the drain's time is up); whatever serves it sees its
    /// reads and writes fail and disposes it. False when it was disposed already, or is being
    /// moved (the move ends it).</summary>
    internal bool Abort()
    {
        if (Interlocked.CompareExchange(ref _state, Disposed, Open) != Open)
        {
            return false;
        }

        try
        {
            Socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Closed meanwhile.
        }

        Socket.Dispose();
        _drain.Remove(this);
        return true;
    }
}

/// <summary>The outcome of <see cref="ConnectionDrain.DrainAsync"/>.</summary>
/// <param name="Finished">Connections open when the drain started that ended by themselves.</param>
/// <param name="Aborted">Connections still open at the timeout, which were reset.</param>
public readonly record struct DrainResult(int Finished, int Aborted)
{
    /// <summary>The application's connections moved to the new generation
    /// (<see cref="CountedConnection.MoveAsync"/>), not counted in <see cref="Finished"/>.</summary>
    public int Moved { get; init; }
}
