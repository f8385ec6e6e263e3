using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Security.Cryptography;

namespace Handoff.AspNetCore;

/// <summary>
/// The transport as Kestrel's HTTP layer sees it (above TLS, if any). It recognises an HTTP/2
/// connection by its client preface and can then send the first phase of RFC 9113 §6.8's
/// graceful shutdown itself: GOAWAY with the largest stream id and a PING, written between two
/// of Kestrel's frames. Once the client's PING ACK arrives, every stream the client opened
/// before it saw the GOAWAY has reached the server (TCP keeps order), so Kestrel's own final
/// GOAWAY, asked for then, refuses none.
/// </summary>
/// <remarks>
/// <para>Where the GOAWAY goes matters as much. nghttp2 (under curl, h2load, nghttpx and Node's
/// <c>http2</c>) refuses, with REFUSED_STREAM and without sending it, every request it holds
/// queued when any GOAWAY arrives, even one that allows every stream. A client that sends its
/// next request when a response ends has one queued just after that end: a GOAWAY arriving
/// then refuses it. So the first phase can wait for the next frame that ends a stream and go
/// just before it, in the same write: the client learns of the GOAWAY before the response
/// ends, and opens its next stream elsewhere.</para>
/// Any other protocol (HTTP/1.x, a TLS handshake underneath) is told apart by its first bytes
/// and from then on every call goes straight to the inner pipe: one field read more, no
/// allocation, no copy. Kestrel answers a PING ACK it did not ask for by ignoring it.
/// </remarks>
internal sealed class Http2ShutdownPipe : PipeReader, IDuplexPipe
{
    private const int Undecided = 0;
    private const int NotHttp2 = 1;
    private const int Http2 = 2;

    private const int FrameHeaderLength = 9;
    private const byte EndStream = 0x1;
    private const byte EndHeaders = 0x4;
    private const int ShutdownFramesLength = 2 * (FrameHeaderLength + 8);

    // How long a write of the shutdown frames may wait for a client that does not read.
    private static readonly TimeSpan FlushLimit = TimeSpan.FromSeconds(1);

    private readonly IDuplexPipe _inner;
    private readonly PipeReader _innerInput;

    // Also the lock that guards the shutdown and the output framing: one object fewer per
    // connection than a lock of its own.
    private readonly ShutdownWriter _writer;
    private volatile int _protocol;

    // Shutdown: none, waiting for a frame boundary, sent, acknowledged.
    private int _shutdown;
    private ulong _pingData;
    private Action? _acknowledged;

    // The pending shutdown waits for the next frame that ends a stream, to go just before it.
    private bool _beforeStreamEnd;

    // Output framing, guarded by _writer: whether Kestrel holds a buffer it has not advanced,
    // how much of the current frame is still to come, how much of its header has been seen.
    private Memory<byte> _lent;
    private bool _lentOut;
    // HTTP/2: what is left of the current frame's payload. Anything else (nothing is written
    // before the first bytes decide): every byte the HTTP layer has written, for the move, which
    // waits until the kernel's count of bytes written (Interop.Libc.TcpWrittenBytes) reaches it.
    // One field for both: a field more would make every connection 8 bytes larger.
    private long _payloadLeft;
    private int _headerSeen;
    private int _headerLength;
    private byte _headerType;
    private byte _headerFlags;
    private bool _inHeaderBlock;
    private bool _anyFrame;
    private bool _innerFlushing;
    private TaskCompletionSource? _ownFlush;

    public Http2ShutdownPipe(IDuplexPipe inner)
    {
        _inner = inner;
        _innerInput = inner.Input;
        _writer = new ShutdownWriter(this);
    }

    internal static ReadOnlySpan<byte> ClientPreface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    /// <summary>The pipe is its own reader: one object per connection fewer.</summary>
    public PipeReader Input => this;

    public PipeWriter Output => _writer;

    /// <summary>True once the client preface has been read.</summary>
    public bool IsHttp2 => _protocol == Http2;

