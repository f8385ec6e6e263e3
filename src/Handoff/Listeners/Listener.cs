using System.Net;
using System.Net.Sockets;

namespace Handoff;

/// <summary>
/// One listening socket that a generation serves on and hands to the next generation. Handoff
/// owns its file descriptor: servers accept through sockets that do not own it
/// (<see cref="CreateAcceptSocket"/>), so nothing but <see cref="CloseAsync"/> ever closes it.
/// </summary>
/// <remarks>
/// Closing is the one delicate step of a handover. The same socket stays open in the new
/// generation, so this process must only drop its own reference: stop its accept loops first,
/// then <c>close(2)</c> the descriptor. It must never call <c>shutdown(2)</c> or
/// <c>connect(AF_UNSPEC)</c> on it, which would stop the listener for every process, and never
/// unlink a Unix socket path that the new generation still serves on.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "Its CancellationTokenSources have no timer and hold nothing but memory; accept loops may link to their tokens after they are cancelled.")]
public sealed class Listener
{
    private readonly Lock _gate = new();
    private readonly List<Func<ValueTask>> _acceptLoops = [];
    private readonly CancellationTokenSource _closed = new();
    private IAsyncDisposable? _parked;
    private IDisposable? _parkedClosing;
    private Socket? _acceptSocket;
    private AcceptGate _acceptGate = new();
    private int _fd;

    internal Listener(int fd, EndPoint endPoint, bool inherited, bool activated = false)
    {
        _fd = fd;
        EndPoint = endPoint;
        IsInherited = inherited;
        IsActivated = activated;
        if (endPoint is IPEndPoint)
        {
            try
            {
                // Kept: the socket is known by it after this process has closed its descriptor.
                SocketInode = (uint)ProcFs.SelfInode(fd);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Not readable here (no /proc): the accept queue cannot be watched.
            }
        }
    }

    /// <summary>Checks that <paramref name="fd"/> is a listening TCP or Unix stream socket and
    /// returns its address; else throws, naming it as <paramref name="where"/> says.</summary>
    internal static EndPoint CheckListening(int fd, string where)
    {
        int error = Interop.Libc.GetSocketOption(fd, Interop.Libc.SO_TYPE, out int type);
        if (error != 0)
        {
            throw new HandoffProtocolException(error == Interop.Libc.ENOTSOCK
                ? $"{where} is not a socket."
                : $"{where} cannot be read as a socket (errno {error}); is it open?");
        }

        if (type != Interop.Libc.SOCK_STREAM)
        {
            throw new HandoffProtocolException($"{where} is not a stream socket (SO_TYPE {type}).");
        }

        error = Interop.Libc.GetSocketOption(fd, Interop.Libc.SO_ACCEPTCONN, out int listening);
        if (error != 0 || listening == 0)
        {
            throw new HandoffProtocolException($"{where} is a socket but not a listening one.");
        }

        using var probe = new Socket(new SafeSocketHandle(fd, ownsHandle: false));
        return probe.LocalEndPoint is { } endPoint && ListenerAddress.IsSupported(endPoint)
            ? endPoint
            : throw new HandoffProtocolException($"{where} is a {probe.AddressFamily} socket; only TCP and Unix domain sockets can be handed over.");
    }

    /// <summary>The address the socket is bound to, as the kernel reports it (a port of 0 in the
    /// configuration shows here as the port actually assigned).</summary>
    public EndPoint EndPoint { get; }

    /// <summary>True when the socket came from the previous generation, false when this
    /// generation bound it.</summary>
    public bool IsInherited { get; }

    /// <summary>True when systemd created the socket (socket activation, <c>LISTEN_FDS</c>) for
    /// the first generation. systemd holds it too: its Unix socket path is systemd's to remove,
    /// and connections wait in its queue while no generation runs.</summary>
    internal bool IsActivated { get; }

    /// <summary>The descriptor number, or -1 once closed.</summary>
    internal int FileDescriptor
    {
        get
        {
            lock (_gate)
            {
                return _fd;
            }
        }
    }

    internal bool IsClosed => FileDescriptor < 0;

    /// <summary>The TCP socket's inode number, by which the ASP.NET Core drain's <c>AcceptQueues</c> finds its
    /// queue; null for a Unix socket.</summary>
    internal uint? SocketInode { get; }

    /// <summary>Whether the generation accepts; set by the registry.</summary>
    /// <remarks>Swapped while accept loops run (a socket the next generation no longer serves
    /// gets its own gate during a handover): each loop reads it afresh after its gate closes.</remarks>
    internal AcceptGate Gate { get => Volatile.Read(ref _acceptGate); set => Volatile.Write(ref _acceptGate, value); }

