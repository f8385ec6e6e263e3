using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Text;
using Handoff.AspNetCore;

namespace Handoff.Tests.AspNetCore;

public sealed class Http2ShutdownPipeTests
{
    private static readonly byte[] Settings = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x3, 0, 0, 0, 100];

    private readonly Pipe _fromClient = new();
    private readonly Pipe _toClient = new();
    private readonly Http2ShutdownPipe _pipe;
    private int _acknowledged;

    public Http2ShutdownPipeTests()
    {
        _pipe = new Http2ShutdownPipe(new Duplex(_fromClient.Reader, _toClient.Writer));
    }

    [Fact]
    public async Task Preface_MakesItHttp2_OtherFirstBytesDoNot()
    {
        // Kestrel consumes the preface only once it is complete.
        await ClientSendsAsync(Http2ShutdownPipe.ClientPreface[..10].ToArray());
        var partial = await _pipe.Input.ReadAsync();
        _pipe.Input.AdvanceTo(partial.Buffer.Start, partial.Buffer.End);
        Assert.False(_pipe.IsHttp2);

        await ClientSendsAsync(Http2ShutdownPipe.ClientPreface[10..].ToArray());
        await ServerReadsAsync();
        Assert.True(_pipe.IsHttp2);

        var http1 = new Http2ShutdownPipe(new Duplex(NewReader("GET / HTTP/1.1\r\n"), new Pipe().Writer));
        var result = await http1.Input.ReadAsync();
        http1.Input.AdvanceTo(result.Buffer.End);
        Assert.False(http1.IsHttp2);
        Assert.False(http1.BeginShutdown(() => { }));
    }

    [Fact]
    public async Task BeginShutdown_Idle_SendsGoAwayAndPingAtOnce()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);

        Assert.True(_pipe.BeginShutdown(Acknowledged));

        var frames = await ClientReadsAsync(Settings.Length + 34);
        Assert.Equal(Settings, frames[..Settings.Length]);
        AssertShutdownFrames(frames.AsSpan(Settings.Length));
        Assert.True(_pipe.ShutdownSent);
    }

    [Fact]
    public async Task BeginShutdown_MidFrame_WaitsForTheFrameToEnd()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);
        var data = new byte[9 + 5000];
        data[1] = 5000 >> 8;
        data[2] = 5000 & 0xFF;
        data[3] = 0x0; // DATA
        data[8] = 1;

        // Kestrel has written half a DATA frame, then the drain begins.
        await ServerWritesAsync(data[..3000], flush: true);
        _pipe.BeginShutdown(Acknowledged);
        Assert.False(_pipe.ShutdownSent);

        // The rest of the frame is written; the shutdown frames follow it, not inside it.
        await ServerWritesAsync(data[3000..], flush: true);
        var frames = await ClientReadsAsync(Settings.Length + data.Length + 34);
        Assert.Equal(data, frames[Settings.Length..(Settings.Length + data.Length)]);
        AssertShutdownFrames(frames.AsSpan(Settings.Length + data.Length));
    }

    [Fact]
    public async Task BeginShutdown_WhileKestrelHoldsABuffer_WaitsForItsAdvance()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);

        var memory = _pipe.Output.GetMemory(Settings.Length);
        _pipe.BeginShutdown(Acknowledged);
        Assert.False(_pipe.ShutdownSent);

        Settings.CopyTo(memory);
        _pipe.Output.Advance(Settings.Length);
        Assert.True(_pipe.ShutdownSent);
        await _pipe.Output.FlushAsync();

        var frames = await ClientReadsAsync(2 * Settings.Length + 34);
        AssertShutdownFrames(frames.AsSpan(2 * Settings.Length));
    }

    [Fact]
    public async Task PingAck_WithOurData_IsSeen_OtherPingAcksAreNot()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);
        _pipe.BeginShutdown(Acknowledged);
        var frames = await ClientReadsAsync(Settings.Length + 34);
        var ping = frames[(Settings.Length + 17)..];

        var other = (byte[])ping.Clone();
        other[4] = 0x1;
        other[^1] ^= 0xFF;
        await ClientSendsAsync(other);
        await ServerReadsAsync();
        Assert.False(_pipe.ShutdownAcknowledged);

        var ack = (byte[])ping.Clone();
        ack[4] = 0x1;
        await ClientSendsAsync(ack);
        await ServerReadsAsync();
        Assert.True(_pipe.ShutdownAcknowledged);
        await UpgraderTestExtensions.WaitUntilAsync(() => Volatile.Read(ref _acknowledged) > 0);

        Assert.Equal(1, Volatile.Read(ref _acknowledged));
    }

    [Fact]
    public async Task BeginShutdown_InsideAHeaderBlock_WaitsForItsEnd()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);
        byte[] headers = [0, 0, 3, 0x1, 0x0, 0, 0, 0, 1, 0x88, 0x40, 0x01]; // HEADERS without END_HEADERS
        byte[] continuation = [0, 0, 2, 0x9, 0x4, 0, 0, 0, 1, 0x61, 0x00]; // CONTINUATION with END_HEADERS

        // As Kestrel writes them: the header, the payload, then the CONTINUATION, separately.
        await ServerWritesAsync(headers[..9], flush: false);
        _pipe.BeginShutdown(Acknowledged);
        await ServerWritesAsync(headers[9..], flush: false);
        Assert.False(_pipe.ShutdownSent);
        _pipe.TryWriteShutdown();
        Assert.False(_pipe.ShutdownSent);
        await ServerWritesAsync(continuation, flush: true);

        var frames = await ClientReadsAsync(Settings.Length + headers.Length + continuation.Length + 34);
        Assert.Equal(Settings.Concat(headers).Concat(continuation), frames[..^34]);
        AssertShutdownFrames(frames.AsSpan(frames.Length - 34));
    }

    [Fact]
    public async Task PingAck_OnAReadStartedBeforeTheShutdown_IsSeen()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);
        var pending = _pipe.Input.ReadAsync(); // Kestrel waits for the next frame
        _pipe.BeginShutdown(Acknowledged);
        var ack = (await ClientReadsAsync(Settings.Length + 34))[(Settings.Length + 17)..];
        ack[4] = 0x1;

        await ClientSendsAsync(ack);
        var result = await pending;
        _pipe.Input.AdvanceTo(result.Buffer.End);

        Assert.True(_pipe.ShutdownAcknowledged);
    }

    [Fact]
    public async Task AbandonShutdown_BeforeItWasWritten_NothingIsWrittenLater()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);
        var memory = _pipe.Output.GetMemory(Settings.Length); // Kestrel is mid-write
        _pipe.BeginShutdown(Acknowledged);

        _pipe.AbandonShutdown();
        Settings.CopyTo(memory);
        _pipe.Output.Advance(Settings.Length);
        await _pipe.Output.FlushAsync();
        _pipe.TryWriteShutdown();

        Assert.False(_pipe.ShutdownSent);
        byte[] sent = await ClientReadsAsync(2 * Settings.Length);
        Assert.Equal(Settings.Concat(Settings), sent);
        Assert.False(_toClient.Reader.TryRead(out _));
    }

    [Fact]
    public async Task BeforeStreamEnd_GoesJustBeforeTheFrameThatEndsAStream()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);
        Assert.True(_pipe.BeginShutdown(Acknowledged, beforeStreamEnd: true));

        // Idle, then a response's HEADERS without END_STREAM: nothing yet. An nghttp2 client
        // that gets a GOAWAY now refuses the request it has just queued.
        _pipe.TryWriteShutdown();
        byte[] headers = Frame(type: 0x1, flags: 0x4, stream: 1, payload: 3);
        await ServerWritesAsync(headers, flush: true);
        Assert.False(_pipe.ShutdownSent);

        // As Kestrel writes a DATA frame: the header, then the payload, in two advances.
        byte[] data = Frame(type: 0x0, flags: 0x1, stream: 1, payload: 5);
        await ServerWritesAsync(data[..9], flush: false);
        Assert.True(_pipe.ShutdownSent);
        await ServerWritesAsync(data[9..], flush: true);

        var frames = await ClientReadsAsync(Settings.Length + headers.Length + 34 + data.Length);
        int at = Settings.Length + headers.Length;
        Assert.Equal(Settings.Concat(headers), frames[..at]);
        AssertShutdownFrames(frames.AsSpan(at, 34));
        Assert.Equal(data, frames[(at + 34)..]);
    }

    [Theory]
    [InlineData(0x0, 0x1)] // DATA, END_STREAM
    [InlineData(0x1, 0x5)] // HEADERS (trailers), END_STREAM | END_HEADERS
    [InlineData(0x3, 0x0)] // RST_STREAM
    public async Task BeforeStreamEnd_InsideOneWrite_SplitsItWhereTheStreamEnds(byte type, byte flags)
    {
        await StartHttp2Async();
        _pipe.BeginShutdown(Acknowledged, beforeStreamEnd: true);

        // A write holding several frames (Kestrel's output buffered while a flush was running):
        // SETTINGS, a DATA frame that ends no stream, the one that ends stream 3, a WINDOW_UPDATE.
        byte[] other = Frame(type: 0x0, flags: 0x0, stream: 3, payload: 700);
        byte[] end = Frame(type, flags, stream: 3, payload: 4);
        byte[] after = Frame(type: 0x8, flags: 0x0, stream: 0, payload: 4);
        byte[] write = [.. Settings, .. other, .. end, .. after];
        await ServerWritesAsync(write, flush: true);

        var frames = await ClientReadsAsync(write.Length + 34);
        int at = Settings.Length + other.Length;
        Assert.Equal(write[..at], frames[..at]);
        AssertShutdownFrames(frames.AsSpan(at, 34));
        Assert.Equal(write[at..], frames[(at + 34)..]);

        // The frames after it are followed as frames still: a later shutdown of this kind would
        // find its boundaries (here: none is pending, nothing more is written).
        await ServerWritesAsync(end, flush: true);
        Assert.Equal(end, await ClientReadsAsync(end.Length));
    }

    [Fact]
    public async Task BeforeStreamEnd_SendShutdownNow_GoesAtOnce()
    {
        await StartHttp2Async();
        await ServerWritesAsync(Settings, flush: true);
        _pipe.BeginShutdown(Acknowledged, beforeStreamEnd: true);
        Assert.False(_pipe.ShutdownSent);

        // No stream ends (idle, or a long stream): the drain sends it anyway after a while.
        _pipe.SendShutdownNow();

        var frames = await ClientReadsAsync(Settings.Length + 34);
        AssertShutdownFrames(frames.AsSpan(Settings.Length));
        Assert.True(_pipe.ShutdownSent);
    }

    [Fact]
    public async Task BeforeStreamEnd_Abandoned_IsNeverWritten_AndCanBeginAgain()
    {
        await StartHttp2Async();
        _pipe.BeginShutdown(Acknowledged, beforeStreamEnd: true);

        // The generation accepts again (a failed handover): nothing was sent, so the
        // connection stays as it was.
        Assert.False(_pipe.AbandonShutdown());
        byte[] end = Frame(type: 0x0, flags: 0x1, stream: 1, payload: 2);
        await ServerWritesAsync(end, flush: true);
        Assert.Equal(end, await ClientReadsAsync(end.Length));
        Assert.False(_pipe.ShutdownSent);

        // The next drain begins anew.
        Assert.True(_pipe.BeginShutdown(Acknowledged, beforeStreamEnd: true));
        await ServerWritesAsync(end, flush: true);
        var frames = await ClientReadsAsync(34 + end.Length);
        AssertShutdownFrames(frames.AsSpan(0, 34));
        Assert.True(_pipe.AbandonShutdown());
    }

    [Fact]
    public async Task BeforeStreamEnd_AHeaderSplitAcrossWrites_IsNotCutInto()
    {
        await StartHttp2Async();
        _pipe.BeginShutdown(Acknowledged, beforeStreamEnd: true);
        byte[] end = Frame(type: 0x0, flags: 0x1, stream: 1, payload: 2);

        // Half a header, then the rest: the frames cannot go inside it; they go before the next.
        await ServerWritesAsync(end[..4], flush: false);
        await ServerWritesAsync(end[4..], flush: true);
        Assert.False(_pipe.ShutdownSent);
        byte[] next = Frame(type: 0x1, flags: 0x5, stream: 3, payload: 1);
        await ServerWritesAsync(next, flush: true);

        var frames = await ClientReadsAsync(end.Length + 34 + next.Length);
        Assert.Equal(end, frames[..end.Length]);
        AssertShutdownFrames(frames.AsSpan(end.Length, 34));
    }

    [Fact]
    public async Task Http1_ReadsAndWritesThroughThePipe_AllocateNothing()
    {
        // What an HTTP/1.1 connection pays for the HTTP/2 drain: a field read per call.
        byte[] request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray();
        byte[] response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray();
        await ClientSendsAsync(request);
        await ServerReadsAsync();
        Assert.False(_pipe.IsHttp2);
        await RoundTripAsync(request, response, _pipe); // warm up the pipes' segment pools
        var bare = new Duplex(_fromClient.Reader, _toClient.Writer);
        await RoundTripAsync(request, response, bare);

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            await RoundTripAsync(request, response, bare);
        }

        long withoutPipe = GC.GetAllocatedBytesForCurrentThread() - before;
        before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            await RoundTripAsync(request, response, _pipe);
        }

        long withPipe = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(withoutPipe, withPipe);
    }

    // One keep-alive exchange, every step completing synchronously on this thread.
    private async ValueTask RoundTripAsync(byte[] request, byte[] response, IDuplexPipe server)
    {
        request.CopyTo(_fromClient.Writer.GetSpan(request.Length));
        _fromClient.Writer.Advance(request.Length);
        await _fromClient.Writer.FlushAsync();
        var read = await server.Input.ReadAsync();
        server.Input.AdvanceTo(read.Buffer.End);

        response.CopyTo(server.Output.GetSpan(response.Length));
        server.Output.Advance(response.Length);
        await server.Output.FlushAsync();
        var sent = await _toClient.Reader.ReadAsync();
        _toClient.Reader.AdvanceTo(sent.Buffer.End);
    }

    private static void AssertShutdownFrames(ReadOnlySpan<byte> frames)
    {
        // GOAWAY: length 8, type 7, stream 0, last stream 2^31-1, NO_ERROR.
        Assert.Equal(new byte[] { 0, 0, 8, 0x7, 0, 0, 0, 0, 0 }, frames[..9].ToArray());
        Assert.Equal(int.MaxValue, BinaryPrimitives.ReadInt32BigEndian(frames[9..]));
        Assert.Equal(0, BinaryPrimitives.ReadInt32BigEndian(frames[13..]));

        // PING: length 8, type 6, no ACK, stream 0.
        Assert.Equal(new byte[] { 0, 0, 8, 0x6, 0, 0, 0, 0, 0 }, frames[17..26].ToArray());
        Assert.Equal(34, frames.Length);
    }

    private static byte[] Frame(byte type, byte flags, int stream, int payload)
    {
        var frame = new byte[9 + payload];
        frame[0] = (byte)(payload >> 16);
        frame[1] = (byte)(payload >> 8);
        frame[2] = (byte)payload;
        frame[3] = type;
        frame[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(5), stream);
        for (int i = 9; i < frame.Length; i++)
        {
            frame[i] = (byte)(i * 7);
        }

        return frame;
    }

    private static PipeReader NewReader(string text) => PipeReader.Create(new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(text)));

    private void Acknowledged() => Interlocked.Increment(ref _acknowledged);

    private async Task StartHttp2Async()
    {
        await ClientSendsAsync(Http2ShutdownPipe.ClientPreface.ToArray());
        await ServerReadsAsync();
        Assert.True(_pipe.IsHttp2);
    }

    private async Task ClientSendsAsync(byte[] bytes) => await _fromClient.Writer.WriteAsync(bytes);

    // As Kestrel does: reads what there is and consumes it.
    private async Task ServerReadsAsync()
    {
        var result = await _pipe.Input.ReadAsync();
        _pipe.Input.AdvanceTo(result.Buffer.End);
    }

    private async Task ServerWritesAsync(byte[] bytes, bool flush)
    {
        bytes.CopyTo(_pipe.Output.GetMemory(bytes.Length));
        _pipe.Output.Advance(bytes.Length);
        if (flush)
        {
            await _pipe.Output.FlushAsync();
        }
    }

    private async Task<byte[]> ClientReadsAsync(int length)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var result = await _toClient.Reader.ReadAtLeastAsync(length, timeout.Token);
        var bytes = result.Buffer.ToArray();
        _toClient.Reader.AdvanceTo(result.Buffer.End);
        return bytes;
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
