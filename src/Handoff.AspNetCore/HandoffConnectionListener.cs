using System.Net;
using Microsoft.AspNetCore.Connections;

namespace Handoff.AspNetCore;

/// <summary>Kestrel's view of one Handoff <see cref="Listener"/>: accepts through Kestrel's
/// socket transport while the generation accepts (<see cref="Listener.Gate"/>), reports the
/// real address (so "Now listening on" shows the real port), and registers every accepted
/// connection with the <see cref="ConnectionDrainer"/>.</summary>
/// <remarks>
/// The accept loop outlives a closed gate: while the generation hands over to a newer one it
/// waits, and if that one dies within the rollback window it accepts again. Kestrel never sees
/// the pause; its loop ends only when the listener is closed or unbound.
/// </remarks>
internal sealed class HandoffConnectionListener : IConnectionListener
{
    private readonly IConnectionListener _inner;
    private readonly Listener _listener;
    private readonly ConnectionDrainer _drainer;
    private readonly CancellationTokenSource _unbound = new();

    public HandoffConnectionListener(IConnectionListener inner, Listener listener, ConnectionDrainer drainer)
    {
        _inner = inner;
        _listener = listener;
        _drainer = drainer;
    }

    public EndPoint EndPoint => _listener.EndPoint;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token);
        while (true)
        {
            CancellationToken gateClosing;
            try
            {
                gateClosing = await _listener.Gate.WaitOpenAsync(stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return null; // Unbound: Kestrel's loop ends.
            }

            ConnectionContext? connection;
            using (var accept = CancellationTokenSource.CreateLinkedTokenSource(stop.Token, gateClosing))
            {
                try
                {
                    connection = await _inner.AcceptAsync(accept.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!stop.IsCancellationRequested)
                {
                    continue; // The gate closed; the connection, if any, stays in the queue.
                }
                catch (OperationCanceledException)
                {
                    return null;
                }
            }

            if (connection is not null)
            {
                connection = new DrainableConnection(connection);
                _drainer.Track(connection);
            }

            return connection;
        }
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
