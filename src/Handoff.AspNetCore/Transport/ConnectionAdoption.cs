using System.Collections.Concurrent;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Handoff.AspNetCore;

/// <summary>
/// The new generation's half of moving connections: reads the move channel from the previous
/// generation (<see cref="MoveChannel"/>) on a thread of its own and gives each HTTP/1.1
/// connection to the listener that serves the socket which accepted it, as Kestrel's socket
/// transport would have made it (<see cref="SocketConnectionContextFactory"/>), with the bytes the
/// previous generation had read first (<see cref="PrefixedReader"/>).
/// </summary>
internal sealed class ConnectionAdoption : IDisposable
{
    private readonly ConcurrentDictionary<ulong, HandoffConnectionListener> _listeners = new();
    private readonly SocketConnectionContextFactory _factory;
    private readonly ConnectionDrainer? _drainer;
    private readonly Upgrader? _upgrader;
    private readonly MoveReceiver _receiver;
    private readonly WebSocketMoves? _webSockets;
    private bool _noOnwardTarget;

    public ConnectionAdoption(IOptions<SocketTransportOptions> socketOptions, ILoggerFactory loggerFactory, Upgrader? upgrader = null, ConnectionDrainer? drainer = null, WebSocketMoves? webSockets = null)
    {
        var options = socketOptions.Value;
        _drainer = drainer;
        _webSockets = webSockets;
        _upgrader = upgrader;
        var logger = loggerFactory.CreateLogger<ConnectionAdoption>();
        _receiver = new MoveReceiver(logger, upgrader?.Metrics, Adopt);
        _factory = new SocketConnectionContextFactory(
            new SocketConnectionFactoryOptions
            {
                IOQueueCount = options.IOQueueCount,
                WaitForDataBeforeAllocatingBuffer = options.WaitForDataBeforeAllocatingBuffer,
                MaxReadBufferSize = options.MaxReadBufferSize,
                MaxWriteBufferSize = options.MaxWriteBufferSize,
                UnsafePreferInlineScheduling = options.UnsafePreferInlineScheduling,
            },
            logger);

        // The previous generation sent a channel: it is read from now on (before this generation
        // reports ready, which then says it adopts; nothing is sent before the commit).
        if (upgrader?.Inheritance.TakeMoveChannel() is >= 0 and var channel)
        {
            upgrader.MoveReceiver = _receiver;
            Start(channel);
        }
    }

    /// <summary>Connections adopted so far.</summary>
    public int Adopted => _receiver.Adopted;

    /// <summary>Connections received and closed (no listener here serves them, no descriptor left).</summary>
    public int Refused => _receiver.Closed;

    /// <summary>Connections received while this generation itself moved its connections to a
    /// newer one (a second upgrade during the first one's move), and sent on to it.</summary>
    public int PassedOn => _receiver.PassedOn;

    /// <summary>True while the channel is read.</summary>
    public bool IsReceiving => _receiver.IsReceiving;

    /// <summary>Completes when the previous generation has moved all it will (at once when it
    /// moves nothing here).</summary>
    public Task Ended => _receiver.Ended;

    /// <summary>A listener whose socket's connections this generation takes.</summary>
    public void Register(HandoffConnectionListener listener)
    {
        if (listener.Listener.SocketInode is { } inode)
        {
            _listeners[inode] = listener;
        }
    }

    public void Unregister(HandoffConnectionListener listener)
    {
        if (listener.Listener.SocketInode is { } inode)
        {
            _listeners.TryRemove(new KeyValuePair<ulong, HandoffConnectionListener>(inode, listener));
        }
    }

    /// <summary>Reads <paramref name="channel"/> (this object owns it from now on) until the
    /// previous generation closes it.</summary>
    public void Start(int channel) => _receiver.Start(channel);

    // Where a connection moved here goes on to, once this generation has handed over too: its
    // drain's target. The listeners close at the commit a moment before the drain begins, so a
    // connection that comes in between waits for it (once: without a target by then, this
    // generation does not move connections, and those that come close as they would have).
    private MoveTarget? OnwardTarget()
    {
        if (_drainer!.Moves is { } onward || _upgrader?.State is not (GenerationState.Superseded or GenerationState.Stopping or GenerationState.Stopped) || _noOnwardTarget)
        {
            return _drainer.Moves;
        }

        long deadline = Environment.TickCount64 + 1000;
        while (_drainer.Moves is null && Environment.TickCount64 < deadline)
        {
            Thread.Sleep(1);
        }

        _noOnwardTarget = _drainer.Moves is null;
        return _drainer.Moves;
    }

    private MoveOutcome Adopt(MovedConnection moved)
    {
        // This generation hands over too and moves its own connections to a newer one: this
        // one goes on with them, before Kestrel here ever sees it (the listener that would have
        // given it to Kestrel may have stopped already).
        if (_drainer is not null && OnwardTarget() is { } onward)
        {
            // A WebSocket goes on only to a generation that resumes its endpoint.
            return moved.Kind == MoveKind.WebSocket && !WebSocketMoves.ResumedBy(onward, moved.State)
                ? _webSockets?.Refuse(moved, "the newer generation does not map its endpoint with MapHandoffWebSocket") ?? Close(moved)
                : MoveReceiver.PassOn(onward, moved);
        }

        if (moved.Kind == MoveKind.WebSocket && _webSockets is not null)
        {
            return _webSockets.Resume(moved);
        }

        if (moved.Kind != MoveKind.Http1 || !_listeners.TryGetValue(moved.ListenerInode, out var listener))
        {
            // Closed: the client sees the end of an idle connection, as without moving.
            Interop.Libc.Close(moved.Fd);
            _receiver.LogRefused(moved.Kind.ToString(), moved.ListenerInode);
            return MoveOutcome.Closed;
        }

        // Every byte the previous generation wrote had been taken by the kernel before it let go.
        long writtenBefore = Interop.Libc.TcpWrittenBytes(moved.Fd) ?? 0;
        var handle = new SafeSocketHandle(moved.Fd, ownsHandle: true);
        Socket? socket = null;
        ConnectionContext context;
        try
        {
            socket = new Socket(handle);
            context = _factory.Create(socket);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or ArgumentException)
        {
            // Closed once, by whoever owns the descriptor now (a closed number can be another
            // connection's a moment later).
            if (socket is not null)
            {
                socket.Dispose();
            }
            else
            {
                handle.Dispose();
            }

            _receiver.LogRefused(e.Message, moved.ListenerInode);
            return MoveOutcome.Closed;
        }

        if (moved.Bytes.Length > 0)
        {
            context.Transport = new PrefixedReader(context.Transport, moved.Bytes);
        }

        listener.Adopt(context, writtenBefore);
        return MoveOutcome.Adopted;
    }

    private MoveOutcome Close(MovedConnection moved)
    {
        if (moved.Kind == MoveKind.WebSocket)
        {
            WebSocketRestart.Write(moved.Fd);
        }

        Interop.Libc.Close(moved.Fd);
        _receiver.LogRefused(moved.Kind.ToString(), moved.ListenerInode);
        return MoveOutcome.Closed;
    }

    public void Dispose() => _receiver.Dispose();
}
