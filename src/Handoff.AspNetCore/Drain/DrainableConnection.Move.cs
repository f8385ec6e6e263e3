using System.Buffers;
using Microsoft.AspNetCore.Connections.Features;

namespace Handoff.AspNetCore;

/// <summary>
/// Moving an idle HTTP/1.1 connection to the new generation instead of closing it (see
/// docs/protocol.md, "Connections that move").
/// </summary>
/// <remarks>
/// <para>Kestrel itself finds the request boundary: the move asks it to close the connection
/// gracefully (as a drain does) once no request runs, and Kestrel ends an HTTP/1.1 connection
/// only between two requests, or after a response it marked <c>Connection: close</c>. Disposing
/// the socket connection would then complete its pipes (the send loop shuts the socket down: a
/// FIN), so when Kestrel disposes the connection the move decides first: if no request ended
/// since the close was asked, none runs and nothing aborted it, Kestrel ended it between
/// requests and the client was told nothing, so it moves; otherwise (a request raced the close
/// and its response said <c>Connection: close</c>, or the connection failed) it closes as it
/// would have.</para>
/// <para>The move waits until the kernel has taken every byte the HTTP layer wrote, takes the
/// socket from the engine (<see cref="ConnectionDetach"/>), reads what the HTTP layer left
/// unread to the end (a pipelined request; the end comes with the detach), and sends the
/// connection with those bytes. Anything that fails before the detach closes the connection as
/// before; after it, the connection is the new generation's or, if the channel broke, closed.</para>
/// </remarks>
internal sealed partial class DrainableConnection
{
    // How long the kernel may take to accept the last response's bytes (a client that reads
    // nothing keeps them queued): past it, the connection closes as it would without moving.
    private static readonly TimeSpan SentLimit = TimeSpan.FromSeconds(2);

    // How long the socket's receive loop may take to reach the stand-in's end of file after
    // the detach: it has nothing left to wait for but the thread pool.
    private static readonly TimeSpan UnreadLimit = TimeSpan.FromSeconds(10);

    // Made by BeginMove: a connection that never moves carries one null reference for it.
    private Move? _moving;

    // Set when a request switched the connection to another protocol (a WebSocket): what
    // follows its end is not HTTP, so it never moves.
    private volatile bool _upgraded;

    /// <summary>A request on this connection switches protocols: it must not move.</summary>
    public void MarkUpgraded() => _upgraded = true;

    /// <summary>
    /// Moves this connection to <paramref name="target"/> at its next request boundary instead
    /// of closing it; false (and nothing changed) when it cannot move: not HTTP/1.1 over plain
    /// TCP, switched to another protocol (a WebSocket), or no socket to take. With <paramref name="now"/>, an idle connection is asked to
    /// close for the move at once; otherwise the move waits for the end of its next request
    /// (<see cref="MoveNow"/> for one that stays idle): asked between two requests of a busy
    /// client, Kestrel may already be reading the next one, which then ends with
    /// <c>Connection: close</c> instead of moving, whereas at a request's end it stops before
    /// the next and leaves its bytes to travel with the connection.
    /// </summary>
    public bool BeginMove(MoveTarget target, bool now = true)
    {
        if (!CanMove || Interlocked.CompareExchange(ref _moving, new Move(target), null) is not null)
        {
            return false;
        }

        target.CountAsked();
        if (now && !HasActiveRequest)
        {
            CloseForMove();
        }

        return true;
    }

    /// <summary>Whether the connection can move: HTTP/1.1 over plain TCP from one of Handoff's
    /// listeners, not switched to another protocol.</summary>
    public bool CanMove =>
        _http is { IsHttp1: true } pipe && ReferenceEquals(pipe.Inner, _inner.Transport) && !_upgraded &&
        (Owner as HandoffConnectionListener)?.Listener.SocketInode is not null && Socket is not null;

    /// <summary>For a WebSocket that moves on its own (<see cref="WebSocketMoves"/>): the
    /// socket, its listener and the wait for the kernel to take what was written, when the
    /// connection can move (HTTP/1.1 over plain TCP from one of Handoff's listeners); null
    /// otherwise.</summary>
    public WebSocketCarrier? WebSocketCarrier()
    {
        if (_http is not { IsHttp1: true } pipe || !ReferenceEquals(pipe.Inner, _inner.Transport) ||
            (Owner as HandoffConnectionListener)?.Listener.SocketInode is not { } listener || Socket is not { } socket)
        {
            return null;
        }

        try
        {
            ulong inode = ProcFs.SelfInode((int)socket.SafeHandle.DangerousGetHandle());
            return new WebSocketCarrier(socket, inode, listener, fd => AllWrittenAsync(fd, pipe.Written));
        }
        catch (IOException)
        {
            return null; // Closed already.
        }
    }

