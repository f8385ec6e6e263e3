using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;

namespace Handoff.AspNetCore;

/// <summary>
/// A connection as Handoff hands it to Kestrel: Kestrel's own socket connection, except that
/// the transport the HTTP layer gets is an <see cref="Http2ShutdownPipe"/>. Kestrel's TLS
/// middleware replaces <see cref="Transport"/> with the decrypted pipe once the handshake is
/// done; that pipe is wrapped as it is set, so the HTTP/2 shutdown sits above TLS for every
/// endpoint, from code or from configuration, with no middleware to register.
/// </summary>
internal sealed class DrainableConnection : ConnectionContext
{
    private readonly ConnectionContext _inner;
    private IDuplexPipe _transport;
    private Http2ShutdownPipe _http;

    public DrainableConnection(ConnectionContext inner)
    {
        _inner = inner;
        _http = new Http2ShutdownPipe(inner.Transport);
        _transport = _http;
    }

    /// <summary>The pipe the HTTP layer reads: the last one set (above TLS when there is TLS).</summary>
    public Http2ShutdownPipe Http => _http;

    public override IDuplexPipe Transport
    {
        get => _transport;
        set
        {
            // TLS sets its decrypted pipe, and sets the original back when the connection ends.
            if (value is Http2ShutdownPipe known)
            {
                _http = known;
                _transport = known;
                return;
            }

            _http = new Http2ShutdownPipe(value);
            _transport = _http;
        }
    }

    public override string ConnectionId
    {
        get => _inner.ConnectionId;
        set => _inner.ConnectionId = value;
    }

    public override IFeatureCollection Features => _inner.Features;

    public override IDictionary<object, object?> Items
    {
        get => _inner.Items;
        set => _inner.Items = value;
    }

    public override CancellationToken ConnectionClosed
    {
        get => _inner.ConnectionClosed;
        set => _inner.ConnectionClosed = value;
    }

    public override EndPoint? LocalEndPoint
    {
        get => _inner.LocalEndPoint;
        set => _inner.LocalEndPoint = value;
    }

    public override EndPoint? RemoteEndPoint
    {
        get => _inner.RemoteEndPoint;
        set => _inner.RemoteEndPoint = value;
    }

    public override void Abort(ConnectionAbortedException abortReason) => _inner.Abort(abortReason);

#pragma warning disable CA2215 // The base does nothing; the socket connection underneath is what is disposed.
    public override ValueTask DisposeAsync() => _inner.DisposeAsync();
#pragma warning restore CA2215
}
