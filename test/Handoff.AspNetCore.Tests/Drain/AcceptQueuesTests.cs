using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests;

/// <summary>The accept queues as the kernel reports them (sock_diag), on real sockets.</summary>
public sealed class AcceptQueuesTests
{
    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("::1")]
    public async Task TryRead_ConnectionsNotAccepted_AreCountedInTheListenersQueue(string address)
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new IPEndPoint(IPAddress.Parse(address), 0));
        var clients = new List<Socket>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                var client = new Socket(listener.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                await client.ConnectAsync(listener.EndPoint);
            }

            using var queues = AcceptQueues.TryOpen(out string? error) ?? throw new InvalidOperationException(error);
            var read = new Dictionary<uint, AcceptQueue>();
            Assert.True(queues.TryRead(read, out error), error);

            // Handoff listens with Kestrel's backlog, 512 (net.core.somaxconn is larger here).
            Assert.NotNull(listener.SocketInode);
            Assert.Equal(new AcceptQueue(3, 512), read[listener.SocketInode.Value]);

            using (var accepted = listener.CreateAcceptSocket().Accept())
            {
                Assert.True(queues.TryRead(read, out error), error);
                Assert.Equal(2, read[listener.SocketInode.Value].Queued);
            }

            // The queue is known by the socket's inode, after this process closed its descriptor
            // too, as long as some process holds the socket.
            int copy = Interop.Libc.DuplicateCloseOnExec(listener.FileDescriptor, 3);
            try
            {
                await listener.CloseAsync();
                Assert.True(queues.TryRead(read, out error), error);
                Assert.Equal(2, read[listener.SocketInode.Value].Queued);
            }
            finally
            {
                Interop.Libc.Close(copy);
            }

            Assert.True(queues.TryRead(read, out error), error);
            Assert.False(read.ContainsKey(listener.SocketInode.Value));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task SocketInode_UnixListener_IsNull()
    {
        string directory = Directory.CreateTempSubdirectory("handoff-queues-").FullName;
        try
        {
            await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
            var listener = registry.Listen(new UnixDomainSocketEndPoint(Path.Combine(directory, "s.sock")));
            Assert.Null(listener.SocketInode);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Parse_ErrorOrTruncatedMessage_Fails()
    {
        var queues = new Dictionary<uint, AcceptQueue>();

        // NLMSG_ERROR for our request.
        byte[] error = Header(length: 36, type: 2, sequence: 7);
        Assert.Equal(AcceptQueues.ParseResult.Failed, AcceptQueues.Parse(error.AsSpan(0, 16), 7, queues));

        // A length beyond the datagram.
        byte[] truncated = Header(length: 88, type: 20, sequence: 7);
        Assert.Equal(AcceptQueues.ParseResult.Failed, AcceptQueues.Parse(truncated.AsSpan(0, 40), 7, queues));

        // A socket message and the end of the dump in one datagram.
        byte[] both = new byte[88 + 16];
        Header(length: 88, type: 20, sequence: 7).AsSpan(0, 16).CopyTo(both);
        BinaryPrimitives.WriteUInt32LittleEndian(both.AsSpan(16 + 56), 5);
        BinaryPrimitives.WriteUInt32LittleEndian(both.AsSpan(16 + 60), 128);
        BinaryPrimitives.WriteUInt32LittleEndian(both.AsSpan(16 + 68), 4242);
        Header(length: 16, type: 3, sequence: 7).AsSpan(0, 16).CopyTo(both.AsSpan(88));
        Assert.Equal(AcceptQueues.ParseResult.Done, AcceptQueues.Parse(both, 7, queues));
        Assert.Equal(new AcceptQueue(5, 128), queues[4242]);
    }

    private static byte[] Header(uint length, ushort type, uint sequence)
    {
        byte[] header = new byte[Math.Max(16, (int)length)];
        BinaryPrimitives.WriteUInt32LittleEndian(header, length);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(4), type);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), sequence);
        return header;
    }
}
