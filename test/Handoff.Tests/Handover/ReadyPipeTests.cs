using System.Text;

namespace Handoff.Tests;

public sealed class ReadyPipeTests
{
    [Theory]
    [InlineData("ready", null)]
    [InlineData("ready\n", null)]
    [InlineData("failed warm-up failed: boom", "warm-up failed: boom")]
    [InlineData("hello", "the new generation sent 'hello' instead of 'ready'")]
    public void ParseLine_GivesNullForReadyOrTheReason(string line, string? expected)
    {
        Assert.Equal(expected, ReadyPipe.ParseLine(line));
    }

    [Fact]
    public unsafe void ReportFailed_MultiLineReason_ArrivesAsOneLineThenEndOfFile()
    {
        var (read, write) = Interop.Libc.CreatePipe();
        try
        {
            var pipe = new ReadyPipe(write);
            pipe.ReportFailed("first\nsecond");
            pipe.ReportReady(); // ignored: the pipe is closed after the first report

            byte[] buffer = new byte[256];
            int total = 0;
            fixed (byte* p = buffer)
            {
                nint n;
                while ((n = Interop.Libc.Read(read, p + total, (nuint)(buffer.Length - total))) > 0)
                {
                    total += (int)n;
                }
            }

            Assert.False(pipe.IsOpen);
            Assert.Equal("failed first second\n", Encoding.UTF8.GetString(buffer, 0, total));
        }
        finally
        {
            Interop.Libc.Close(read);
        }
    }
}
