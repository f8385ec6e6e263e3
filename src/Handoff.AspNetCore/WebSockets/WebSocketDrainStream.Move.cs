using System.Buffers;
using System.Buffers.Binary;

namespace Handoff.AspNetCore;

/// <summary>
/// Moving a WebSocket between two messages (see docs/protocol.md, "WebSockets that move").
/// </summary>
/// <remarks>
/// <para>The stream reads the frames the client sends and gives the WebSocket no byte past the
/// end of the frame it is in, so the WebSocket never holds bytes of a frame it has not asked
/// for. A read of the WebSocket that finds the stream at the start of a frame, with no message
/// half received, is the WebSocket waiting for the next message: the application has received
/// every message so far. That is the receiving boundary. The sending one is a write lock taken
/// when the last frame written ended a message (.NET's WebSocket writes each frame with one
/// write).</para>
/// <para>A move (<see cref="FreezeAsync"/>) waits for both, then holds them: the WebSocket's read
/// waits, bytes that arrive meanwhile stay here, writes wait. The application's state is saved
/// then, when it matches what the client has seen. Then either the connection goes to the new
/// generation (<see cref="MarkMoved"/>: the waiting read and every later call fail with
/// <see cref="OperationCanceledException"/>, so the application's loop ends without a close), or
/// the hold ends and the WebSocket goes on here (<see cref="Thaw"/>).</para>
/// </remarks>
internal sealed partial class WebSocketDrainStream
{
    private const int InitialBuffer = 4096;

    // Bytes read from the connection and not yet given to the WebSocket.
    private readonly byte[] _in = [];
    private int _inStart;
    private int _inEnd;
    private bool _endOfFile;

    // Bytes of the client's current frame (header included) not yet given to the WebSocket:
    // zero at the start of a frame.
    private long _frameLeft;

    // A data frame without FIN was given: the message goes on in the next frame.
    private bool _inMessage;

    // A read of the connection under way (into _in), and whether a read of the WebSocket waits.
    private Task? _fill;
    private bool _reading;

    // The same for what the WebSocket writes: bytes of its current frame still to come, whether
    // a message is half sent, whether it sent a close; Untracked when a write did not begin
    // with a whole frame header (never from .NET's WebSocket): then it never moves.
    private long _outLeft;
    private bool _outInMessage;
    private long _messagesWritten;
    private bool _untracked;

    // The move: None; Requested (reads stop at the boundary); Frozen (reads and writes held);
    // Moved. A hold ends by Thaw.
    private int _moveState;
    private TaskCompletionSource? _atBoundary;
    private TaskCompletionSource? _held;
    private bool _closeReceived;
    private bool _applicationClosed;
    private bool _disposeDeferred;

    private const int None = 0;
    private const int Requested = 1;
    private const int Frozen = 2;
    private const int MovedAway = 3;

    /// <summary>True once the connection went to the new generation.</summary>
    public bool IsMoved => Volatile.Read(ref _moveState) == MovedAway;

    /// <summary>True from the hold to the end: the request's abort, which the move itself causes
    /// (the old socket reads end of file once detached), is not the session's.</summary>
    public bool IsHeldOrMoved => Volatile.Read(ref _moveState) >= Frozen;

    /// <summary>True when the close handshake has begun (either side's close frame seen): it
    /// is finished here, not moved.</summary>
    public bool IsClosing => _closeReceived || _applicationClosed || _closeSent;

    /// <summary>The session that runs on this WebSocket, once it has one.</summary>
    public HandoffWebSocket? Session { get; set; }

    internal static OperationCanceledException MovedException() =>
        new("Handoff moved this WebSocket to the new generation, which carries on with it; this generation must not use or close it.");

