using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Connections;

namespace Handoff.AspNetCore;

/// <summary>Kestrel's view of one Handoff <see cref="Listener"/>: accepts through Kestrel's
/// socket transport while the generation accepts (<see cref="Listener.Gate"/>), reports the
/// real address (so "Now listening on" shows the real port), and registers every accepted
/// connection with the <see cref="ConnectionDrainer"/>.</summary>
/// <remarks>
/// <para>
/// The accept loop outlives a closed gate: while the generation hands over to a newer one it
/// waits, and if that one dies within the rollback window it accepts again. Kestrel never sees
/// the pause; its loop ends only when the listener is closed or unbound.
/// </para>
/// <para>
/// Kestrel also unbinds and disposes a listener when a configuration reload changes its
/// endpoint (a replaced certificate file, say), then binds the new endpoint. Kestrel's own way
/// would close the socket (refusing connections until the new bind, resetting those queued)
/// and then close the endpoint's connections at once (an idle keep-alive connection may have a
/// request on the wire). Here the endpoint's connections drain as in an upgrade before the
/// unbind returns, and the socket, with its acceptor, goes back to the registry, where the new
/// endpoint claims it.
/// </para>
/// </remarks>
internal sealed class HandoffConnectionListener : IConnectionListener
{
    // Kestrel closes what is left of an endpoint's connections 5 s after a reload began.
    private static readonly TimeSpan ReloadDrainLimit = TimeSpan.FromSeconds(4);

    // How long a let-go socket waits for the endpoint that replaces it. Kestrel binds the
    // reloaded endpoints right after it has let go of the old ones, within milliseconds; an
    // endpoint removed from the configuration has its queued connections reset then.
    private static readonly TimeSpan ReloadGrace = TimeSpan.FromSeconds(1);

    private readonly IConnectionListener _inner;
    private readonly Listener _listener;
    private readonly ConnectionDrainer _drainer;
    private readonly Upgrader _upgrader;
    private readonly CancellationTokenSource _unbound = new();
    private readonly ConcurrentQueue<(ConnectionContext Connection, long WrittenBefore)> _adopted = new();
    private IDisposable? _closing;
    private bool _reloading;

    // Cancelled (and replaced) when a connection comes from the previous generation
    // (ConnectionAdoption), to wake a waiting accept. Linked where the unbind token was already
    // linked: an accept costs what it did before connections could move.
    private CancellationTokenSource _wake = new();

    private readonly ConnectionAdoption? _adoption;

    public HandoffConnectionListener(IConnectionListener inner, Listener listener, ConnectionDrainer drainer, Upgrader upgrader, ConnectionAdoption? adoption = null)
    {
        _inner = inner;
        _listener = listener;
        _drainer = drainer;
        _upgrader = upgrader;
        _closing = listener.OnClosing(StopAcceptingAsync);
        _adoption = adoption;
        adoption?.Register(this);
    }

    public EndPoint EndPoint => _listener.EndPoint;

    /// <summary>The socket this accepts from (the drain watches its accept queue).</summary>
    internal Listener Listener => _listener;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            // The wake-up first, then the queue: a connection adopted after the look cancels it.
            var wake = Volatile.Read(ref _wake);
            if (TakeAdopted() is { } adopted)
            {
                return adopted;
            }