    /// <summary>Set when its request runs a WebSocket that moves by itself: not counted among
    /// the connections that cannot move.</summary>
    public bool CarriesMovableWebSocket { get; set; }

    /// <summary>A connection waiting to move that stayed idle: asked to close for the move now.</summary>
    public void MoveNow()
    {
        if (!HasActiveRequest)
        {
            CloseForMove();
        }
    }

    /// <summary>True once the connection was asked to move (moved or not).</summary>
    public bool IsMoving => _moving is not null;

    /// <summary>Counted among the connections that could not move when the handover began.</summary>
    public bool CountedIneligible { get; set; }

    private System.Net.Sockets.Socket? Socket => _inner.Features.Get<IConnectionSocketFeature>()?.Socket;

    // From a request's end (RequestEnded) or BeginMove, whichever sees no request running
    // first: the other finds the close asked already.
    private void CloseForMove()
    {
        if (_moving is { } move && Interlocked.CompareExchange(ref move.State, Move.Closing, Move.Armed) == Move.Armed)
        {
            Volatile.Write(ref move.EndedAtClose, Volatile.Read(ref _requests) >> 32);
            RequestClose();
        }
    }

    // Kestrel is done with the connection: move it, or let it close as it would have.
    private async Task MoveOrCloseAsync()
    {
        var pipe = _http!;
        var move = _moving!;
        var target = move.Target;
        bool boundary = Volatile.Read(ref move.State) == Move.Closing && !move.Aborted && !HasActiveRequest && !_upgraded &&
            Volatile.Read(ref _requests) >> 32 == Volatile.Read(ref move.EndedAtClose);
        int fd = boundary && !target.IsBroken && Socket is { } socket ? (int)socket.SafeHandle.DangerousGetHandle() : -1;
        if (fd < 0)
        {
            target.CountNotMoved(MoveKind.Http1, target.IsBroken ? MoveTarget.NotSent : "no_boundary");
            return;
        }

        if (!await AllWrittenAsync(fd, pipe.Written).ConfigureAwait(false))
        {
            target.CountNotMoved(MoveKind.Http1, "unsent_data");
            return;
        }

        int connection = await target.DetachAsync(fd).ConfigureAwait(false);
        if (connection < 0)
        {
            target.CountNotMoved(MoveKind.Http1, "detach_failed");
            return;
        }

        // From here the connection is no longer this process's to serve: sent, or closed.
        try
        {
            byte[] unread = await ReadToEndAsync(pipe.Inner.Input).WaitAsync(UnreadLimit).ConfigureAwait(false);
            ulong listener = (Owner as HandoffConnectionListener)!.Listener.SocketInode!.Value;
            if (!await target.SendAsync(connection, listener, unread).ConfigureAwait(false))
            {
                target.CountNotMoved(MoveKind.Http1, MoveTarget.NotSent);
            }
        }
        catch (TimeoutException)
        {
            target.CountNotMoved(MoveKind.Http1, "unread_timeout");
        }
        finally
        {
            Interop.Libc.Close(connection);
            target.Exit();
        }
    }

    // The kernel has taken all the HTTP layer wrote once its count of bytes written reaches it.
    private static async Task<bool> AllWrittenAsync(int fd, long written)
    {
        long deadline = Environment.TickCount64 + (long)SentLimit.TotalMilliseconds;
        while (Interop.Libc.TcpWrittenBytes(fd) is { } taken)
        {
            if (taken == written)
            {
                return true;
            }

            if (Environment.TickCount64 > deadline)
            {
                return false;
            }

            await Task.Delay(1).ConfigureAwait(false);
        }

        return false;
    }

    // To the end of file, and only to it. Not to a cancelled read: Kestrel cancels the pending
    // read when asked to close (StopProcessingNextRequest), and when it was not reading then the
    // cancellation waits for the next read, this one. Taken for the end, it returned before the
    // socket's receive loop had put in the client's next request, which it had already taken
    // from the socket: the request went nowhere, and its client waited (once in about 40 runs of
    // 10 upgrades under load).
    internal static async Task<byte[]> ReadToEndAsync(System.IO.Pipelines.PipeReader input)
    {
        var unread = new ArrayBufferWriter<byte>();
        while (true)
        {
            var result = await input.ReadAsync().ConfigureAwait(false);
            foreach (var segment in result.Buffer)
            {
                unread.Write(segment.Span);
            }

            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return unread.WrittenSpan.ToArray();
            }
        }
    }

    private sealed class Move(MoveTarget target)
    {
        public const int Armed = 0;
        public const int Closing = 1;

        public readonly MoveTarget Target = target;
        public int State;
        public long EndedAtClose;
        public volatile bool Aborted;
    }
}
