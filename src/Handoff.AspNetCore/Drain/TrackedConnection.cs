using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace Handoff.AspNetCore;

/// <summary>What the drain needs to know about one connection: whether a request is running
/// on it, since when it has been idle, and whether it speaks HTTP/2.</summary>
internal sealed class TrackedConnection
{
    private readonly ConnectionContext _connection;
    private int _activeRequests;
    private long _idleSince;
    private long _longestPause;
    private int _served;
    private int _closeRequested;
    private bool _shutdownBegun;
    private bool _shutdownSeenSent;
    private long _shutdownSent;

    public TrackedConnection(ConnectionContext connection, long now, object? owner, ConnectionDrainer drainer)
    {
        _connection = connection;
        _idleSince = now;
        Owner = owner;
        Drainer = drainer;
        Id = connection.ConnectionId;
    }

    /// <summary>The drain that tracks the connection.</summary>
    public ConnectionDrainer Drainer { get; }

    /// <summary>Kestrel's id of the connection, the drain's key.</summary>
    public string Id { get; }

    /// <summary>The listener that accepted the connection.</summary>
    public object? Owner { get; }

    /// <summary>True once this connection alone drains (its endpoint is being reloaded):
    /// responses get <c>Connection: close</c> as in a generation's drain.</summary>
    public bool Draining { get; set; }

    /// <summary>Set by the request pipeline for a connection whose transport Handoff does not
    /// see (then GOAWAY is Kestrel's alone).</summary>
    public bool IsHttp2 { get; set; }

    /// <summary>The HTTP layer's transport, when the connection came through Handoff's listener.</summary>
    public Http2ShutdownPipe? Http => (_connection as DrainableConnection)?.Http;

    public bool IsCloseRequested => Volatile.Read(ref _closeRequested) != 0;

    public void RequestStarted(long now)
    {
        // The pause since the last response: how long this client leaves the connection idle
        // between its requests. (Concurrent HTTP/2 streams may race here; a lost maximum only
        // makes the drain close the connection sooner, as it would without this.)
        if (Volatile.Read(ref _served) != 0)
        {
            long pause = now - Volatile.Read(ref _idleSince);
            if (pause > Volatile.Read(ref _longestPause))
            {
                Volatile.Write(ref _longestPause, pause);
            }
        }

        Interlocked.Increment(ref _activeRequests);
    }

    public void RequestEnded(long now)
    {
        Volatile.Write(ref _idleSince, now);
        Volatile.Write(ref _served, 1);
        Interlocked.Decrement(ref _activeRequests);
    }

    /// <summary>The longest pause between a response and the next request seen on this
    /// connection, in timestamp ticks; zero before its second request.</summary>
    public long LongestPause => Volatile.Read(ref _longestPause);

    /// <summary>True when no request runs and none has ended since <paramref name="since"/>.</summary>
    public bool IsIdleSince(long since) =>
        Volatile.Read(ref _activeRequests) == 0 && Volatile.Read(ref _idleSince) <= since;

    /// <summary>Asks Kestrel to close the connection gracefully: an idle HTTP/1.1 connection
    /// is closed at once, a request in flight gets <c>Connection: close</c>, HTTP/2 gets GOAWAY.</summary>
    public void RequestClose()
    {
        if (Interlocked.Exchange(ref _closeRequested, 1) == 0)
        {
            _connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
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

    /// <summary>True while a request runs on the connection.</summary>
    public bool HasActiveRequest => Volatile.Read(ref _activeRequests) > 0;

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

    public void Abort() => _connection.Abort(new ConnectionAbortedException("Handoff:DrainTimeout expired before the connection finished."));
}
