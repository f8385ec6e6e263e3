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
    private int _closeRequested;

    public TrackedConnection(ConnectionContext connection, long now)
    {
        _connection = connection;
        _idleSince = now;
    }

    public bool IsHttp2 { get; set; }

    public bool IsCloseRequested => Volatile.Read(ref _closeRequested) != 0;

    public void RequestStarted() => Interlocked.Increment(ref _activeRequests);

    public void RequestEnded(long now)
    {
        Volatile.Write(ref _idleSince, now);
        Interlocked.Decrement(ref _activeRequests);
    }

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

    public void Abort() => _connection.Abort(new ConnectionAbortedException("Handoff:DrainTimeout expired before the connection finished."));
}
