using System.Net;
using Microsoft.AspNetCore.Connections;

namespace Handoff.AspNetCore;

/// <summary>Kestrel's view of one Handoff <see cref="Listener"/>: accepts through Kestrel's
/// socket transport, reports the real address (so "Now listening on" shows the real port), and
/// registers every accepted connection with the <see cref="ConnectionDrainer"/>.</summary>
internal sealed class HandoffConnectionListener : IConnectionListener
{
    private readonly IConnectionListener _inner;
    private readonly Listener _listener;
    private readonly ConnectionDrainer _drainer;

    public HandoffConnectionListener(IConnectionListener inner, Listener listener, ConnectionDrainer drainer)
    {
        _inner = inner;
        _listener = listener;
        _drainer = drainer;
    }

    public EndPoint EndPoint => _listener.EndPoint;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        var connection = await _inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
        if (connection is not null)
        {
            _drainer.Track(connection);
        }

        return connection;
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default) => _inner.UnbindAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        // Kestrel disposes a listener when it stops or when a configuration reload removes the
        // endpoint; either way this process is done with the socket. A newer generation that
        // holds the same socket is not affected.
        await _inner.DisposeAsync().ConfigureAwait(false);
        await _listener.CloseAsync().ConfigureAwait(false);
    }
}
