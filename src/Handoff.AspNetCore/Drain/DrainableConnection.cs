using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;

namespace Handoff.AspNetCore;

/// <summary>
/// A connection as Handoff hands it to Kestrel, and the drain's record of it: Kestrel's own
/// socket connection, except that the transport the HTTP layer gets may be an
/// <see cref="Http2ShutdownPipe"/>, and what the drain needs to know (whether a request is
/// running, since when the connection has been idle, whether it speaks HTTP/2).
/// </summary>
/// <remarks>
/// <para>Kestrel's TLS middleware replaces <see cref="Transport"/> with the decrypted pipe once
/// the handshake is done; that pipe is wrapped as it is set, so the HTTP/2 shutdown sits above
/// TLS for every endpoint, from code or from configuration, with no middleware to register. A
/// TLS connection that negotiated HTTP/1.1 (ALPN) gets the decrypted pipe itself: it can never
/// carry HTTP/2.</para>
/// <para>One object per connection does all of it, and it is also the connection's items
/// (<c>Items</c>): a request finds its connection's record through the items
/// feature it already has, with a type test instead of a dictionary lookup, and no dictionary is
/// made unless something else stores an item.</para>
/// </remarks>
internal sealed partial class DrainableConnection : ConnectionContext
{
    private static ReadOnlySpan<byte> Http11Alpn => "http/1.1"u8;

    private readonly ConnectionContext _inner;
    private IDuplexPipe _transport;
    private Http2ShutdownPipe? _http;

    // Requests running (low 32 bits) and ended (high 32 bits), in one word: each start and each
    // end is one atomic operation.
    private long _requests;

    // When the last response ended (the accept before the first), and the longest pause before
    // a next request, in milliseconds of the drain's request clock: Environment.TickCount64,
    // a read of a few nanoseconds (Stopwatch takes 25).
    private long _lastEndMs;
    private int _longestPauseMs;
    private int _closeRequested;
    private bool _shutdownBegun;
    private bool _shutdownSeenSent;
    private long _shutdownSent;

    public DrainableConnection(ConnectionContext inner, long nowMs = 0, object? owner = null)
    {
        _inner = inner;

        // A transport always comes with a socket connection; a test's bare context may lack one.
        _http = inner.Transport is { } transport ? new Http2ShutdownPipe(transport) : null;
        _transport = (IDuplexPipe?)_http ?? inner.Transport!;
        _lastEndMs = nowMs;
        Owner = owner;

        // Not read first: Kestrel's socket connection makes its dictionary on the first read,
        // and a connection just accepted has no item.
        inner.Items = this;
    }

    /// <summary>The connection a request came on, if Handoff's listener accepted it.</summary>
    public static DrainableConnection? Find(HttpContext context) =>
        context.Features.Get<IConnectionItemsFeature>()?.Items as DrainableConnection;

    /// <summary>Kestrel's id of the connection.</summary>
    public string Id => _inner.ConnectionId;

    /// <summary>The listener that accepted the connection.</summary>
    public object? Owner { get; }

    /// <summary>The connection's place in <see cref="ConnectionTable"/>, -1 when not in it.</summary>
    internal int Slot { get; set; } = -1;

    /// <summary>The pipe the HTTP layer reads, when it may carry HTTP/2 (above TLS when there is TLS).</summary>
    public Http2ShutdownPipe? Http => _http;

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
            }
            else if (_inner.Features.Get<ITlsApplicationProtocolFeature>()?.ApplicationProtocol.Span.SequenceEqual(Http11Alpn) == true)
            {
                _http = null;
                _transport = value;
            }
            else
            {
                _http = new Http2ShutdownPipe(value);
                _transport = _http;
            }
        }
    }

    public override string ConnectionId
    {
        get => _inner.ConnectionId;
        set => _inner.ConnectionId = value;
    }

    public override IFeatureCollection Features => _inner.Features;

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

    /// <summary>Set by the drain when Kestrel is done with the connection.</summary>
    internal Action<DrainableConnection>? Disposed { get; set; }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        if (_moving is { } move)
        {
            move.Aborted = true;
        }

        _inner.Abort(abortReason);
    }

    public void AbortAtDrainTimeout() => Abort(new ConnectionAbortedException("Handoff:DrainTimeout expired before the connection finished."));

    // Kestrel disposes every connection it accepted once it is done with it, whatever happened:
    // the drain forgets it then (no registration on ConnectionClosed, one object fewer).
#pragma warning disable CA2215 // The base does nothing; the socket connection underneath is what is disposed.
    public override async ValueTask DisposeAsync()
    {
        try
        {
            if (_moving is { } move)
            {
                try
                {
                    await MoveOrCloseAsync().ConfigureAwait(false);
                }
#pragma warning disable CA1031 // Whatever failed, the connection must still be disposed (closed), and counted.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    move.Target.CountFailed(e);
                }
            }

            await _inner.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            Disposed?.Invoke(this);
        }
    }