    /// <summary>
    /// Waits, at most <paramref name="limit"/>, until no message is half received or half sent
    /// and the WebSocket waits for the next message, then holds reads and writes there. False
    /// (nothing held) when that did not happen in time or the close handshake has begun.
    /// </summary>
    public async Task<bool> FreezeAsync(TimeSpan limit)
    {
        Task boundary;
        lock (_lock)
        {
            if (_moveState != None || IsClosing || _untracked)
            {
                return false;
            }

            _moveState = Requested;
            _atBoundary = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

            // A read that waits for the client's next bytes at a frame's start is at the boundary
            // already (an idle WebSocket): whatever comes stays here.
            if (_reading && AtBoundary)
            {
                _atBoundary.TrySetResult();
            }

            boundary = _atBoundary.Task;
        }

        long deadline = Environment.TickCount64 + (long)limit.TotalMilliseconds;
        if (!await Within(boundary, deadline).ConfigureAwait(false) || !await HoldWritesAsync(deadline).ConfigureAwait(false))
        {
            Thaw();
            return false;
        }

        lock (_lock)
        {
            if (IsClosing)
            {
                _write.Release();
                _moveState = Requested;
                Thaw();
                return false;
            }

            _moveState = Frozen;
        }

        return true;
    }

    // The write lock, taken between two messages: held until Thaw or MarkMoved.
    private async Task<bool> HoldWritesAsync(long deadline)
    {
        while (true)
        {
            long left = deadline - Environment.TickCount64;
            if (left <= 0 || !await _write.WaitAsync(TimeSpan.FromMilliseconds(left)).ConfigureAwait(false))
            {
                return false;
            }

            if (!_outInMessage && _outLeft == 0 && !_untracked)
            {
                return true;
            }

            // A fragmented message is being sent: its next frame comes soon, or the bound ends it.
            _write.Release();
            await Task.Delay(5).ConfigureAwait(false);
        }
    }