    /// <summary>
    /// Accepts the next connection on this listener as soon as this generation accepts
    /// connections: not before it is ready, not while it hands over to a newer generation
    /// (unless that one dies and this one resumes). Returns null once the listener is closed.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public async ValueTask<Socket?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        Socket socket;
        lock (_gate)
        {
            if (_fd < 0)
            {
                return null;
            }

            socket = _acceptSocket ??= CreateAcceptSocketLocked();
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closed.Token);
        while (true)
        {
            try
            {
                var gateClosing = await Gate.WaitOpenAsync(stop.Token).ConfigureAwait(false);
                using var accept = CancellationTokenSource.CreateLinkedTokenSource(stop.Token, gateClosing);
                return await socket.AcceptAsync(accept.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                if (_closed.IsCancellationRequested)
                {
                    return null;
                }

                // The gate closed: wait for it to open again.
            }
            catch (Exception e) when (e is ObjectDisposedException or SocketException && _closed.IsCancellationRequested)
            {
                return null;
            }
        }
    }

    /// <summary>
    /// A <see cref="Socket"/> over this listener for a server's own accept loop, which then must
    /// itself wait until the generation is ready; <see cref="AcceptAsync"/> does that. The socket does
    /// not own the descriptor; <see cref="CloseAsync"/> disposes it, which ends a pending
    /// <see cref="Socket.AcceptAsync(CancellationToken)"/>. Use only asynchronous accepts on it
    /// (see docs/platform-notes.md).
    /// </summary>
    public Socket CreateAcceptSocket()
    {
        lock (_gate)
        {
            return CreateAcceptSocketLocked();
        }
    }

    private Socket CreateAcceptSocketLocked()
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        var socket = new Socket(new SafeSocketHandle(_fd, ownsHandle: false));
        _acceptLoops.Add(() =>
        {
            socket.Dispose();
            return ValueTask.CompletedTask;
        });
        return socket;
    }

    /// <summary>Registers a callback that stops an accept loop running on this listener; it
    /// runs before the descriptor is closed. Disposing the result removes it (the loop ended
    /// and the listener lives on, as in a configuration reload).</summary>
    internal IDisposable OnClosing(Func<ValueTask> stopAcceptLoop)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_fd < 0, this);
            _acceptLoops.Add(stopAcceptLoop);
        }

        return new Unregistration(this, stopAcceptLoop);
    }

    /// <summary>
    /// Keeps a server's acceptor (its socket object over this descriptor) for the endpoint that
    /// replaces it in a configuration reload, which takes it back with <see cref="TakeParked"/>.
    /// The acceptor itself must be reused: the runtime registers a descriptor with its event
    /// loop once, and a second socket object over the same descriptor fails with EEXIST. Closing
    /// the listener disposes a parked acceptor.
    /// </summary>
    internal async ValueTask ParkAsync(IAsyncDisposable acceptor)
    {
        IDisposable closing;
        try
        {
            closing = OnClosing(async () =>
            {
                if (TakeParked() is { } parked)
                {
                    await parked.DisposeAsync().ConfigureAwait(false);
                }
            });
        }
        catch (ObjectDisposedException)
        {
            await acceptor.DisposeAsync().ConfigureAwait(false);
            return;
        }

        lock (_gate)
        {
            _parked = acceptor;
            _parkedClosing = closing;
        }
    }

    /// <summary>The acceptor parked by <see cref="ParkAsync"/>, once; null if there is none.</summary>
    internal IAsyncDisposable? TakeParked()
    {
        IAsyncDisposable? parked;
        IDisposable? closing;
        lock (_gate)
        {
            parked = _parked;
            closing = _parkedClosing;
            _parked = null;
            _parkedClosing = null;
        }

        closing?.Dispose();
        return parked;
    }

    /// <summary>Stops accepting in this process: ends every accept loop, then closes this
    /// process's descriptor. Other processes holding the same socket keep accepting.</summary>
    public async ValueTask CloseAsync()
    {
        Func<ValueTask>[] loops;
        int fd;
        lock (_gate)
        {
            if (_fd < 0)
            {
                return;
            }

            fd = _fd;
            _fd = -1;
            loops = [.. _acceptLoops];
            _acceptLoops.Clear();
        }

        _closed.Cancel();

        foreach (var stop in loops)
        {
            await stop().ConfigureAwait(false);
        }

        Interop.Libc.Close(fd);
    }

    /// <inheritdoc />
    public override string ToString() => $"{ListenerAddress.Format(EndPoint)} (fd {FileDescriptor})";

    private sealed class Unregistration(Listener listener, Func<ValueTask> stopAcceptLoop) : IDisposable
    {
        public void Dispose()
        {
            lock (listener._gate)
            {
                listener._acceptLoops.Remove(stopAcceptLoop);
            }
        }
    }
}