    /// <summary>True once the first bytes showed anything but HTTP/2 (on an HTTP endpoint
    /// without TLS underneath: HTTP/1.x).</summary>
    public bool IsHttp1 => _protocol == NotHttp2;

    /// <summary>True once the first phase has been sent.</summary>
    public bool ShutdownSent => Volatile.Read(ref _shutdown) is State.Sent or State.Acknowledged;

    /// <summary>True once the client acknowledged the PING that followed the GOAWAY.</summary>
    public bool ShutdownAcknowledged => Volatile.Read(ref _shutdown) == State.Acknowledged;

    /// <summary>Sends GOAWAY (2^31-1, NO_ERROR) and a PING at the next frame boundary, at once
    /// if Kestrel is not writing, or, with <paramref name="beforeStreamEnd"/>, just before the
    /// next frame that ends a stream (until <see cref="SendShutdownNow"/>);
    /// <paramref name="acknowledged"/> runs on the thread pool when the client's PING ACK
    /// arrives. Returns false when the connection is not HTTP/2.</summary>
    public bool BeginShutdown(Action acknowledged, bool beforeStreamEnd = false)
    {
        lock (_writer)
        {
            if (_protocol != Http2)
            {
                return false;
            }

            if (_shutdown != State.None)
            {
                return true;
            }

            _pingData = BinaryPrimitives.ReadUInt64LittleEndian(RandomNumberGenerator.GetBytes(8));
            _acknowledged = acknowledged;
            _beforeStreamEnd = beforeStreamEnd;
            _shutdown = State.Pending;
        }

        TryWriteShutdown();
        return true;
    }

    /// <summary>Stops waiting for a stream's end: the shutdown frames go at the next frame
    /// boundary, at once if Kestrel is not writing.</summary>
    public void SendShutdownNow()
    {
        lock (_writer)
        {
            _beforeStreamEnd = false;
        }

        TryWriteShutdown();
    }

    /// <summary>Gives up on the first phase before Kestrel's own close: frames not written yet
    /// never will be (a GOAWAY after Kestrel's final one would raise its last stream id, which
    /// RFC 9113 forbids), and the input is no longer searched for the acknowledgement. Returns
    /// true when the client was sent the GOAWAY (it opens no stream here any more); when it
    /// was not, a later <see cref="BeginShutdown"/> starts over.</summary>
    public bool AbandonShutdown()
    {
        lock (_writer)
        {
            switch (_shutdown)
            {
                case State.Pending:
                    Volatile.Write(ref _shutdown, State.None);
                    return false;
                case State.Sent:
                    Volatile.Write(ref _shutdown, State.Abandoned);
                    return true;
                default:
                    return _shutdown == State.Acknowledged;
            }
        }
    }

