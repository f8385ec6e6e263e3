using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Handoff.AspNetCore;

/// <summary>
/// Knows every open connection of this generation and closes them without losing a request
/// once the generation has stopped accepting.
/// </summary>
/// <remarks>
/// Kestrel's own graceful stop closes idle keep-alive connections at once. A client may have
/// sent its next request on such a connection a moment earlier; that request then fails. Under
/// a steady keep-alive load this loses one request per connection (docs/platform-notes.md). The
/// drain here instead answers the next request on each HTTP/1.x connection with
/// <c>Connection: close</c> (<see cref="DrainMiddleware"/>), closes a connection only after it
/// has been idle for <see cref="HandoffOptions.DrainIdleTimeout"/> (paced by time and by the room
/// in the accept queue their clients reconnect to), sends HTTP/2 connections
/// GOAWAY, and aborts what is left at <see cref="HandoffOptions.DrainTimeout"/>.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "The drain's CancellationTokenSource is disposed when the drain ends; a singleton that lives as long as the process.")]
internal sealed partial class ConnectionDrainer
{
    // How often the drain looks at the connections; also how late an idle connection may be
    // closed after its idle time has passed.
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromSeconds(1);

    // Idle connections are closed over this many ticks (about a second), at least this many a
    // tick: 10,000 keep-alive clients reconnect over a second rather than in one burst. That is
    // the fastest pace; in the drain's first half, a tick also closes no more than the accept
    // queue their clients reconnect to has room for (AcceptQueuePacing), so a new generation
    // that accepts more slowly than that (a cold process on a busy core) sets the pace.
    internal const int PacingTicks = 20;
    internal const int MinClosesPerTick = 100;

    // How long an HTTP/2 client has to acknowledge the PING after the first GOAWAY before
    // Kestrel's final GOAWAY goes anyway: many round trips, even across continents.
    private static readonly TimeSpan Http2AcknowledgeLimit = TimeSpan.FromSeconds(1);

    private readonly ConnectionTable _connections = new();
    private readonly ConcurrentDictionary<WebSocketDrainStream, byte> _webSockets = new();
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Func<IAcceptQueuePacing> _pacing;
    private readonly Action<DrainableConnection> _untrack;
    private readonly Func<long> _milliseconds;
    private readonly Lock _lock = new();
    private Task<bool>? _drain;
    private CancellationTokenSource? _undrain;
    private volatile bool _draining;
    private volatile bool _restarting = true;
    private volatile bool _abort;

    // From a handover's start to its commit when connections may move: the drain runs for the
    // rest (WebSockets get their close, HTTP/2 its GOAWAY, as without moving), and the HTTP/1.1
    // connections that can move are neither closed nor told to close until StartMoves.
    private volatile bool _holdingForMove;
    private TimeSpan _idleTimeout;
    private int _heldIneligible;

    // The reasons of WebSockets that could not move, closed before the move's target existed
    // (during the hold); counted on it at the commit.
    private readonly List<string> _refusedWebSockets = [];

    // Connections marked Draining by a reload and not closed yet. An over-count (a connection
    // that closed while being marked) only costs the middleware a lookup per request.
    private int _reloadDraining;

    public ConnectionDrainer(ILogger<ConnectionDrainer> logger)
        : this(TimeProvider.System, logger)
    {
    }

    // For testing.
    internal ConnectionDrainer(TimeProvider time, ILogger logger, Func<IAcceptQueuePacing>? pacing = null)
    {
        _time = time;

        // The request pipeline's clock (DrainMiddleware reads Environment.TickCount64): the
        // time a connection was last active is on it. A test's clock stands in for it.
        _milliseconds = ReferenceEquals(time, TimeProvider.System)
            ? static () => Environment.TickCount64
            : () => time.GetTimestamp() * 1000 / time.TimestampFrequency;
        _logger = logger;
        _pacing = pacing ?? (static () => new AcceptQueuePacing());
        _untrack = Untrack;
    }

    /// <summary>True from the start of the drain: responses get <c>Connection: close</c>.</summary>
    public bool IsDraining => _draining;

