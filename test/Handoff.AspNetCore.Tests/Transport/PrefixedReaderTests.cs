using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Handoff.AspNetCore;

namespace Handoff.Tests.AspNetCore;

public sealed class PrefixedReaderTests
{
    [Fact]
    public async Task Read_GivesTheEarlierBytesFirst_ThenTheSocketsOwn()
    {
        var socket = new Pipe();
        var reader = new PrefixedReader(new DuplexPipe(socket.Reader, new Pipe().Writer), "GET /a\r\n"u8);
        await socket.Writer.WriteAsync("next"u8.ToArray());

        var first = await reader.ReadAsync();
        Assert.Equal("GET /a\r\n", Text(first.Buffer));
        reader.AdvanceTo(first.Buffer.End);

        var second = await reader.ReadAsync();
        Assert.Equal("next", Text(second.Buffer));
        reader.AdvanceTo(second.Buffer.End);
    }

    [Fact]
    public async Task Read_WhenTheEarlierBytesAreNotEnough_AppendsTheSocketsBehindThem()
    {
        var socket = new Pipe();
        var reader = new PrefixedReader(new DuplexPipe(socket.Reader, new Pipe().Writer), "GET /pa"u8);

        var first = await reader.ReadAsync();
        reader.AdvanceTo(first.Buffer.Start, first.Buffer.End); // a partial request line: more needed
        var pending = reader.ReadAsync();
        Assert.False(pending.IsCompleted);
        await socket.Writer.WriteAsync("th HTTP/1.1\r\n"u8.ToArray());
        var second = await pending;

        Assert.Equal("GET /path HTTP/1.1\r\n", Text(second.Buffer));
        reader.AdvanceTo(second.Buffer.End);

        // All consumed: the socket's pipe itself from here on.
        await socket.Writer.WriteAsync("x"u8.ToArray());
        var third = await reader.ReadAsync();
        Assert.Equal("x", Text(third.Buffer));
        reader.AdvanceTo(third.Buffer.End);
        reader.Complete();
        var end = await socket.Writer.FlushAsync();
        Assert.True(end.IsCompleted); // the socket's reader was completed too
    }

    [Fact]
    public async Task Construct_WithAMegabyteOfEarlierBytes_TakesThemAll()
    {
        byte[] prefix = new byte[1 << 20];
        Random.Shared.NextBytes(prefix);
        var reader = new PrefixedReader(new DuplexPipe(new Pipe().Reader, new Pipe().Writer), prefix);

        var read = await reader.ReadAsync();

        Assert.Equal(prefix, read.Buffer.ToArray());
    }

    private static string Text(ReadOnlySequence<byte> buffer) => Encoding.ASCII.GetString(buffer.ToArray());

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