#pragma warning restore CA2215

    /// <summary>True once this connection alone drains (its endpoint is being reloaded):
    /// responses get <c>Connection: close</c> as in a generation's drain.</summary>
    public bool Draining { get; set; }

    /// <summary>Set by the request pipeline for a connection whose HTTP/2 Handoff does not see
    /// in its transport (then GOAWAY is Kestrel's alone).</summary>
    public bool IsHttp2 { get; set; }

    public bool IsCloseRequested => Volatile.Read(ref _closeRequested) != 0;

    /// <summary>A request began; <paramref name="nowMs"/> is <see cref="Environment.TickCount64"/>.</summary>
    public void RequestStarted(long nowMs)
    {
        // The pause since the last response: how long this client leaves the connection idle
        // between its requests. (Concurrent HTTP/2 streams may race here; a lost maximum only
        // makes the drain close the connection sooner, as it would without this.)
        if (Volatile.Read(ref _requests) >> 32 != 0)
        {
            long pause = nowMs - Volatile.Read(ref _lastEndMs);
            if (pause > Volatile.Read(ref _longestPauseMs))
            {
                Volatile.Write(ref _longestPauseMs, (int)Math.Min(pause, int.MaxValue));
            }
        }

        Interlocked.Increment(ref _requests);
    }

    /// <summary>A request's response completed; <paramref name="nowMs"/> is <see cref="Environment.TickCount64"/>.</summary>
    public void RequestEnded(long nowMs)
    {
        // The time first, then the count: whoever sees no request running sees this end's time.
        Volatile.Write(ref _lastEndMs, nowMs);
        Interlocked.Add(ref _requests, (1L << 32) - 1);
        if (_moving is not null)
        {
            CloseForMove();
        }
    }

    /// <summary>The longest pause between a response and the next request seen on this
    /// connection, in milliseconds; zero before its second request.</summary>
    public long LongestPauseMs => Volatile.Read(ref _longestPauseMs);

    /// <summary>True while a request runs on the connection.</summary>
    public bool HasActiveRequest => (int)Volatile.Read(ref _requests) > 0;

    /// <summary>True when no request runs and none ended after <paramref name="sinceMs"/> (the
    /// request clock's milliseconds; the accept counts as the first end).</summary>
    public bool IsIdleSince(long sinceMs) =>

        // The count before the time (RequestEnded writes them the other way round): a response
        // that ends between the two reads is never taken for an old one.
        !HasActiveRequest && Volatile.Read(ref _lastEndMs) <= sinceMs;

    /// <summary>Asks Kestrel to close the connection gracefully: an idle HTTP/1.1 connection
    /// is closed at once, a request in flight gets <c>Connection: close</c>, HTTP/2 gets GOAWAY.</summary>
    public void RequestClose()
    {
        if (Interlocked.Exchange(ref _closeRequested, 1) == 0)
        {
            _inner.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
        }
    }

    /// <summary>True once <see cref="ShutdownHttp2"/> began the first phase.</summary>
    public bool Http2ShutdownBegun => _shutdownBegun;

    /// <summary>Set for a connection that carries a WebSocket when the drain closes it: the
    /// client must know that the connection takes no new stream before it reconnects.</summary>
    public bool SendHttp2ShutdownNow { get; set; }

    /// <summary>Forgets a first phase that was given up before anything was sent (the generation
    /// accepts again): the next drain begins it anew.</summary>
    public void ResetHttp2Shutdown()
    {
        _shutdownBegun = false;
        _shutdownSeenSent = false;
        SendHttp2ShutdownNow = false;
    }

    /// <summary>
    /// The HTTP/2 drain, called on every tick of the drain: first GOAWAY(2^31-1) and a PING
    /// (<see cref="Http2ShutdownPipe"/>), just before the next frame that ends a stream until
    /// <paramref name="sendNow"/>, then, once the client acknowledged the PING or
    /// <paramref name="acknowledgeLimit"/> after the GOAWAY went, Kestrel's graceful close with
    /// its final GOAWAY.
    /// </summary>
    public void ShutdownHttp2(Http2ShutdownPipe pipe, long now, long acknowledgeLimit, bool sendNow)
    {
        if (!_shutdownBegun)
        {
            _shutdownBegun = true;
            if (!pipe.BeginShutdown(RequestClose, beforeStreamEnd: !sendNow))
            {
                RequestClose();
                return;
            }
        }
        else if (sendNow && !pipe.ShutdownSent)
        {
            pipe.SendShutdownNow();
        }

        // The client's time to acknowledge runs from the first tick that sees the GOAWAY sent.
        if (!_shutdownSeenSent)
        {
            if (pipe.ShutdownSent)
            {
                _shutdownSeenSent = true;
                _shutdownSent = now;
            }
        }
        else if (now - _shutdownSent >= acknowledgeLimit)
        {
            pipe.AbandonShutdown();
            RequestClose();
        }
    }
}
