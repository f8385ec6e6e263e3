using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Hosting;
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
internal sealed partial class HandoffConnectionListenerFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly Upgrader _upgrader;
    private readonly ConnectionDrainer _drainer;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger _logger;
    private readonly SocketTransportFactory _sockets;
    private readonly ConnectionAdoption _adoption;

    public HandoffConnectionListenerFactory(Upgrader upgrader, ConnectionDrainer drainer, IHostApplicationLifetime lifetime, IOptions<SocketTransportOptions> socketOptions, ILoggerFactory loggerFactory, ConnectionAdoption adoption)
    {
        _adoption = adoption;
        _upgrader = upgrader;
        _lifetime = lifetime;
        _logger = loggerFactory.CreateLogger<HandoffConnectionListenerFactory>();
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
            else if (_drainer.IsDraining || _lifetime.ApplicationStopping.IsCancellationRequested)
            {
                // A configuration reload in a generation that drains: the socket it let go of,
                // if it still has it, and never a new one, which would take the address from
                // (or fail beside) the generation that serves it now.
                if (_upgrader.Listeners.Reclaim(endpoint) is not { } reclaimed)
                {
                    Log.NotRebound(_logger, ListenerAddress.Format(endpoint));
                    return new IdleConnectionListener(endpoint);
                }

                listener = reclaimed;
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

        // After a configuration reload the socket comes back with the acceptor it had (see
        // Listener.ParkAsync). Otherwise Kestrel's socket transport accepts through a
        // FileHandleEndPoint, which it wraps in a SafeSocketHandle that does not own the
        // descriptor: disposing it ends pending accepts and never closes the fd.
        var inner = listener.TakeParked() as IConnectionListener
            ?? await _sockets.BindAsync(new FileHandleEndPoint((ulong)listener.FileDescriptor, FileHandleType.Auto), cancellationToken).ConfigureAwait(false);
        return new HandoffConnectionListener(inner, listener, _drainer, _upgrader, _adoption);
    }

    private static partial class Log
    {
        [LoggerMessage(47, LogLevel.Information, "A configuration reload asks for {Address} while this generation drains: not bound again (the new generation serves it).", EventName = "NotRebound")]
        public static partial void NotRebound(ILogger logger, string address);
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
