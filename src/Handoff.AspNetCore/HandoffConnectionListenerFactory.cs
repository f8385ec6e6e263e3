using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Handoff.AspNetCore;

/// <summary>
/// Kestrel's transport for TCP and Unix endpoints under Handoff. Kestrel asks it to bind each
/// configured address; it answers with the socket inherited from the previous generation for
/// that address, or a socket it binds now, and lets Kestrel's own socket transport accept on it
/// through a descriptor Kestrel does not own. Kestrel therefore never closes, lingers or
/// unlinks a socket that a newer generation may be serving on.
/// </summary>
/// <remarks>
/// Kestrel tries its transport factories from the last registered to the first and takes the
/// first whose <see cref="IConnectionListenerFactorySelector.CanBind"/> accepts the endpoint, so
/// this factory, registered after Kestrel's, handles every TCP and Unix endpoint and leaves
/// file-handle endpoints (<c>ListenHandle</c>) to Kestrel's socket transport.
/// </remarks>
internal sealed class HandoffConnectionListenerFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly Upgrader _upgrader;
    private readonly ConnectionDrainer _drainer;
    private readonly SocketTransportFactory _sockets;

    public HandoffConnectionListenerFactory(Upgrader upgrader, ConnectionDrainer drainer, IOptions<SocketTransportOptions> socketOptions, ILoggerFactory loggerFactory)
    {
        _upgrader = upgrader;
        _drainer = drainer;
        _sockets = new SocketTransportFactory(socketOptions, loggerFactory);
    }

    // Descriptors: only the sockets systemd passed (socket activation), which Handoff asks
    // Kestrel to serve when no address is configured; any other ListenHandle is Kestrel's.
    public bool CanBind(EndPoint endpoint) =>
        ListenerAddress.IsSupported(endpoint) ||
        (endpoint is FileHandleEndPoint handle && _upgrader.Listeners.UnclaimedActivated.Any(l => (ulong)l.FileDescriptor == handle.FileHandle));

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        Listener listener;
        try
        {
            if (endpoint is FileHandleEndPoint handle)
            {
                if (_upgrader.Listeners.ClaimDescriptor((int)handle.FileHandle) is not { } claimed)
                {
                    // A configured address claimed this activated socket already and serves it.
                    return new IdleConnectionListener(endpoint);
                }

                listener = claimed;
            }
            else
            {
                listener = _upgrader.Listeners.Listen(endpoint);
            }
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            // Kestrel's own type for this, which its address fallbacks (localhost, *) expect.
            throw new AddressInUseException(e.Message, e);
        }

        // Kestrel's socket transport wraps a FileHandleEndPoint in a SafeSocketHandle that does
        // not own the descriptor: disposing it ends pending accepts and never closes the fd.
        var inner = await _sockets.BindAsync(new FileHandleEndPoint((ulong)listener.FileDescriptor, FileHandleType.Auto), cancellationToken).ConfigureAwait(false);
        var connectionListener = new HandoffConnectionListener(inner, listener, _drainer);
        listener.OnClosing(() => connectionListener.UnbindAsync());
        return connectionListener;
    }
}

/// <summary>A listener that never yields a connection, for an activated socket that a configured
/// address serves already: Kestrel binds it without error and nothing is accepted twice.</summary>
internal sealed class IdleConnectionListener(EndPoint endPoint) : IConnectionListener
{
    private readonly TaskCompletionSource _unbound = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public EndPoint EndPoint { get; } = endPoint;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        await _unbound.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        return null;
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        _unbound.TrySetResult();
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        _unbound.TrySetResult();
        return ValueTask.CompletedTask;
    }
}