    private static async Task<bool> Within(Task task, long deadline)
    {
        long left = deadline - Environment.TickCount64;
        if (left > 0)
        {
            await task.WaitAsync(TimeSpan.FromMilliseconds(left)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        return task.IsCompletedSuccessfully;
    }

    /// <summary>Ends a hold: the WebSocket reads and writes here again, as if nothing happened.</summary>
    public void Thaw()
    {
        TaskCompletionSource? held;
        bool dispose;
        lock (_lock)
        {
            if (_moveState == MovedAway || _moveState == None)
            {
                return;
            }

            if (_moveState == Frozen)
            {
                _write.Release();
            }

            _moveState = None;
            held = _held;
            _held = null;
            _atBoundary = null;
            dispose = _disposeDeferred;
        }

        held?.TrySetResult();
        if (dispose)
        {
            _inner.Dispose();
        }
    }

    /// <summary>The connection went to the new generation (or was closed for it): the held read
    /// and every later read and write fail with <see cref="MovedException"/>.</summary>
    public void MarkMoved()
    {
        TaskCompletionSource? held;
        bool dispose;
        lock (_lock)
        {
            if (_moveState != Frozen)
            {
                return;
            }

            _moveState = MovedAway;
            held = _held;
            dispose = _disposeDeferred;
        }

        if (Session is { } session)
        {
            session.Moved = true;
        }

        _write.Release();
        held?.TrySetResult();
        if (dispose)
        {
            _inner.Dispose();
        }
    }

    /// <summary>While held: every byte read from the connection that the WebSocket did not get,
    /// up to the connection's end of file (which comes once the socket was detached), in order.</summary>
    public async Task<byte[]> ReadUnreadAsync()
    {
        Task? fill;
        lock (_lock)
        {
            fill = _fill;
        }

        if (fill is not null)
        {
            await fill.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        var unread = new ArrayBufferWriter<byte>();
        lock (_lock)
        {
            unread.Write(_in.AsSpan(_inStart, _inEnd - _inStart));
            _inStart = _inEnd = 0;
        }

        while (true)
        {
            int read = await _inner.ReadAsync(unread.GetMemory(InitialBuffer)).ConfigureAwait(false);
            if (read == 0)
            {
                return unread.WrittenSpan.ToArray();
            }

            unread.Advance(read);
        }
    }

    // A dispose during a hold (the application's loop ending) must not close the connection
    // that is about to move: it waits for the hold's end.
    private bool DeferDispose()
    {
        lock (_lock)
        {
            if (_moveState is Requested or Frozen)
            {
                _disposeDeferred = true;
                return true;
            }

            return false;
        }
    }

    private bool AtBoundary => _frameLeft == 0 && !_inMessage;

    // The socket's number now (the stand-in once detached) and its registration with the socket
    // engine, for a failure's log line.
    private string DescribeSocket()
    {
        if (Carrier is not { } carrier)
        {
            return "no socket";
        }

        int fd = (int)carrier.Socket.SafeHandle.DangerousGetHandle();
        try
        {
            ulong inode = ProcFs.SelfInode(fd);
            string registered = ProcFs.SelfEpollRegistrations().TryGetValue((fd, inode), out var registration)
                ? $"registered (events {registration.Events:x}, data {registration.Data:x})"
                : "not registered with any epoll";
            return $"fd {fd} names {(inode == carrier.Inode ? "the connection" : $"socket {inode}")}, {registered}";
        }
        catch (IOException e)
        {
            return $"fd {fd}: {e.Message}";
        }
    }

    /// <summary>For a log line when a move fails: where the stream stands.</summary>
    public string Describe()
    {
        lock (_lock)
        {
            return $"state {_moveState}, reading {_reading}, fill {(_fill is null ? "none" : _fill.Status.ToString())}, end of file {_endOfFile}, buffered {_inEnd - _inStart}, frame left {_frameLeft}, in message {_inMessage}, out left {_outLeft}, kestrel closed {Connection?.ConnectionClosed.IsCancellationRequested}, {DescribeSocket()}";
        }
    }

    private async ValueTask<int> ReadFramedAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task? held = null;
            bool direct = false;
            TaskCompletionSource? filling = null;
            lock (_lock)
            {
                if (_moveState == MovedAway)
                {
                    throw MovedException();
                }

                if (AtBoundary && _moveState != None)
                {
                    _atBoundary?.TrySetResult();
                    held = _held?.Task;
                }
                else
                {
                    if (_frameLeft == 0)
                    {
                        StartFrame();
                    }

                    int buffered = _inEnd - _inStart;
                    if (_frameLeft > 0 && buffered > 0)
                    {
                        if (destination.IsEmpty)
                        {
                            return 0;
                        }

                        // Never past the frame's end: the WebSocket holds no byte of the next one.
                        int count = (int)Math.Min(Math.Min(destination.Length, buffered), _frameLeft);
                        _in.AsSpan(_inStart, count).CopyTo(destination.Span);
                        _inStart += count;
                        _frameLeft -= count;
                        return count;
                    }

                    if (_endOfFile)
                    {
                        return 0;
                    }

                    // A read of the connection begins: published with the flag, so that a move
                    // that sees the flag finds the read it has to wait for.
                    _reading = true;
                    direct = _frameLeft > 0 && !destination.IsEmpty;
                    if (!direct)
                    {
                        filling = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        _fill = filling.Task;
                    }
                }
            }

            if (held is not null)
            {
                // Not cancelled by the caller's token: a move must end (or the hold be given up)
                // before the WebSocket reads on, or its bytes would be read twice.
                await held.ConfigureAwait(false);
                continue;
            }

            if (direct)
            {
                // Inside a frame, nothing buffered: the payload goes straight to the WebSocket.
                int read;
                try
                {
                    read = await _inner.ReadAsync(destination[..(int)Math.Min(destination.Length, _frameLeft)], cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    lock (_lock)
                    {
                        _reading = false;
                    }
                }

                lock (_lock)
                {
                    _frameLeft -= read;
                    _endOfFile |= read == 0;
                }

                if (read > 0)
                {
                    return read;
                }

                continue;
            }

            await FillAsync(filling!).ConfigureAwait(false);
        }
    }

    // Reads the connection into _in; the buffer is updated before `filling` completes, so that
    // a move that waits for it finds the bytes there. Without the caller's token: this read may
    // be the one a move waits for (a read at a frame's start), and an abort of the WebSocket
    // ends it anyway (it disposes the connection, or aborts the request).
    private async Task FillAsync(TaskCompletionSource filling)
    {
        try
        {
            Memory<byte> free;
            lock (_lock)
            {
                if (_inStart > 0)
                {
                    _in.AsSpan(_inStart, _inEnd - _inStart).CopyTo(_in);
                    _inEnd -= _inStart;
                    _inStart = 0;
                }

                free = _in.AsMemory(_inEnd);
            }

            int read = await _inner.ReadAsync(free).ConfigureAwait(false);
            lock (_lock)
            {
                _inEnd += read;
                _endOfFile |= read == 0;
            }
        }
        finally
        {
            lock (_lock)
            {
                _reading = false;
                _fill = null;
            }

            filling.TrySetResult();
        }
    }

    // At a frame's start with its whole header buffered: how long the frame is, and what it
    // does to the message (RFC 6455 §5.2). Under the lock.
    private void StartFrame()
    {
        var header = _in.AsSpan(_inStart, _inEnd - _inStart);
        if (FrameLength(header) is not { } length)
        {
            return;
        }

        _frameLeft = length;

        // A client must mask its frames (RFC 6455 §5.1); .NET's server WebSocket reads six
        // header bytes whatever the frame, so of an unmasked short frame it takes bytes past
        // this one's end, and the boundary here would not be its.
        _untracked |= (header[1] & 0x80) == 0;
        int opcode = header[0] & 0x0F;
        if (opcode < 8)
        {
            _inMessage = (header[0] & 0x80) == 0;
        }
        else if (opcode == 8)
        {
            _closeReceived = true;
        }
    }

    /// <summary>The length of the frame <paramref name="bytes"/> begins with, header included,
    /// or null when its header is not complete.</summary>
    internal static long? FrameLength(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < 2)
        {
            return null;
        }

        int length7 = bytes[1] & 0x7F;
        int header = 2 + (length7 == 126 ? 2 : length7 == 127 ? 8 : 0) + ((bytes[1] & 0x80) != 0 ? 4 : 0);
        if (bytes.Length < header)
        {
            return null;
        }

        long payload = length7 switch
        {
            126 => BinaryPrimitives.ReadUInt16BigEndian(bytes[2..]),
            127 => (long)Math.Min(BinaryPrimitives.ReadUInt64BigEndian(bytes[2..]), long.MaxValue - 14),
            _ => length7,
        };
        return header + payload;
    }

    // Follows the frames the WebSocket writes; under the write lock.
    /// <summary>Whole data messages written (<see cref="HandoffWebSocket.MessagesSent"/>);
    /// exact while the WebSocket is held.</summary>
    public long MessagesWritten => Interlocked.Read(ref _messagesWritten);

    private void Written(ReadOnlySpan<byte> bytes)
    {
        if (Endpoint is null)
        {
            return;
        }

        while (!bytes.IsEmpty && !_untracked)
        {
            if (_outLeft == 0)
            {
                if (FrameLength(bytes) is not { } length)
                {
                    _untracked = true;
                    return;
                }

                int opcode = bytes[0] & 0x0F;
                if (opcode < 8)
                {
                    // The WebSocket writes each frame whole, in one write: a message's last
                    // frame counts once this write has gone (the hold waits for it).
                    _outInMessage = (bytes[0] & 0x80) == 0;
                    if (!_outInMessage)
                    {
                        Interlocked.Increment(ref _messagesWritten);
                    }
                }
                else if (opcode == 8)
                {
                    _applicationClosed = true;
                }

                _outLeft = length;
            }

            long taken = Math.Min(bytes.Length, _outLeft);
            _outLeft -= taken;
            bytes = bytes[(int)taken..];
        }
    }
}