    /// <summary>True while some connection drains alone (its endpoint is being reloaded): only
    /// then must a response look at its own connection.</summary>
    public bool AnyConnectionDraining => Volatile.Read(ref _reloadDraining) > 0;

    /// <summary>The connections open now: Kestrel's, and the WebSockets moved here from the
    /// previous generation (which have none).</summary>
    public int Count => _connections.Count + Volatile.Read(ref _resumed);

    /// <summary>The connections tracked now.</summary>
    internal ConnectionTable Connections => _connections;

    /// <summary>Where this drain moves connections, when it does.</summary>
    public MoveTarget? Moves { get; private set; }

    /// <summary>True while the connections that can move wait for the commit
    /// (<see cref="StartMoves"/>): their responses do not say <c>Connection: close</c>.</summary>
    public bool HoldingForMove => _holdingForMove;

    /// <summary>True once the host's stop has drained (or given up on) every connection: from
    /// then on an unbind comes from Kestrel stopping, never from a configuration reload.</summary>
    public bool ServerStopping { get; set; }

    /// <summary>Where drains are recorded (the generation's instruments), if anywhere.</summary>
    public HandoffMetrics? Metrics { get; set; }

    /// <summary>Moves the WebSockets of endpoints mapped with <c>MapHandoffWebSocket</c>; set
    /// when the first is mapped.</summary>
    public WebSocketMoves? WebSocketMoves { get; set; }

    // WebSockets moved here whose sessions run: the drain waits for them as for connections.
    private int _resumed;

    /// <summary>Wraps a connection Kestrel's transport accepted and tracks it until Kestrel
    /// disposes it. <paramref name="adoptedWritten"/>: for a connection moved here from the
    /// previous generation, the kernel's count of bytes written into it before.</summary>
    public DrainableConnection Track(Microsoft.AspNetCore.Connections.ConnectionContext connection, object? owner = null, long? adoptedWritten = null)
    {
        var tracked = new DrainableConnection(connection, _milliseconds(), owner) { Disposed = _untrack };
        if (adoptedWritten is { } written)
        {
            tracked.Http?.Adopted(written);
        }

        _connections.Add(tracked);
        // Not asked to close at once: Kestrel has not made the connection's close request yet
        // (it does once this returns); the drain's ticks ask once it is idle, or its request's end.
        if (_draining && !(Moves is { } moves && tracked.BeginMove(moves, now: false)))
        {
            // Accepted in the instant before the listener closed: it is drained like the rest.
            // One moved here while this generation moves its own (a second upgrade during the
            // first one's move) moves on with them.
            Log.LateConnection(_logger, connection.ConnectionId);
        }

        return tracked;
    }

    private void Untrack(DrainableConnection connection)
    {
        if (_connections.Remove(connection) && connection.Draining)
        {
            Interlocked.Decrement(ref _reloadDraining);
        }
    }

    /// <summary>Adds a WebSocket the application accepted, or one moved here; one that comes
    /// while draining (its handshake succeeds) is closed at once, so that its client goes to the
    /// new generation, or, if it can move, moves or waits for the commit with the rest.</summary>
    public void Register(WebSocketDrainStream webSocket)
    {
        if (webSocket.IsResumed)
        {
            Interlocked.Increment(ref _resumed);
        }

        _webSockets[webSocket] = 0;
        DrainWebSocket(webSocket);
    }

    /// <summary>The session of a WebSocket that may move has begun (it can move from now on):
    /// one that came while draining moves or closes now.</summary>
    public void SessionStarted(WebSocketDrainStream webSocket) => DrainWebSocket(webSocket);

