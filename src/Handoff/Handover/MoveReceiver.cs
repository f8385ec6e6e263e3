using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>What became of a connection received on the move channel.</summary>
internal enum MoveOutcome
{
    /// <summary>Served here from now on.</summary>
    Adopted,

    /// <summary>Sent on to a newer generation (this one hands over too).</summary>
    PassedOn,

    /// <summary>Closed: nothing here serves it (its client sees the end of an idle connection,
    /// as without moving).</summary>
    Closed,
}

/// <summary>
/// The new generation's half of the move channel (<see cref="MoveChannel"/>): reads it on a
/// thread of its own until the previous generation has moved all it will, gives each connection
/// to whoever serves its kind, counts what became of them and answers with the totals. Shared by
/// the ASP.NET Core adoption and a raw server's <see cref="ConnectionDrain"/>, which differ only
/// in what adopting a connection means.
/// </summary>
internal sealed partial class MoveReceiver : IDisposable
{
    // Descriptors left free for everything else this process does: the runtime fails hard
    // (it aborts) when it cannot get one, so moved connections never take the last of them.
    internal const int DescriptorReserve = 64;

    private readonly ILogger _logger;
    private readonly HandoffMetrics? _metrics;
    private readonly Func<MovedConnection, MoveOutcome> _take;
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _closing = new();
    private int _channel = -1;
    private Thread? _thread;
    private int _adopted;
    private int _closed;
    private int _passedOn;
    private int _nearLimit;
    private int _lost;

    /// <param name="logger">Where the channel's failures and its end are logged.</param>
    /// <param name="metrics">Counts the outcomes when the channel ends.</param>
    /// <param name="take">Adopts, passes on or closes one connection whose descriptor arrived
    /// (it owns the descriptor); runs on the receiving thread, and the next frame is read when
    /// it returns.</param>
    public MoveReceiver(ILogger logger, HandoffMetrics? metrics, Func<MovedConnection, MoveOutcome> take)
    {
        _logger = logger;
        _metrics = metrics;
        _take = take;
    }

    public int Adopted => Volatile.Read(ref _adopted);

    /// <summary>Connections received and closed (nothing serves them, no descriptor left).</summary>
    public int Closed => Volatile.Read(ref _closed);

    public int PassedOn => Volatile.Read(ref _passedOn);

    /// <summary>The same counts by kind (outcomes adopted, passed_on, closed).</summary>
    public ConnectionTally Tally { get; } = new();

    /// <summary>True while the channel is read.</summary>
    public bool IsReceiving => _thread is { IsAlive: true };

    /// <summary>Completes when the previous generation has moved all it will (at once when it
    /// moves nothing here).</summary>
    public Task Ended => _thread is null ? Task.CompletedTask : _ended.Task;

    /// <summary>Reads <paramref name="channel"/> (this object owns it from now on) until the
    /// previous generation closes it.</summary>
    public void Start(int channel)
    {
        _channel = channel;
        _thread = new Thread(Receive) { IsBackground = true, Name = "Handoff moved connections" };
        _thread.Start();
    }

    /// <summary>Sends a received connection on to <paramref name="onward"/>, the drain's target
    /// of a generation that hands over while the previous one still moves connections to it,
    /// and closes this process's descriptor for it; waited for on the receiving thread, so the
    /// next frame is read once this one went.</summary>
    public static MoveOutcome PassOn(MoveTarget onward, MovedConnection moved) =>
        onward.PassOnAsync(moved).GetAwaiter().GetResult() ? MoveOutcome.PassedOn : MoveOutcome.Closed;

    private void Receive()
    {
        try
        {
            while (MoveChannel.Receive(_channel) is { } moved)
            {
                switch (Take(moved))
                {
                    case MoveOutcome.Adopted:
                        Tally.Add(moved.Kind, "adopted");
                        Interlocked.Increment(ref _adopted);
                        break;
                    case MoveOutcome.PassedOn:
                        Tally.Add(moved.Kind, "passed_on");
                        Interlocked.Increment(ref _passedOn);
                        break;
                    default:
                        Tally.Add(moved.Kind, "closed");
                        Interlocked.Increment(ref _closed);
                        break;
                }
            }

            // The previous generation has moved all it will: it learns what became of them.
            _ = MoveChannel.WriteTotals(_channel, Adopted + PassedOn, Closed);
        }
        catch (Exception e) when (e is HandoffProtocolException or IOException)
        {
            Log.ChannelFailed(_logger, e.Message);
        }
        finally
        {
            lock (_closing)
            {
                Interop.Libc.Close(_channel);
                _channel = -1;
            }

            _ended.TrySetResult();
            _metrics?.ConnectionsReceived(Tally);
            if (Adopted + Closed + PassedOn > 0)
            {
                Log.ChannelEnded(_logger, Adopted, Closed, PassedOn);
            }
            else
            {
                // The previous generation moved nothing (Handoff:MoveConnections is off there).
                Log.NothingMoved(_logger);
            }
        }
    }

    private MoveOutcome Take(MovedConnection moved)
    {
        if (moved.Fd < 0)
        {
            // One line for the first, the count at the end: a limit too low loses many at once.
            if (Interlocked.Increment(ref _lost) == 1)
            {
                Log.Lost(_logger);
            }

            return MoveOutcome.Closed;
        }

        // The kernel gives the lowest free number: every number below this one is taken.
        if (moved.Fd >= Interop.Libc.DescriptorLimit() - DescriptorReserve)
        {
            if (moved.Kind == MoveKind.WebSocket)
            {
                WebSocketRestart.Write(moved.Fd); // its client reconnects, as after a drain
            }

            Interop.Libc.Close(moved.Fd);
            if (Interlocked.Increment(ref _nearLimit) == 1)
            {
                Log.NearDescriptorLimit(_logger, moved.Fd, DescriptorReserve);
            }

            return MoveOutcome.Closed;
        }

        try
        {
            return _take(moved);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug in adopting one connection must not end the channel (and the process: this
            // is a thread of its own). Its descriptor is not closed here: whoever failed may
            // have handed it to an owner already, and closing a number twice can close another
            // connection that took it since.
            Log.Refused(_logger, $"{e.GetType().Name}: {e.Message}", moved.ListenerInode);
            return MoveOutcome.Closed;
        }
    }

    /// <summary>Logs a received connection that nothing here serves (the caller closes it).</summary>
    public void LogRefused(string reason, ulong listenerInode) => Log.Refused(_logger, reason, listenerInode);

    public void Dispose()
    {
        // A thread blocked in recvmsg wakes when the socket is shut down, not when it is closed.
        // Under the lock the thread closes it with: never a number it closed already.
        lock (_closing)
        {
            if (_channel >= 0)
            {
                _ = Interop.Libc.Shutdown(_channel);
            }
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