            using var stop = cancellationToken.CanBeCanceled
                ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token, wake.Token)
                : CancellationTokenSource.CreateLinkedTokenSource(_unbound.Token, wake.Token);
            bool Stopped() => _unbound.IsCancellationRequested || cancellationToken.IsCancellationRequested;
            CancellationToken gateClosing;
            try
            {
                gateClosing = await _listener.Gate.WaitOpenAsync(stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!Stopped())
            {
                continue; // A connection was adopted.
            }
            catch (OperationCanceledException)
            {
                // Unbound: Kestrel's loop ends, after the connections moved here that wait (a
                // handover closes the listener while the previous generation still moves).
                return TakeAdopted();
            }

            ConnectionContext? connection;
            using (var accept = CancellationTokenSource.CreateLinkedTokenSource(stop.Token, gateClosing))
            {
                try
                {
                    connection = await _inner.AcceptAsync(accept.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!Stopped())
                {
                    continue; // The gate closed or a connection was adopted; one queued stays queued.
                }
                catch (OperationCanceledException)
                {
                    return TakeAdopted();
                }
            }

            return connection is null ? null : _drainer.Track(connection, this);
        }
    }

    // The next connection moved here, tracked as an accepted one; null when none waits.
    private DrainableConnection? TakeAdopted() =>
        _adopted.TryDequeue(out var adopted) ? _drainer.Track(adopted.Connection, this, adopted.WrittenBefore) : null;

    /// <summary>A connection moved from the previous generation: Kestrel gets it from the next
    /// (or the waiting) accept, as if accepted here. <paramref name="writtenBefore"/>: the
    /// kernel's count of bytes written into it so far (its next move waits for the count to
    /// reach what was written here too).</summary>
    internal void Adopt(ConnectionContext connection, long writtenBefore)
    {
        _adopted.Enqueue((connection, writtenBefore));
        Interlocked.Exchange(ref _wake, new CancellationTokenSource()).Cancel();

        // Kestrel's accept loop has ended meanwhile: nothing here will ever serve it.
        if (_unbound.IsCancellationRequested)
        {
            CloseAdopted();
        }
    }

    // Connections moved here that Kestrel will not take (its accept loop has ended): closed, as
    // the previous generation would have closed them without moving.
    private void CloseAdopted()
    {
        while (_adopted.TryDequeue(out var adopted))
        {
            _ = adopted.Connection.DisposeAsync().AsTask();
        }
    }

    /// <summary>Called by Kestrel when it stops, and when a configuration reload changes the
    /// endpoint. Before Handoff's drain has finished, Kestrel is not stopping: it is a reload.</summary>
    public async ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        if (_drainer.ServerStopping)
        {
            await StopAcceptingAsync().ConfigureAwait(false);
            return;
        }

        // A reload. Kestrel's accept loop ends (its pending accept is cancelled; a connection
        // stays queued), and the acceptor is kept for the endpoint that replaces this one,
        // unless Handoff closed the listener already (a generation that was superseded).
        _reloading = !_listener.IsClosed;
        await _unbound.CancelAsync().ConfigureAwait(false);

        // Kestrel closes the endpoint's connections its own way once this returns. A draining
        // generation lets its drain decide instead (it aborts at DrainTimeout); a serving one
        // holds new connections in the queue meanwhile, so it does not wait long.
        var options = _upgrader.Options;
        var servingLimit = TimeSpan.FromTicks(Math.Min(ReloadDrainLimit.Ticks, options.DrainTimeout.Ticks));
        await _drainer.DrainListenerAsync(this, ListenerAddress.Format(_listener.EndPoint), servingLimit, options.DrainTimeout, options.DrainIdleTimeout).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        _closing?.Dispose();
        _closing = null;
        _adoption?.Unregister(this);
        await _unbound.CancelAsync().ConfigureAwait(false);
        CloseAdopted();
        if (_reloading && !_listener.IsClosed)
        {
            await _listener.ParkAsync(_inner).ConfigureAwait(false);
            _upgrader.Listeners.Release(_listener, ReloadGrace);
        }
        else
        {
            // Kestrel stops: this process is done with the socket. A newer generation that
            // holds the same socket is not affected.
            await _inner.DisposeAsync().ConfigureAwait(false);
            await _listener.CloseAsync().ConfigureAwait(false);
        }

        _unbound.Dispose();
    }

    // Handoff closes the listener (a handover, a stop), or Kestrel stops: end Kestrel's accept
    // loop and let go of the runtime's socket object before the descriptor is closed.
    private async ValueTask StopAcceptingAsync()
    {
        try
        {
            if (!_unbound.IsCancellationRequested)
            {
                await _unbound.CancelAsync().ConfigureAwait(false);
            }

            CloseAdopted();

            await _inner.UnbindAsync().ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // Kestrel disposed this listener meanwhile: nothing accepts any more.
        }
    }
}