    /// <summary>Writes and flushes the shutdown frames now if Kestrel is between frames and not
    /// writing; otherwise they go out after Kestrel's next complete frame.</summary>
    public void TryWriteShutdown()
    {
        lock (_writer)
        {
            if (_shutdown != State.Pending || _beforeStreamEnd || _lentOut || !AtFrameBoundary || _innerFlushing || _ownFlush is not null)
            {
                return;
            }

            WriteShutdownFrames();
            _ownFlush = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        _ = FlushOwnAsync();
    }

    private bool AtFrameBoundary => _anyFrame && _payloadLeft == 0 && _headerSeen == 0 && !_inHeaderBlock;

    private void WriteShutdownFrames()
    {
        var span = _inner.Output.GetSpan(ShutdownFramesLength);
        WriteFrameHeader(span, type: 0x7, flags: 0);
        BinaryPrimitives.WriteInt32BigEndian(span[9..], int.MaxValue);
        BinaryPrimitives.WriteInt32BigEndian(span[13..], 0);
        WriteFrameHeader(span[17..], type: 0x6, flags: 0);
        BinaryPrimitives.WriteUInt64LittleEndian(span[26..], _pingData);
        _inner.Output.Advance(ShutdownFramesLength);
        _shutdown = State.Sent;
    }

    private static void WriteFrameHeader(Span<byte> span, byte type, byte flags)
    {
        // Length 8, then type, flags and stream 0.
        span[0] = 0;
        span[1] = 0;
        span[2] = 8;
        span[3] = type;
        span[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(span[5..], 0);
    }

    private async Task FlushOwnAsync()
    {
        try
        {
            using var limit = new CancellationTokenSource(FlushLimit);
            await _inner.Output.FlushAsync(limit.Token).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A connection that failed or was aborted meanwhile is closed by Kestrel; the drain sees it go.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
        finally
        {
            TaskCompletionSource done;
            lock (_writer)
            {
                done = _ownFlush!;
                _ownFlush = null;
                Monitor.PulseAll(_writer);
            }

            done.TrySetResult();
        }
    }

    // Kestrel's writes wait while the shutdown frames are flushed: PipeWriter allows one writer.
    private void WaitForOwnFlush()
    {
        while (_ownFlush is not null)
        {
            Monitor.Wait(_writer);
        }
    }

    private void Decide(in ReadOnlySequence<byte> buffer)
    {
        var preface = ClientPreface;
        int length = (int)Math.Min(buffer.Length, preface.Length);
        Span<byte> start = stackalloc byte[24];
        buffer.Slice(0, length).CopyTo(start);
        if (!start[..length].SequenceEqual(preface[..length]))
        {
            _protocol = NotHttp2;
        }
        else if (length == preface.Length)
        {
            _protocol = Http2;
        }
    }

    private void LookForPingAck(in ReadOnlySequence<byte> buffer)
    {
        // A PING ACK frame carrying our data: 00 00 08 | 06 | 01 | 00 00 00 00 | data.
        Span<byte> ack = stackalloc byte[FrameHeaderLength + 8];
        WriteFrameHeader(ack, type: 0x6, flags: 0x1);
        BinaryPrimitives.WriteUInt64LittleEndian(ack[9..], _pingData);
        bool found;
        if (buffer.IsSingleSegment)
        {
            found = buffer.FirstSpan.IndexOf(ack) >= 0;
        }
        else
        {
            var reader = new SequenceReader<byte>(buffer);
            found = reader.TryReadTo(out ReadOnlySequence<byte> _, ack, advancePastDelimiter: false);
        }

        if (found && Interlocked.CompareExchange(ref _shutdown, State.Acknowledged, State.Sent) == State.Sent)
        {
            // Off Kestrel's read path: the callback asks Kestrel to close, which cancels reads.
            ThreadPool.QueueUserWorkItem(static a => a(), _acknowledged!, preferLocal: false);
        }
    }

    private void Inspect(in ReadResult result)
    {
        if (_protocol == Undecided && !result.Buffer.IsEmpty)
        {
            Decide(result.Buffer);
        }
        else if (Volatile.Read(ref _shutdown) == State.Sent)
        {
            LookForPingAck(result.Buffer);
        }
    }

    private static class State
    {
        public const int None = 0;
        public const int Pending = 1;
        public const int Sent = 2;
        public const int Acknowledged = 3;
        public const int Abandoned = 4;
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (!NeedsInput)
        {
            return _innerInput.ReadAsync(cancellationToken);
        }

        var read = _innerInput.ReadAsync(cancellationToken);
        if (read.IsCompletedSuccessfully)
        {
            var result = read.Result;
            Inspect(result);
            return new ValueTask<ReadResult>(result);
        }

        return InspectAsync(read);
    }

    public override bool TryRead(out ReadResult result)
    {
        if (!_innerInput.TryRead(out result))
        {
            return false;
        }

        if (NeedsInput)
        {
            Inspect(result);
        }

        return true;
    }

    public override void AdvanceTo(SequencePosition consumed) => _innerInput.AdvanceTo(consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => _innerInput.AdvanceTo(consumed, examined);

    public override void CancelPendingRead() => _innerInput.CancelPendingRead();

    public override void Complete(Exception? exception = null) => _innerInput.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => _innerInput.CompleteAsync(exception);

    /// <summary>Bytes written into the connection so far (HTTP/1.x), on the kernel's count: from
    /// its start, by the HTTP layer and, for a connection that moved here, before.</summary>
    internal long Written => Volatile.Read(ref _payloadLeft);

    /// <summary>For a connection that moved here: an HTTP/1.1 connection already (it can move
    /// on before its first request here), and what was written into it before (the kernel's
    /// count at the adoption, when every byte the previous generation wrote had been taken).
    /// Before anything is read or written here.</summary>
    internal void Adopted(long writtenBefore)
    {
        _payloadLeft = writtenBefore;
        _protocol = NotHttp2;
    }

    /// <summary>The socket's side of the pipe: what the HTTP layer left unread stays there.</summary>
    internal IDuplexPipe Inner => _inner;

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<ReadResult> InspectAsync(ValueTask<ReadResult> read)
    {
        var result = await read.ConfigureAwait(false);
        Inspect(result);
        return result;
    }

    // Kestrel's read is usually pending already when the drain begins, so an HTTP/2 read is
    // looked at when it completes, until the acknowledgement came or the shutdown was given up.
    private bool NeedsInput => _protocol == Undecided || (_protocol == Http2 && Volatile.Read(ref _shutdown) < State.Acknowledged);

    private sealed class ShutdownWriter(Http2ShutdownPipe pipe) : PipeWriter
    {
        private readonly PipeWriter _inner = pipe._inner.Output;

        public override bool CanGetUnflushedBytes => _inner.CanGetUnflushedBytes;

        public override long UnflushedBytes => _inner.UnflushedBytes;

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            if (pipe._protocol == NotHttp2)
            {
                return _inner.GetMemory(sizeHint);
            }

            lock (pipe._writer)
            {
                pipe.WaitForOwnFlush();
                pipe._lentOut = true;
                return pipe._lent = _inner.GetMemory(sizeHint);
            }
        }

        public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

        public override void Advance(int bytes)
        {
            if (pipe._protocol == NotHttp2)
            {
                pipe._payloadLeft += bytes;
                _inner.Advance(bytes);
                return;
            }

            lock (pipe._writer)
            {
                if (pipe._lentOut)
                {
                    pipe._lentOut = false;
                    var written = pipe._lent.Span[..bytes];
                    if (pipe._shutdown == State.Pending && pipe._beforeStreamEnd)
                    {
                        int streamEnd = pipe.Frame(written, stopAtStreamEnd: true);
                        if (streamEnd >= 0)
                        {
                            pipe.WriteShutdownBefore(written, streamEnd);
                            return;
                        }
                    }
                    else
                    {
                        pipe.Frame(written, stopAtStreamEnd: false);
                    }
                }

                _inner.Advance(bytes);

                // Kestrel flushes what it has written; the shutdown frames go with it.
                if (pipe._shutdown == State.Pending && !pipe._beforeStreamEnd && pipe.AtFrameBoundary && !pipe._innerFlushing)
                {
                    pipe.WriteShutdownFrames();
                }
            }
        }

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            if (pipe._protocol == NotHttp2)
            {
                return _inner.FlushAsync(cancellationToken);
            }

            Task? ownFlush;
            lock (pipe._writer)
            {
                ownFlush = pipe._ownFlush?.Task;
                if (ownFlush is null)
                {
                    pipe._innerFlushing = true;
                }
            }

            if (ownFlush is not null)
            {
                return FlushAfterAsync(ownFlush, cancellationToken);
            }

            ValueTask<FlushResult> flush;
            try
            {
                flush = _inner.FlushAsync(cancellationToken);
            }
            catch
            {
                FlushEnded();
                throw;
            }

            if (flush.IsCompleted)
            {
                FlushEnded();
                return flush;
            }

            return EndAsync(flush);
        }

        public override void CancelPendingFlush() => _inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null)
        {
            lock (pipe._writer)
            {
                pipe.WaitForOwnFlush();
            }

            _inner.Complete(exception);
        }

        public override async ValueTask CompleteAsync(Exception? exception = null)
        {
            if (pipe._ownFlush?.Task is { } ownFlush)
            {
                await ownFlush.ConfigureAwait(false);
            }

            await _inner.CompleteAsync(exception).ConfigureAwait(false);
        }

        private void FlushEnded()
        {
            lock (pipe._writer)
            {
                pipe._innerFlushing = false;
            }

            pipe.TryWriteShutdown();
        }

        private async ValueTask<FlushResult> FlushAfterAsync(Task ownFlush, CancellationToken cancellationToken)
        {
            await ownFlush.ConfigureAwait(false);
            return await FlushAsync(cancellationToken).ConfigureAwait(false);
        }

        private async ValueTask<FlushResult> EndAsync(ValueTask<FlushResult> flush)
        {
            try
            {
                return await flush.ConfigureAwait(false);
            }
            finally
            {
                FlushEnded();
            }
        }
    }

    // Kestrel has written `written` into the inner buffer, not yet advanced, and a frame that ends
    // a stream begins at `at`: the bytes before it go first, then the shutdown frames, then the
    // rest (copied out first, since the shutdown frames take the place it was written to).
    private void WriteShutdownBefore(ReadOnlySpan<byte> written, int at)
    {
        var rest = written[at..];
        byte[] copy = ArrayPool<byte>.Shared.Rent(rest.Length);
        rest.CopyTo(copy);
        _inner.Output.Advance(at);
        WriteShutdownFrames();
        var moved = copy.AsSpan(0, rest.Length);
        _inner.Output.Write(moved);
        Frame(moved, stopAtStreamEnd: false);
        ArrayPool<byte>.Shared.Return(copy);
    }

    // Follows Kestrel's output frame by frame: a 9-byte header (a 3-byte payload length, the
    // type, the flags, the stream), then the payload. Only the header is read, so this is a
    // jump per frame. A header block (HEADERS or PUSH_PROMISE without END_HEADERS, then
    // CONTINUATION frames up to one with END_HEADERS) admits no other frame in between
    // (RFC 9113 §6.10): no boundary inside it. With stopAtStreamEnd, stops before the first
    // frame that ends a stream whose whole header is in `written`, and returns where it begins
    // (-1 when there is none): its header is then not counted yet.
    private int Frame(ReadOnlySpan<byte> written, bool stopAtStreamEnd)
    {
        int offset = 0;
        int headerStart = -1;
        while (offset < written.Length)
        {
            if (_payloadLeft > 0)
            {
                int skip = (int)Math.Min(_payloadLeft, written.Length - offset);
                _payloadLeft -= skip;
                offset += skip;
                continue;
            }

            if (_headerSeen == 0)
            {
                headerStart = offset;
            }

            byte b = written[offset++];
            switch (_headerSeen++)
            {
                case < 3:
                    _headerLength = (_headerLength << 8) | b;
                    break;
                case 3:
                    _headerType = b;
                    break;
                case 4:
                    _headerFlags = b;
                    break;
                case FrameHeaderLength - 1:
                    if (stopAtStreamEnd && headerStart >= 0 && !_inHeaderBlock && EndsStream(_headerType, _headerFlags))
                    {
                        _headerSeen = 0;
                        _headerLength = 0;
                        return headerStart;
                    }

                    _payloadLeft = _headerLength;
                    _headerSeen = 0;
                    _headerLength = 0;
                    _anyFrame = true;
                    if (_headerType is FrameType.Headers or FrameType.PushPromise or FrameType.Continuation)
                    {
                        _inHeaderBlock = (_headerFlags & EndHeaders) == 0;
                    }

                    break;
                default:
                    break; // the stream id
            }
        }

        return -1;
    }

    // DATA or HEADERS with END_STREAM, or RST_STREAM.
    private static bool EndsStream(byte type, byte flags) =>
        type == FrameType.RstStream || ((type is FrameType.Data or FrameType.Headers) && (flags & EndStream) != 0);

    private static class FrameType
    {
        public const byte Data = 0x0;
        public const byte Headers = 0x1;
        public const byte RstStream = 0x3;
        public const byte PushPromise = 0x5;
        public const byte Continuation = 0x9;
    }
}
