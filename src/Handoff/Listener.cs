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
public sealed class Listener
{
    private readonly Lock _gate = new();
    private readonly List<Func<ValueTask>> _acceptLoops = [];
    private int _fd;

    internal Listener(int fd, EndPoint endPoint, bool inherited)
    {
        _fd = fd;
        EndPoint = endPoint;
        IsInherited = inherited;
    }

    /// <summary>The address the socket is bound to, as the kernel reports it (a port of 0 in the
    /// configuration shows here as the port actually assigned).</summary>
    public EndPoint EndPoint { get; }

    /// <summary>True when the socket came from the previous generation, false when this
    /// generation bound it.</summary>
    public bool IsInherited { get; }

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

    /// <summary>
    /// A <see cref="Socket"/> over this listener for a server's own accept loop. The socket does
    /// not own the descriptor; <see cref="CloseAsync"/> disposes it, which ends a pending
    /// <see cref="Socket.AcceptAsync(CancellationToken)"/>. Use only asynchronous accepts on it
    /// (see docs/platform-notes.md).
    /// </summary>
    public Socket CreateAcceptSocket()
    {
        lock (_gate)
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
    }

    /// <summary>Registers a callback that stops an accept loop running on this listener; it
    /// runs before the descriptor is closed.</summary>
    internal void OnClosing(Func<ValueTask> stopAcceptLoop)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_fd < 0, this);
            _acceptLoops.Add(stopAcceptLoop);
        }
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

        foreach (var stop in loops)
        {
            await stop().ConfigureAwait(false);
        }

        Interop.Libc.Close(fd);
    }

    /// <inheritdoc />
    public override string ToString() => $"{ListenerAddress.Format(EndPoint)} (fd {FileDescriptor})";
}
