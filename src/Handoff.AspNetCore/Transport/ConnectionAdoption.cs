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
internal sealed partial class ConnectionAdoption : IDisposable
{
    private readonly ConcurrentDictionary<ulong, HandoffConnectionListener> _listeners = new();
    private readonly SocketConnectionContextFactory _factory;
    private readonly ILogger _logger;
    private readonly ConnectionDrainer? _drainer;
    private readonly HandoffMetrics? _metrics;
    private readonly Upgrader? _upgrader;
    private bool _noOnwardTarget;
    private int _channel = -1;
    private Thread? _thread;
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _adopted;
    private int _refused;
    private int _passedOn;
    private int _nearLimit;
    private int _lost;

    public ConnectionAdoption(IOptions<SocketTransportOptions> socketOptions, ILoggerFactory loggerFactory, Upgrader? upgrader = null, ConnectionDrainer? drainer = null)
    {
        var options = socketOptions.Value;
        _drainer = drainer;
        _metrics = upgrader?.Metrics;
        _upgrader = upgrader;
        _logger = loggerFactory.CreateLogger<ConnectionAdoption>();
        _factory = new SocketConnectionContextFactory(
            new SocketConnectionFactoryOptions
            {
                IOQueueCount = options.IOQueueCount,
                WaitForDataBeforeAllocatingBuffer = options.WaitForDataBeforeAllocatingBuffer,
                MaxReadBufferSize = options.MaxReadBufferSize,
                MaxWriteBufferSize = options.MaxWriteBufferSize,
                UnsafePreferInlineScheduling = options.UnsafePreferInlineScheduling,
            },
            _logger);

        // The previous generation sent a channel: it is read from now on (before this generation
        // reports ready, which then says it adopts; nothing is sent before the commit).
        if (upgrader?.Inheritance is { MoveChannel: >= 0 } inheritance)
        {
            inheritance.AcceptsMoves = true;
            Start(inheritance.MoveChannel);
        }
    }

    /// <summary>Connections adopted so far.</summary>
    public int Adopted => Volatile.Read(ref _adopted);

    /// <summary>Connections received that no listener here serves (closed).</summary>
    public int Refused => Volatile.Read(ref _refused);

    /// <summary>Connections received while this generation itself moved its connections to a
    /// newer one (a second upgrade during the first one's move), and sent on to it.</summary>
    public int PassedOn => Volatile.Read(ref _passedOn);

    /// <summary>True while the channel is read.</summary>
    public bool IsReceiving => _thread is { IsAlive: true };

    /// <summary>Completes when the previous generation has moved all it will (at once when it
    /// moves nothing here).</summary>
    public Task Ended => _thread is null ? Task.CompletedTask : _ended.Task;

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
    public void Start(int channel)
    {
        _channel = channel;
        _thread = new Thread(Receive) { IsBackground = true, Name = "Handoff moved connections" };
        _thread.Start();
    }

    private void Receive()
    {
        try
        {
            while (MoveChannel.Receive(_channel) is { } moved)
            {
                Adopt(moved);
            }

            // The previous generation has moved all it will: it learns what became of them.
            _ = MoveChannel.WriteTotals(_channel, Adopted + PassedOn, Refused);
        }
        catch (Exception e) when (e is HandoffProtocolException or IOException)
        {
            Log.ChannelFailed(_logger, e.Message);
        }
        finally
        {
            int fd = Interlocked.Exchange(ref _channel, -1);
            if (fd >= 0)
            {
                Interop.Libc.Close(fd);
            }

            _ended.TrySetResult();
            _metrics?.ConnectionsReceived(Adopted, PassedOn, Refused);
            if (Adopted + Refused + PassedOn > 0)
            {
                Log.ChannelEnded(_logger, Adopted, Refused, PassedOn);
            }
            else
            {
                // The previous generation moved nothing (Handoff:MoveConnections is off there).
                Log.NothingMoved(_logger);
            }
        }
    }

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

    // Descriptors left free for everything else this process does: the runtime fails hard
    // (it aborts) when it cannot get one, so moved connections never take the last of them.
    internal const int DescriptorReserve = 64;

