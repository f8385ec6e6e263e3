using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Handoff.AspNetCore;

/// <summary>HTTP/1.1's Upgrade, seen by ASP.NET Core's WebSocket middleware: the upgraded
/// stream of a WebSocket is one the drain can close, or move.</summary>
internal sealed class DrainingUpgradeFeature(IHttpUpgradeFeature inner, ConnectionDrainer drainer, HttpContext context) : IHttpUpgradeFeature
{
    public bool IsUpgradableRequest => inner.IsUpgradableRequest;

    public async Task<Stream> UpgradeAsync()
    {
        // From here its bytes are another protocol's: the connection never moves as HTTP (a
        // move waits for the request's end, which comes after this).
        var connection = DrainableConnection.Find(context);
        connection?.MarkUpgraded();
        var stream = await inner.UpgradeAsync().ConfigureAwait(false);
        bool webSocket = string.Equals(context.Request.Headers.Upgrade, "websocket", StringComparison.OrdinalIgnoreCase);
        return webSocket ? WebSocketDrainStream.Track(stream, drainer, context, connection) : stream;
    }
}

/// <summary>HTTP/2's extended CONNECT (RFC 8441), the same for WebSockets over HTTP/2 (which
/// never move: the connection carries other streams).</summary>
internal sealed class DrainingExtendedConnectFeature(IHttpExtendedConnectFeature inner, ConnectionDrainer drainer, HttpContext context) : IHttpExtendedConnectFeature
{
    public bool IsExtendedConnect => inner.IsExtendedConnect;

    public string? Protocol => inner.Protocol;

    public async ValueTask<Stream> AcceptAsync()
    {
        var stream = await inner.AcceptAsync().ConfigureAwait(false);
        bool webSocket = string.Equals(inner.Protocol, "websocket", StringComparison.OrdinalIgnoreCase);
        return webSocket ? WebSocketDrainStream.Track(stream, drainer, context, DrainableConnection.Find(context), http2: true) : stream;
    }
}

/// <summary>
/// The stream under a server WebSocket. At drain start it writes a close frame with status 1012
/// (Service Restart) between two of the WebSocket's frames (.NET's WebSocket writes each frame
/// with one write, and the writes are serialized here), then swallows what the WebSocket writes
/// after it: its own reply to the client's close in particular, which would be a second close.
/// The application sees the client's close in its receive loop and ends as usual; one that
/// does not read is aborted <see cref="CloseGrace"/> later. Under a session of
/// <see cref="Microsoft.AspNetCore.Builder.HandoffWebSocketEndpointRouteBuilderExtensions.MapHandoffWebSocket"/> it can also
/// move the connection to the new generation instead (WebSocketDrainStream.Move.cs).
/// </summary>
internal sealed partial class WebSocketDrainStream : Stream
{
    /// <summary>RFC 6455's registry: 1012 Service Restart, "the client may reconnect" (an
    /// upgrade or a configuration reload).</summary>
    public const int ServiceRestart = 1012;

    /// <summary>RFC 6455: 1001 Going Away, "a server going down" (a stop with no successor).</summary>
    public const int GoingAway = 1001;

    private static readonly TimeSpan CloseGrace = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan WriteLimit = TimeSpan.FromSeconds(1);

    /// <summary>The close frame a drain sends, and a new generation sends a WebSocket it cannot
    /// resume.</summary>
    private static readonly byte[] RestartFrame = WebSocketRestart.Frame;
    private static readonly byte[] GoingAwayFrame = WebSocketRestart.BuildCloseFrame(GoingAway, "Going Away");

    private readonly Stream _inner;
    private readonly ConnectionDrainer _drainer;
    private readonly Action _abort;
    private readonly SemaphoreSlim _write = new(1, 1);
    private readonly Lock _lock = new();
    private bool _ended;
    private int _closing;
    private int _drainAsked;
    private volatile bool _closeSent;

    private WebSocketDrainStream(Stream inner, ConnectionDrainer drainer, DrainableConnection? connection, Action abort, HandoffWebSocketEndpoint? movable, ReadOnlyMemory<byte> unread)
    {
        _inner = inner;
        _drainer = drainer;
        _abort = abort;
        Connection = connection;
        Endpoint = movable;
        if (movable is not null)
        {
            _in = new byte[Math.Max(InitialBuffer, unread.Length)];
            unread.CopyTo(_in);
            _inEnd = unread.Length;
        }
    }

    /// <summary>The connection it runs on, if Handoff's listener accepted it and Kestrel serves it.</summary>
    public DrainableConnection? Connection { get; }

    /// <summary>The endpoint whose session this WebSocket runs, when its connections move.</summary>
    public HandoffWebSocketEndpoint? Endpoint { get; }

    public static Stream Track(Stream stream, ConnectionDrainer drainer, HttpContext context, DrainableConnection? connection, bool http2 = false)
    {
        var metadata = context.GetEndpoint()?.Metadata;
        if (metadata?.GetMetadata<HandoffKeepWebSocketsOpenAttribute>() is not null)
        {
            return stream;
        }

        var movable = metadata?.GetMetadata<HandoffWebSocketEndpoint>();
        var tracked = new WebSocketDrainStream(stream, drainer, connection, () => AbortRequest(context), movable, default);
        if (movable is not null)
        {
            // Alone on its connection, in clear, from one of Handoff's listeners: it can move.
            tracked.Carrier = http2 ? null : connection?.WebSocketCarrier();
            tracked.MoveRefusal = tracked.Carrier is not null ? null
                : http2 ? WebSocketRefusal.Http2
                : WebSocketRefusal.Tls;
            if (connection is not null)
            {
                connection.CarriesMovableWebSocket = tracked.Carrier is not null;
            }
        }

        context.Features.Set(tracked);
        context.Response.RegisterForDispose(new Ending(tracked));
        drainer.Register(tracked);
        return tracked;

        static void AbortRequest(HttpContext context) => context.Abort();
    }