    // While draining, once for each WebSocket: moves it (when it may, and the commit has come)
    // or closes it (1012, or 1001 at a stop). One that may move waits during the hold, and until
    // its session has begun. True when it was closed.
    private bool DrainWebSocket(WebSocketDrainStream webSocket)
    {
        MoveTarget? moves;
        lock (_lock)
        {
            if (!_draining || HeldForMove(webSocket) || (MayMove(webSocket) && webSocket.Session is null) || !webSocket.TryAskDrain())
            {
                return false;
            }

            moves = Moves;

            // One that cannot move on a connection that could (compressed, say) is counted
            // with its reason once the move's target exists; over TLS or HTTP/2 its connection
            // counts as one that could not move.
            if (_restarting && webSocket.MoveRefusal is { } refused && webSocket.Carrier is not null)
            {
                if (moves is null)
                {
                    _refusedWebSockets.Add(refused.Reason);
                }
                else
                {
                    moves.CountIneligible(1, MoveKind.WebSocket, refused.Reason);
                }
            }
        }

        if (moves is not null && MayMove(webSocket) && WebSocketMoves is { } webSocketMoves)
        {
            _ = webSocketMoves.MoveOrCloseAsync(webSocket, moves);
            return false;
        }

        if (_restarting && webSocket.MoveRefusal is { } refusal)
        {
            WebSocketMoves?.LogNotMoved(webSocket, refusal.Text);
        }

        _ = webSocket.CloseAsync(_restarting);
        return true;
    }

    public void Unregister(WebSocketDrainStream webSocket)
    {
        if (_webSockets.TryRemove(webSocket, out _) && webSocket.IsResumed)
        {
            Interlocked.Decrement(ref _resumed);
        }
    }

    // The WebSockets that wait for the commit to move (held at the handover's start).
    private bool HeldForMove(WebSocketDrainStream webSocket) => _holdingForMove && MayMove(webSocket);

    private static bool MayMove(WebSocketDrainStream webSocket) => webSocket.Endpoint is not null && webSocket.MoveRefusal is null;

    /// <summary>Starts draining in the background, if it has not started: responses get
    /// <c>Connection: close</c>, idle connections are closed, what is left at
    /// <paramref name="timeout"/> is aborted.</summary>
    /// <param name="timeout">When what is left is aborted.</param>
    /// <param name="idleTimeout">How long a connection must be idle to be closed.</param>
    /// <param name="restart">True when a new generation serves on (WebSockets get 1012 Service
    /// Restart), false for a stop (1001 Going Away).</param>
    /// <param name="moves">Where HTTP/1.1 connections move instead of closing, if anywhere.</param>
    /// <param name="holdForMove">True at a handover's start when connections may move once it
    /// commits: those that can move wait for <see cref="StartMoves"/>, the rest drain now.</param>
    public void BeginDrain(TimeSpan timeout, TimeSpan idleTimeout, bool restart = true, MoveTarget? moves = null, bool holdForMove = false)
    {
        lock (_lock)
        {
            if (_drain is not null)
            {
                return;
            }

            _restarting = restart;
            _idleTimeout = idleTimeout;
            _holdingForMove = holdForMove && moves is null;
            if (_holdingForMove)
            {
                // What cannot move drains from now on, and may be gone by the commit: counted
                // now, as the connections that could not move.
                _heldIneligible = 0;
                _refusedWebSockets.Clear();
                foreach (var connection in _connections)
                {
                    if (!connection.CanMove && !connection.CarriesMovableWebSocket)
                    {
                        connection.CountedIneligible = true;
                        _heldIneligible++;
                    }
                }
            }

            if (moves is not null)
            {
                AskToMove(moves);
            }

            _draining = true;

            _undrain = new CancellationTokenSource();
            var undrain = _undrain.Token;

            // HTTP/2's first GOAWAY goes out before anything else of the drain, the WebSocket
            // closes below in particular: a client told to reconnect must already know that its
            // HTTP/2 connection takes no new stream, or it reconnects on it, to this generation.
            // Elsewhere it waits for a stream's end (CloseIdle).
            foreach (var webSocket in _webSockets.Keys)
            {
                if (webSocket.Connection is { } carrier)
                {
                    carrier.SendHttp2ShutdownNow = true;
                }
            }

            CloseIdle(_time.GetTimestamp(), _time.GetTimestamp(), idleTimeout, http2Only: true);
            _drain = Task.Run(() => RunAsync(timeout, idleTimeout, undrain));
        }

        // WebSockets never end by themselves: 1012 (Service Restart) sends their clients to the
        // new generation now rather than at the drain timeout. Those that may move wait for the
        // commit.
        int closed = _webSockets.Keys.Count(DrainWebSocket);
        if (closed > 0)
        {
            Log.ClosingWebSockets(_logger, Environment.ProcessId, closed, restart ? "1012 (Service Restart)" : "1001 (Going Away)");
        }
    }