    private void Adopt(MovedConnection moved)
    {
        if (moved.Fd < 0)
        {
            // One line for the first, the count at the end: a limit too low loses many at once.
            Interlocked.Increment(ref _refused);
            if (Interlocked.Increment(ref _lost) == 1)
            {
                Log.Lost(_logger);
            }

            return;
        }

        // The kernel gives the lowest free number: every number below this one is taken.
        if (moved.Fd >= Interop.Libc.DescriptorLimit() - DescriptorReserve)
        {
            Interop.Libc.Close(moved.Fd);
            Interlocked.Increment(ref _refused);
            if (Interlocked.Increment(ref _nearLimit) == 1)
            {
                Log.NearDescriptorLimit(_logger, moved.Fd, DescriptorReserve);
            }

            return;
        }

        // This generation hands over too and moves its own connections to a newer one: this
        // one goes on with them, before Kestrel here ever sees it (the listener that would have
        // given it to Kestrel may have stopped already).
        if (_drainer is not null && OnwardTarget() is { } onward)
        {
            // Waited for on this thread (its own): the next frame is read once this one went.
            bool sent = onward.SendAsync(moved.Fd, moved.ListenerInode, moved.Bytes, moved.Kind, moved.State).GetAwaiter().GetResult();
            Interop.Libc.Close(moved.Fd);
            if (sent)
            {
                Interlocked.Increment(ref _passedOn);
            }
            else
            {
                onward.CountNotMoved();
                Interlocked.Increment(ref _refused);
            }

            return;
        }

        if (moved.Kind != MoveKind.Http1 || !_listeners.TryGetValue(moved.ListenerInode, out var listener))
        {
            // Closed: the client sees the end of an idle connection, as without moving. Counted
            // first, so that whoever sees the close sees it counted.
            Interlocked.Increment(ref _refused);
            Interop.Libc.Close(moved.Fd);
            Log.Refused(_logger, moved.Kind.ToString(), moved.ListenerInode);
            return;
        }

        // Every byte the previous generation wrote had been taken by the kernel before it let go.
        long writtenBefore = Interop.Libc.TcpWrittenBytes(moved.Fd) ?? 0;
        ConnectionContext context;
        try
        {
            context = _factory.Create(new Socket(new SafeSocketHandle(moved.Fd, ownsHandle: true)));
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or ArgumentException)
        {
            Interop.Libc.Close(moved.Fd);
            Interlocked.Increment(ref _refused);
            Log.Refused(_logger, e.Message, moved.ListenerInode);
            return;
        }

        if (moved.Bytes.Length > 0)
        {
            context.Transport = new PrefixedReader(context.Transport, moved.Bytes);
        }

        listener.Adopt(context, writtenBefore);
        Interlocked.Increment(ref _adopted);
    }

    public void Dispose()
    {
        // A thread blocked in recvmsg wakes when the socket is shut down, not when it is closed.
        int fd = Volatile.Read(ref _channel);
        if (fd >= 0)
        {
            _ = Interop.Libc.Shutdown(fd);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(86, LogLevel.Warning, "The channel of moved connections from the previous generation failed: {Error}. Connections not received yet are closed by the previous generation.", EventName = "MoveChannelFailed")]
        public static partial void ChannelFailed(ILogger logger, string error);

        [LoggerMessage(87, LogLevel.Information, "The previous generation has moved its connections: {Adopted} adopted, {Refused} closed, {PassedOn} passed on to the next generation.", EventName = "MoveChannelEnded")]
        public static partial void ChannelEnded(ILogger logger, int adopted, int refused, int passedOn);

        [LoggerMessage(91, LogLevel.Error, "A moved connection's descriptor did not arrive: this process had no descriptor left (EMFILE; raise LimitNOFILE or ulimit -n), and the kernel dropped it with its connection. The next ones are received as they come; the count of those closed comes when the previous generation is done.", EventName = "MovedConnectionLost")]
        public static partial void Lost(ILogger logger);

        [LoggerMessage(93, LogLevel.Error, "A moved connection arrived as descriptor {Fd}, within {Reserve} of this process's limit: it and the next ones over that line are closed (their clients reconnect) so that the runtime keeps descriptors of its own. Raise LimitNOFILE or ulimit -n.", EventName = "MovedConnectionNearLimit")]
        public static partial void NearDescriptorLimit(ILogger logger, int fd, int reserve);

        [LoggerMessage(90, LogLevel.Debug, "The previous generation moved no connection here.", EventName = "NothingMoved")]
        public static partial void NothingMoved(ILogger logger);

        [LoggerMessage(88, LogLevel.Warning, "A moved connection was closed: {Reason} (listener socket inode {Inode}).", EventName = "MovedConnectionRefused")]
        public static partial void Refused(ILogger logger, string reason, ulong inode);
    }
}
