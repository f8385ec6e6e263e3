using System.Buffers.Binary;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;


namespace Handoff.AspNetCore;

/// <summary>HTTP/1.1's Upgrade, seen by ASP.NET Core's WebSocket middleware: the upgraded
/// stream of a WebSocket is one the drain can close.</summary>
internal sealed class DrainingUpgradeFeature(IHttpUpgradeFeature inner, ConnectionDrainer drainer, HttpContext context) : IHttpUpgradeFeature
{
    public bool IsUpgradableRequest => inner.IsUpgradableRequest;

    public async Task<Stream> UpgradeAsync()
    {
        // From here its bytes are another protocol's: the connection never moves (a move waits
        // for the request's end, which comes after this).
        DrainableConnection.Find(context)?.MarkUpgraded();
        var stream = await inner.UpgradeAsync().ConfigureAwait(false);
        bool webSocket = string.Equals(context.Request.Headers.Upgrade, "websocket", StringComparison.OrdinalIgnoreCase);
        return webSocket ? WebSocketDrainStream.Track(stream, drainer, context) : stream;
    }
}

/// <summary>HTTP/2's extended CONNECT (RFC 8441), the same for WebSockets over HTTP/2.</summary>
internal sealed class DrainingExtendedConnectFeature(IHttpExtendedConnectFeature inner, ConnectionDrainer drainer, HttpContext context) : IHttpExtendedConnectFeature
{
    public bool IsExtendedConnect => inner.IsExtendedConnect;

    public string? Protocol => inner.Protocol;

    public async ValueTask<Stream> AcceptAsync()
    {
        var stream = await inner.AcceptAsync().ConfigureAwait(false);
        bool webSocket = string.Equals(inner.Protocol, "websocket", StringComparison.OrdinalIgnoreCase);
        return webSocket ? WebSocketDrainStream.Track(stream, drainer, context) : stream;
    }
}

/// <summary>
/// The stream under a server WebSocket. At drain start it writes a close frame with status 1012
/// (Service Restart) between two of the WebSocket's frames (.NET's WebSocket writes each frame
/// with one write, and the writes are serialized here), then swallows what the WebSocket writes
/// after it: its own reply to the client's close in particular, which would be a second close.
/// The application sees the client's close in its receive loop and ends as usual; one that
/// does not read is aborted <see cref="CloseGrace"/> later.
/// </summary>
internal sealed class WebSocketDrainStream : Stream
{
    /// <summary>RFC 6455's registry: 1012 Service Restart, "the client may reconnect" (an
    /// upgrade or a configuration reload).</summary>
    public const int ServiceRestart = 1012;

    /// <summary>RFC 6455: 1001 Going Away, "a server going down" (a stop with no successor).</summary>
    public const int GoingAway = 1001;

    private static readonly TimeSpan CloseGrace = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan WriteLimit = TimeSpan.FromSeconds(1);
    private static readonly byte[] RestartFrame = BuildCloseFrame(ServiceRestart, "Service Restart");
    private static readonly byte[] GoingAwayFrame = BuildCloseFrame(GoingAway, "Going Away");

    private readonly Stream _inner;
    private readonly ConnectionDrainer _drainer;
    private readonly HttpContext _context;
    private readonly SemaphoreSlim _write = new(1, 1);
    private readonly Lock _lock = new();
    private bool _ended;
    private int _closing;
    private volatile bool _closeSent;

    private WebSocketDrainStream(Stream inner, ConnectionDrainer drainer, HttpContext context)
    {
        _inner = inner;
        _drainer = drainer;
        _context = context;
        Connection = DrainableConnection.Find(context);
    }

    /// <summary>The connection it runs on, if Handoff's listener accepted it.</summary>
    public DrainableConnection? Connection { get; }

    public static Stream Track(Stream stream, ConnectionDrainer drainer, HttpContext context)
    {
        if (context.GetEndpoint()?.Metadata.GetMetadata<HandoffKeepWebSocketsOpenAttribute>() is not null)
        {
            return stream;
        }

        var tracked = new WebSocketDrainStream(stream, drainer, context);
        context.Response.RegisterForDispose(new Ending(tracked));
        drainer.Register(tracked);
        return tracked;
    }

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
    /// <see cref="CloseGrace"/> to end the request before aborting it.</summary>
    public async Task CloseAsync(bool restart)
    {
        if (Interlocked.Exchange(ref _closing, 1) != 0)
        {
            return;
        }

        try
        {
            using var limit = new CancellationTokenSource(WriteLimit);
            await _write.WaitAsync(limit.Token).ConfigureAwait(false);
            try
            {
                await _inner.WriteAsync(restart ? RestartFrame : GoingAwayFrame, limit.Token).ConfigureAwait(false);
                await _inner.FlushAsync(limit.Token).ConfigureAwait(false);
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

        lock (_lock)
        {
            // The context is pooled: abort it only while it still belongs to this request.
            if (!_ended)
            {
                _context.Abort();
            }
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, count);

    public override int Read(Span<byte> buffer) => _inner.Read(buffer);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => _inner.ReadAsync(buffer, offset, count, cancellationToken);

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => _inner.ReadAsync(buffer, cancellationToken);

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _write.Wait();
        try
        {
            if (!_closeSent)
            {
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
            if (!_closeSent)
            {
                await _inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _write.Release();
        }
    }

    public override void Flush() => _inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner.Dispose();
        }

        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        await _inner.DisposeAsync().ConfigureAwait(false);
        await base.DisposeAsync().ConfigureAwait(false);
    }

    private static byte[] BuildCloseFrame(int status, string reason)
    {
        // FIN and opcode 8 (close), unmasked (server to client), a payload under 126 bytes: the
        // status code in network order, then the reason in UTF-8 (RFC 6455 §5.5.1).
        byte[] text = System.Text.Encoding.UTF8.GetBytes(reason);
        var frame = new byte[2 + 2 + text.Length];
        frame[0] = 0x88;
        frame[1] = (byte)(2 + text.Length);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(2), (ushort)status);
        text.CopyTo(frame, 4);
        return frame;
    }

    // Runs when the request ends, before ASP.NET Core reuses its context.
    private sealed class Ending(WebSocketDrainStream stream) : IDisposable
    {
        public void Dispose()
        {
            lock (stream._lock)
            {
                stream._ended = true;
            }

            stream._drainer.Unregister(stream);
        }
    }
}
