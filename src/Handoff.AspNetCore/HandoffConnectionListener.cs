using System.Net;
using Microsoft.AspNetCore.Connections;

namespace Handoff.AspNetCore;

/// <summary>Kestrel's view of one Handoff <see cref="Listener"/>: accepts through Kestrel's
/// socket transport once the <see cref="AcceptGate"/> is open, reports the real address (so
/// "Now listening on" shows the real port), and registers every accepted connection with the
/// <see cref="ConnectionDrainer"/>.</summary>
internal sealed class HandoffConnectionListener : IConnectionListener
{
    private readonly IConnectionListener _inner;
    private readonly Listener _listener;
    private readonly ConnectionDrainer _drainer;
    private readonly AcceptGate _gate;
    private readonly CancellationTokenSource _unbound = new();

    public HandoffConnectionListener(IConnectionListener inner, Listener listener, ConnectionDrainer drainer, AcceptGate gate)
    {
        _inner = inner;
        _listener = listener;
        _drainer = drainer;
        _gate = gate;
    }

    public EndPoint EndPoint => _listener.EndPoint;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token);
        if (!await _gate.WaitAsync(linked.Token).ConfigureAwait(false))
        {
            return null; // Unbound before the generation became ready: Kestrel's loop ends.
        }

        var connection = await _inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
        if (connection is not null)
        {
            _drainer.Track(connection);
        }

        return connection;
    }

    /// <summary>Ends the accept loop; called by Kestrel, and by <see cref="Listener.CloseAsync"/>
    /// before it closes the descriptor.</summary>
    public async ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        await _unbound.CancelAsync().ConfigureAwait(false);
        await _inner.UnbindAsync(cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        // Kestrel disposes a listener when it stops or when a configuration reload removes the
        // endpoint; either way this process is done with the socket. A newer generation that
        // holds the same socket is not affected.
        await _unbound.CancelAsync().ConfigureAwait(false);
        await _inner.DisposeAsync().ConfigureAwait(false);
        await _listener.CloseAsync().ConfigureAwait(false);
        _unbound.Dispose();
    }
}