    /// <summary>The handover committed: the connections held for it move to
    /// <paramref name="moves"/> or, when there is none (the new generation takes none), drain
    /// like the rest from now on.</summary>
    public void StartMoves(MoveTarget? moves)
    {
        lock (_lock)
        {
            if (moves is not null && Moves is null)
            {
                AskToMove(moves);
                moves.CountIneligible(_heldIneligible);
                foreach (string reason in _refusedWebSockets)
                {
                    moves.CountIneligible(1, MoveKind.WebSocket, reason);
                }

                _refusedWebSockets.Clear();
            }

            _holdingForMove = false;
        }

        // The WebSockets that may move go between two messages each, or get their 1012 now.
        foreach (var webSocket in _webSockets.Keys)
        {
            DrainWebSocket(webSocket);
        }
    }

    // Each HTTP/1.1 connection over plain TCP moves to the new generation at its next request
    // boundary; the rest drain as always. Before the hold ends: a response that starts
    // meanwhile must not say "Connection: close" on a connection that then moves (its client
    // would close it under the new generation).
    private void AskToMove(MoveTarget moves)
    {
        Moves = moves;
        long idleSince = _milliseconds() - (long)_idleTimeout.TotalMilliseconds;
        foreach (var connection in _connections)
        {
            // Idle for idleTimeout: at once; a busy one at its next request's end, or by a tick
            // of the drain once it has been idle that long (CloseIdle).
            if (!connection.BeginMove(moves, now: connection.IsIdleSince(idleSince)) && !connection.CountedIneligible && !connection.CarriesMovableWebSocket)
            {
                moves.CountIneligible();
            }
        }
    }

    /// <summary>Stops a drain that has begun (the generation accepts again after a failed
    /// handover): connections stay open and responses keep their keep-alive.</summary>
    public void EndDrain()
    {
        CancellationTokenSource? undrain;
        lock (_lock)
        {
            undrain = _undrain;
            _drain = null;
            _undrain = null;
            _draining = false;
            _holdingForMove = false;
        }

        if (undrain is not null)
        {
            undrain.Cancel();
            undrain.Dispose();
            Log.DrainEnded(_logger, Environment.ProcessId, _connections.Count);

            // An HTTP/2 client that got the first GOAWAY opens no stream on its connection any
            // more, and the drain's ticks that would have closed it have stopped: close it now.
            // One still waiting for a stream's end was told nothing and stays open.
            foreach (var connection in _connections)
            {
                if (connection.Http is { IsHttp2: true } http && connection.Http2ShutdownBegun && !connection.IsCloseRequested)
                {
                    if (http.AbandonShutdown())
                    {
                        connection.RequestClose();
                    }
                    else
                    {
                        connection.ResetHttp2Shutdown();
                    }
                }
            }
        }
    }

    /// <summary>Drains every connection (starting the drain if it has not begun); returns true
    /// when all finished, false when some had to be aborted at <paramref name="timeout"/> or
    /// when <paramref name="cancellationToken"/> fired.</summary>
    public async Task<bool> DrainAsync(TimeSpan timeout, TimeSpan idleTimeout, CancellationToken cancellationToken, bool restart = true)
    {
        BeginDrain(timeout, idleTimeout, restart);
        Task<bool> drain;
        lock (_lock)
        {
            drain = _drain!;
        }

        using var abort = cancellationToken.Register(static state => ((ConnectionDrainer)state!)._abort = true, this);
        return await drain.ConfigureAwait(false);
    }

