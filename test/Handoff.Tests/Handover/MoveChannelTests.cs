using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Handoff.Tests;

/// <summary>The move channel's frames over a real Unix socket pair, carrying real TCP connections.</summary>
public sealed class MoveChannelTests
{
    [Fact]
    public void Send_Receive_CarriesTheConnectionItsBytesAndState_AndTheReceiverServesIt()
    {
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        try
        {
            using var pair = TcpPair.Open();
            byte[] pipelined = Encoding.ASCII.GetBytes("GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
            int fd = (int)pair.Server.SafeHandle.DangerousGetHandle();

            MoveChannel.Send(sender, fd, MoveKind.Tcp, 4242, pipelined, [1, 2, 3]);
            pair.Server.Dispose(); // The sender's copy goes; the connection stays (no FIN while the receiver holds it).
            var moved = MoveChannel.Receive(receiver);

            Assert.NotNull(moved);
            Assert.Equal(MoveKind.Tcp, moved.Kind);
            Assert.Equal(4242UL, moved.ListenerInode);
            Assert.Equal(pipelined, moved.Bytes);
            Assert.Equal([1, 2, 3], moved.State);
            Assert.True(Interop.Libc.IsCloseOnExec(moved.Fd));
            using var adopted = new Socket(new SafeSocketHandle(moved.Fd, ownsHandle: true));
            adopted.Send("moved"u8);
            byte[] buffer = new byte[5];
            Assert.Equal(5, pair.Client.Receive(buffer));
            Assert.Equal("moved", Encoding.ASCII.GetString(buffer));
        }
        finally
        {
            Interop.Libc.Close(sender);
            Interop.Libc.Close(receiver);
        }
    }

    [Fact]
    public async Task Send_ManyFramesAndLargeBytes_ArriveInOrder_ThenNullAtTheEnd()
    {
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        var pairs = Enumerable.Range(0, 3).Select(_ => TcpPair.Open()).ToList();
        try
        {
            // 2 MB of bytes in the second frame: more than the socket pair buffers, so the sender
            // blocks until the receiver reads, and the frames must not run into each other.
            byte[][] payloads = [[], new byte[2 << 20], Encoding.ASCII.GetBytes("third")];
            Random.Shared.NextBytes(payloads[1]);
            var sending = Task.Run(() =>
            {
                for (int i = 0; i < pairs.Count; i++)
                {
                    MoveChannel.Send(sender, (int)pairs[i].Server.SafeHandle.DangerousGetHandle(), MoveKind.Http1, (ulong)i + 1, payloads[i], []);
                }

                Interop.Libc.Close(sender);
            });

            for (int i = 0; i < pairs.Count; i++)
            {
                var moved = MoveChannel.Receive(receiver);
                Assert.NotNull(moved);
                Assert.Equal((ulong)i + 1, moved.ListenerInode);
                Assert.Equal(payloads[i], moved.Bytes);
                Assert.Empty(moved.State);

                // Each frame's descriptor is its own connection.
                Assert.Equal(ProcFs.Inode(ProcFs.SelfFd((int)pairs[i].Server.SafeHandle.DangerousGetHandle())), ProcFs.Inode(ProcFs.SelfFd(moved.Fd)));
                Interop.Libc.Close(moved.Fd);
            }

            await sending.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Null(MoveChannel.Receive(receiver));
        }
        finally
        {
            Interop.Libc.Close(receiver);
            pairs.ForEach(p => p.Dispose());
        }
    }

    [Fact]
    public void Receive_AFrameWhoseDescriptorDidNotArrive_IsReportedAsLost_AndTheNextFrameStillComes()
    {
        // What a receiver with no descriptor left (EMFILE) gets: the kernel drops the descriptor
        // and delivers the bytes. One lost connection must not lose the ones after it.
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        using var pair = TcpPair.Open();
        try
        {
            byte[] header = Header(bytesLength: 3);
            Interop.Libc.WriteAll(sender, [.. header, .. "abc"u8.ToArray()]);
            MoveChannel.Send(sender, pair.ServerFd, MoveKind.Http1, 7, "next"u8, []);

            var lost = MoveChannel.Receive(receiver);
            var next = MoveChannel.Receive(receiver);

            Assert.Equal(-1, lost!.Fd);
            Assert.NotNull(next);
            Assert.Equal("next", Encoding.ASCII.GetString(next.Bytes));
            Interop.Libc.Close(next.Fd);
        }
        finally
        {
            Interop.Libc.Close(sender);
            Interop.Libc.Close(receiver);
        }
    }

    [Theory]
    [InlineData("magic")]
    [InlineData("version")]
    [InlineData("kind")]
    [InlineData("length")]
    [InlineData("truncated")]
    public void Receive_AMalformedFrame_ThrowsAndClosesTheDescriptorItBrought(string fault)
    {
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        using var pair = TcpPair.Open();
        try
        {
            byte[] header = Header(bytesLength: 10);
            switch (fault)
            {
                case "magic": header[0] = (byte)'X'; break;
                case "version": header[2] = 99; break;
                case "kind": header[3] = 7; break;
                case "length": BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), MoveChannel.MaxBytes + 1); break;
            }

            Interop.Libc.SendWithDescriptor(sender, header, (int)pair.Server.SafeHandle.DangerousGetHandle());
            Interop.Libc.Close(sender); // "truncated": the 10 bytes announced never come
            pair.Server.Dispose();

            var error = Assert.Throws<HandoffProtocolException>(() => MoveChannel.Receive(receiver));
            Assert.Contains("move channel", error.Message, StringComparison.Ordinal);

            // The descriptor that came with the frame is closed: the connection's last one, so
            // the client reads end of file.
            pair.Client.ReceiveTimeout = 10_000;
            Assert.Equal(0, pair.Client.Receive(new byte[1]));
        }
        finally
        {
            Interop.Libc.Close(receiver);
        }
    }

    [Fact]
    public void Totals_AfterTheSenderShutsDownItsWriting_ComeBackOnTheSameChannel()
    {
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        try
        {
            // The old generation's end of file ends the new one's reading; its answer follows.
            Assert.Equal(0, Interop.Libc.ShutdownWrite(sender));
            Assert.Null(MoveChannel.Receive(receiver));
            Assert.True(MoveChannel.WriteTotals(receiver, taken: 9_999, closed: 1));
            Interop.Libc.Close(receiver);
            receiver = -1;

            Assert.Equal((9_999, 1), MoveChannel.ReadTotals(sender));
        }
        finally
        {
            Interop.Libc.Close(sender);
            if (receiver >= 0)
            {
                Interop.Libc.Close(receiver);
            }
        }
    }

    [Theory]
    [InlineData("nothing")]
    [InlineData("short")]
    [InlineData("magic")]
    [InlineData("negative")]
    public void Totals_MissingOrMalformed_AreNull(string fault)
    {
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        try
        {
            byte[] totals = new byte[MoveChannel.TotalsLength];
            totals[0] = (byte)'H';
            totals[1] = (byte)'A';
            totals[2] = MoveChannel.Version;
            switch (fault)
            {
                case "short": totals = totals[..5]; break;
                case "magic": totals[1] = (byte)'M'; break;
                case "negative": BinaryPrimitives.WriteInt32BigEndian(totals.AsSpan(8), -1); break;
            }

            if (fault != "nothing")
            {
                Interop.Libc.WriteAll(receiver, totals);
            }

            Interop.Libc.Close(receiver); // the new generation exits
            receiver = -1;
            Assert.Null(MoveChannel.ReadTotals(sender));
        }
        finally
        {
            Interop.Libc.Close(sender);
            if (receiver >= 0)
            {
                Interop.Libc.Close(receiver);
            }
        }
    }

    // A well-formed header of an HTTP/1.1 frame announcing bytesLength bytes and no state.
    private static byte[] Header(int bytesLength)
    {
        byte[] header = new byte[MoveChannel.HeaderLength];
        header[0] = (byte)'H';
        header[1] = (byte)'M';
        header[2] = MoveChannel.Version;
        header[3] = (byte)MoveKind.Http1;
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), bytesLength);
        return header;
    }
}