    /// <summary>A WebSocket moved here from the previous generation, on a socket this process
    /// owns alone (no Kestrel connection): <paramref name="unread"/> came first.</summary>
    public static WebSocketDrainStream Resumed(Stream socketStream, ConnectionDrainer drainer, HandoffWebSocketEndpoint endpoint, ReadOnlyMemory<byte> unread, Action abort) =>
        new(socketStream, drainer, connection: null, abort, endpoint, unread) { IsResumed = true };

    /// <summary>True for a WebSocket moved here: the drain waits for its session as for a connection.</summary>
    public bool IsResumed { get; private init; }

    /// <summary>Its connection, when it can move (null under TLS or HTTP/2).</summary>
    public WebSocketCarrier? Carrier { get; set; }

    /// <summary>Why it cannot move, when it cannot whatever the new generation.</summary>
    public WebSocketRefusal? MoveRefusal { get; set; }

    /// <summary>The sub-protocol its handshake chose, which the new generation keeps.</summary>
    public string? SubProtocol { get; set; }

    public override bool CanRead => _inner.CanRead;

    public override bool CanSeek => false;

    public override bool CanWrite => _inner.CanWrite;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    /// <summary>Sends the close frame (once) with <see cref="ServiceRestart"/> or, when
    /// <paramref name="restart"/> is false, <see cref="GoingAway"/>, then gives the application
    /// <see cref="CloseGrace"/> to end the request before aborting it. A close handshake already
    /// under way (either side sent its close frame) is the application's to finish: no second
    /// close frame. False when the frame could not be written within a second (the client does
    /// not read, and the buffer toward it is full): the connection is then aborted, which its
    /// client sees as a reset, not as 1012.</summary>
    public async Task<bool> CloseAsync(bool restart)
    {
        if (Interlocked.Exchange(ref _closing, 1) != 0)
        {
            return true;
        }

        bool written = false;
        try
        {
            using var limit = new CancellationTokenSource(WriteLimit);
            await _write.WaitAsync(limit.Token).ConfigureAwait(false);
            try
            {
                // A WebSocket that moved meanwhile is the new generation's to close.
                if (!IsMoved && !_applicationClosed && !_closeReceived)
                {
                    await _inner.WriteAsync(restart ? RestartFrame : GoingAwayFrame, limit.Token).ConfigureAwait(false);
                    await _inner.FlushAsync(limit.Token).ConfigureAwait(false);
                }

                written = true;
            }
            finally
            {
                _closeSent = true;
                _write.Release();
            }

            await Task.Delay(CloseGrace).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A connection that failed or ended meanwhile needs nothing more.
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        Abort();
        return written;
    }

    /// <summary>True the first time only: a drain acts on each WebSocket once (moves or closes it).</summary>
    public bool TryAskDrain() => Interlocked.Exchange(ref _drainAsked, 1) == 0;

    /// <summary>Ends the connection at once (the drain's timeout, or a close the application
    /// did not follow), unless its request or session has ended.</summary>
    public void Abort()
    {
        lock (_lock)
        {
            // A request's context is pooled: aborted only while it still belongs to this request.
            if (!_ended)
            {
                _abort();
            }
        }
    }

    /// <summary>The request or session that used this stream has ended: the drain forgets it.</summary>
    public void End()
    {
        lock (_lock)
        {
            _ended = true;
        }

        _drainer.Unregister(this);
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (Endpoint is not null)
        {
            // WebSockets read asynchronously; a synchronous reader gets the same bytes.
            byte[] rented = new byte[buffer.Length];
            int read = ReadAsync(rented).AsTask().GetAwaiter().GetResult();
            rented.AsSpan(0, read).CopyTo(buffer);
            return read;
        }

        return _inner.Read(buffer);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Endpoint is null ? _inner.ReadAsync(buffer, cancellationToken) : ReadFramedAsync(buffer, cancellationToken);

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _write.Wait();
        try
        {
            if (IsMoved)
            {
                throw MovedException();
            }

            if (!_closeSent)
            {
                Written(buffer);
                _inner.Write(buffer);
            }
        }
        finally
        {
            _write.Release();
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await _write.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (IsMoved)
            {
                throw MovedException();
            }

            if (!_closeSent)
            {
                Written(buffer.Span);
                await _inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _write.Release();
        }
    }

    public override void Flush() => _inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => IsMoved ? Task.CompletedTask : _inner.FlushAsync(cancellationToken);

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing && !DeferDispose())
        {
            _inner.Dispose();
        }

        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        if (!DeferDispose())
        {
            await _inner.DisposeAsync().ConfigureAwait(false);
        }

        await base.DisposeAsync().ConfigureAwait(false);
    }

    // Runs when the request ends, before ASP.NET Core reuses its context.
    private sealed class Ending(WebSocketDrainStream stream) : IDisposable
    {
        public void Dispose() => stream.End();
    }
}