    /// <summary>
    /// Drains the connections one listener accepted, as a generation's drain does, while the
    /// rest of the generation goes on: Kestrel is about to close them because a configuration
    /// reload changes their endpoint. Returns how many were still open after
    /// the limit (Kestrel then closes them its own way).
    /// </summary>
    /// <remarks>The limit is <paramref name="servingLimit"/> while the generation serves, and
    /// becomes <paramref name="drainingLimit"/> if it begins to drain meanwhile (an upgrade or a
    /// stop right after the reload): from then on its drain decides.</remarks>
    public async Task<int> DrainListenerAsync(object owner, string address, TimeSpan servingLimit, TimeSpan drainingLimit, TimeSpan idleTimeout)
    {
        long start = _time.GetTimestamp();
        int count = 0;
        foreach (var connection in _connections)
        {
            if (connection.Owner == owner)
            {
                if (!connection.Draining)
                {
                    Interlocked.Increment(ref _reloadDraining);
                    connection.Draining = true;
                }

                count++;
            }
        }

        int budget = ClosesPerTick(count);

        Log.EndpointDrainStarted(_logger, Environment.ProcessId, address, count);
        foreach (var webSocket in _webSockets.Keys.Where(w => w.Connection?.Owner == owner))
        {
            _ = webSocket.CloseAsync(restart: true);
        }

        while (CountOwnedBy(owner) > 0)
        {
            long now = _time.GetTimestamp();
            var limit = _draining ? drainingLimit : servingLimit;
            if (_time.GetElapsedTime(start, now) >= limit)
            {
                int left = CountOwnedBy(owner);
                Log.EndpointDrainTimedOut(_logger, Environment.ProcessId, address, left, limit.TotalSeconds);
                return left;
            }

            CloseIdle(start, now, idleTimeout, owner, budget: budget, maxWait: limit / 2);
            await Task.Delay(Tick, _time).ConfigureAwait(false);
        }

        Log.EndpointDrainCompleted(_logger, Environment.ProcessId, address, _time.GetElapsedTime(start).TotalMilliseconds);
        return 0;
    }

    private async Task<bool> RunAsync(TimeSpan timeout, TimeSpan idleTimeout, CancellationToken undrain)
    {
        long start = _time.GetTimestamp();
        long lastProgress = start;
        int budget = ClosesPerTick(_connections.Count);
        using var pacing = _pacing();

        // Only a new generation empties the queue: at a stop, connections that wait there are
        // nobody's to accept (or a socket unit's, for the next start), and waiting for room
        // would only delay the exit.
        bool pacedByQueue = _restarting;

        // The time-based pace needs up to twice PacingTicks ticks (ticks run late on a busy
        // machine) to close what the queue held back: leave it that much before the timeout,
        // or a short DrainTimeout would abort idle connections the time-based pace closes.
        var queuePacedUntil = TimeSpan.FromTicks(Math.Min((timeout / 2).Ticks, (timeout - (2 * PacingTicks * Tick)).Ticks));
        bool heldBack = false;
        Log.DrainStarted(_logger, Environment.ProcessId, _connections.Count);
        while (!_connections.IsEmpty || Volatile.Read(ref _resumed) > 0)
        {
            if (undrain.IsCancellationRequested)
            {
                RecordDrain(start, "resumed", 0);
                return true;
            }

            long now = _time.GetTimestamp();
            if (_time.GetElapsedTime(start, now) >= timeout || _abort)
            {
                int aborted = 0;
                foreach (var connection in _connections)
                {
                    connection.AbortAtDrainTimeout();
                    aborted++;
                }

                foreach (var webSocket in _webSockets.Keys.Where(webSocket => webSocket.IsResumed))
                {
                    webSocket.Abort();
                    aborted++;
                }

                Log.DrainTimedOut(_logger, Environment.ProcessId, aborted, timeout.TotalSeconds);
                RecordDrain(start, "timed_out", aborted);
                return false;
            }

            // In the drain's first half (less when the timeout is short) the closes wait for room
            // in the accept queues; then they go at the time-based pace alone, so that every idle
            // connection is closed in good order before the timeout would abort it.
            var queues = pacedByQueue && _time.GetElapsedTime(start, now) < queuePacedUntil && pacing.Refresh() ? pacing : null;
            if (pacedByQueue && queues is null && pacing.Error is { } error)
            {
                Log.AcceptQueuesUnreadable(_logger, Environment.ProcessId, error);
            }

            pacedByQueue = queues is not null;
            CloseIdle(start, now, idleTimeout, budget: budget, maxWait: timeout / 2, queues: queues);
            if (!heldBack && pacing.FirstHeldBack is { } held)
            {
                heldBack = true;
                Log.HeldBack(_logger, Environment.ProcessId, held.Address, held.Queue.Queued, held.Queue.Capacity);
            }

            if (_time.GetElapsedTime(lastProgress, now) >= ProgressInterval)
            {
                lastProgress = now;
                Log.DrainProgress(_logger, Environment.ProcessId, _connections.Count);
            }

            try
            {
                await Task.Delay(Tick, _time, undrain).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Checked at the top of the loop.
            }
        }

        Log.DrainCompleted(_logger, Environment.ProcessId, _time.GetElapsedTime(start).TotalMilliseconds);
        RecordDrain(start, "completed", 0);
        return true;
    }

    private void RecordDrain(long start, string result, int aborted) =>
        Metrics?.DrainEnded(_time.GetElapsedTime(start), result, _restarting ? "upgrade" : "shutdown", aborted);

    /// <summary>One tick's work: HTTP/2 connections get their shutdown, idle HTTP/1.x connections
    /// are closed, at most <paramref name="budget"/> of them, and no more than
    /// <paramref name="queues"/> has room for; returns how many were closed.</summary>
    internal int CloseIdle(long drainStart, long now, TimeSpan idleTimeout, object? owner = null, bool http2Only = false, int budget = int.MaxValue, TimeSpan maxWait = default, IAcceptQueuePacing? queues = null)
    {
        // Idle means: no request running, and none ended within idleTimeout, counting the drain's
        // start as the last activity of connections that were idle before it.
        long idleTicks = (long)(idleTimeout.TotalSeconds * _time.TimestampFrequency);
        long idleBefore = now - idleTicks;

        // A client that pauses between its requests sends the next one after a pause like those:
        // answered with "Connection: close" it goes to the new generation safely, whereas closing
        // the connection under it loses that request if it is already on its way (IsIdle).
        long maxWaitMs = (long)maxWait.TotalMilliseconds;
        long idleMs = (long)idleTimeout.TotalMilliseconds;
        long nowMs = _milliseconds();
        long acknowledgeLimit = (long)(Http2AcknowledgeLimit.TotalSeconds * _time.TimestampFrequency);
        int closed = 0;

        // The table's own walk: no copy of the connections, on any tick.
        foreach (var connection in _connections)
        {
            if (connection.IsMoving)
            {
                if (connection.IsIdleSince(nowMs - idleMs))
                {
                    connection.MoveNow();
                }

                continue;
            }

            if (connection.IsCloseRequested || (owner is not null && connection.Owner != owner))
            {
                continue;
            }

            // HTTP/2 has a graceful close that races with nothing once the client has seen a first
            // GOAWAY: it begins at once, the GOAWAY going just before the next response's end
            // (a client that opens its next stream when one ends has not queued it yet). Where
            // no stream ends, it goes when HTTP/1.1 would close: once the connection is idle, or,
            // if a stream runs on (a long request, a gRPC or WebSocket stream), after idleTimeout.
            if (connection.Http is { IsHttp2: true } http)
            {
                bool sendNow = drainStart <= idleBefore && (connection.HasActiveRequest || IsIdle(connection, nowMs, idleMs, maxWaitMs));
                connection.ShutdownHttp2(http, now, acknowledgeLimit, sendNow || connection.SendHttp2ShutdownNow);
            }
            else if (!http2Only && closed < budget && (connection.IsHttp2 || (drainStart <= idleBefore && IsIdle(connection, nowMs, idleMs, maxWaitMs))) &&
                !(_holdingForMove && connection.CanMove) && (queues?.TryTake(connection.Owner) ?? true))
            {
                connection.RequestClose();
                closed++;
            }
        }

        return closed;
    }

    // A client that pauses between its requests sends the next one after a pause like those, so
    // a connection whose client paused before waits twice its longest pause (at most maxWait).
    private static bool IsIdle(DrainableConnection connection, long nowMs, long idleMs, long maxWaitMs) =>
        connection.IsIdleSince(nowMs - Math.Max(idleMs, Math.Min(2 * connection.LongestPauseMs, maxWaitMs)));

    /// <summary>How many idle connections a tick may close: all of them over about
    /// <see cref="PacingTicks"/> ticks, so that their clients do not all reconnect to the new
    /// generation in the same instant, and never fewer than <see cref="MinClosesPerTick"/>.</summary>
    internal static int ClosesPerTick(int connections) => Math.Max(MinClosesPerTick, (connections + PacingTicks - 1) / PacingTicks);

    private int CountOwnedBy(object owner)
    {
        int count = 0;
        foreach (var connection in _connections)
        {
            if (connection.Owner == owner)
            {
                count++;
            }
        }

        return count;
    }

    private static partial class Log
    {
        [LoggerMessage(30, LogLevel.Information, "Pid {Pid} stopped accepting; draining {Count} open connections.", EventName = "DrainStarted")]
        public static partial void DrainStarted(ILogger logger, int pid, int count);

        [LoggerMessage(31, LogLevel.Information, "Pid {Pid} draining: {Count} connections remaining.", EventName = "DrainProgress")]
        public static partial void DrainProgress(ILogger logger, int pid, int count);

        [LoggerMessage(32, LogLevel.Information, "Pid {Pid} drained all connections in {ElapsedMilliseconds:0} ms.", EventName = "DrainCompleted")]
        public static partial void DrainCompleted(ILogger logger, int pid, double elapsedMilliseconds);

        [LoggerMessage(33, LogLevel.Warning, "Pid {Pid}: {Count} connections still open after Handoff:DrainTimeout ({TimeoutSeconds} s); aborting them.", EventName = "DrainTimedOut")]
        public static partial void DrainTimedOut(ILogger logger, int pid, int count, double timeoutSeconds);

        [LoggerMessage(35, LogLevel.Warning, "Pid {Pid} stopped draining and keeps its {Count} connections: it accepts again.", EventName = "DrainEnded")]
        public static partial void DrainEnded(ILogger logger, int pid, int count);

        [LoggerMessage(36, LogLevel.Information, "Pid {Pid} closes {Count} WebSockets with status {Status}: their clients reconnect to the new generation, if there is one.", EventName = "ClosingWebSockets")]
        public static partial void ClosingWebSockets(ILogger logger, int pid, int count, string status);

        [LoggerMessage(37, LogLevel.Information, "Pid {Pid}: a configuration reload rebinds {Address}; its {Count} connections drain first, and its socket stays open.", EventName = "EndpointDrainStarted")]
        public static partial void EndpointDrainStarted(ILogger logger, int pid, string address, int count);

        [LoggerMessage(38, LogLevel.Information, "Pid {Pid} drained the connections of {Address} in {ElapsedMilliseconds:0} ms, for a configuration reload.", EventName = "EndpointDrainCompleted")]
        public static partial void EndpointDrainCompleted(ILogger logger, int pid, string address, double elapsedMilliseconds);

        [LoggerMessage(39, LogLevel.Warning, "Pid {Pid}: {Count} connections of {Address} still open {LimitSeconds} s after a configuration reload; Kestrel closes them.", EventName = "EndpointDrainTimedOut")]
        public static partial void EndpointDrainTimedOut(ILogger logger, int pid, string address, int count, double limitSeconds);

        [LoggerMessage(51, LogLevel.Information, "Pid {Pid} closes idle connections no faster than the new generation accepts them: the accept queue of {Address} holds {Queued} of {Capacity} connections.", EventName = "DrainHeldBack")]
        public static partial void HeldBack(ILogger logger, int pid, string address, int queued, int capacity);

        [LoggerMessage(52, LogLevel.Debug, "Pid {Pid} cannot read the accept queues ({Error}); idle connections are closed at a fixed pace.", EventName = "AcceptQueuesUnreadable")]
        public static partial void AcceptQueuesUnreadable(ILogger logger, int pid, string error);

        [LoggerMessage(34, LogLevel.Debug, "Connection {ConnectionId} was accepted as the listener closed; draining it too.", EventName = "LateConnection")]
        public static partial void LateConnection(ILogger logger, string connectionId);
    }
}
