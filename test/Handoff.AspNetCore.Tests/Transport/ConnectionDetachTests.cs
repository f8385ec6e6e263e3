using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net.Sockets;
using Handoff.Tests;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.AspNetCore.Tests;

/// <summary>
/// <see cref="ConnectionDetach"/> under Kestrel's own socket transport (SocketConnection, the
/// receive loop that waits in the engine for the next bytes): the old owner's input ends without
/// error and without a byte too many, the client sees no FIN, and the new descriptor serves the
/// same connection.
/// </summary>
public sealed class ConnectionDetachTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Detach_IdleKestrelConnection_EndsItsInputCleanly_AndTheNewDescriptorServesTheSameConnection()
    {
        using var pair = TcpPair.Open();
        var factory = new SocketConnectionContextFactory(new SocketConnectionFactoryOptions(), NullLogger.Instance);
        var context = factory.Create(pair.Server);
        await pair.Client.SendAsync("first"u8.ToArray());
        Assert.Equal("first", await ReadAsync(context.Transport.Input, 5));

        // Kestrel's receive loop now waits in the engine for the next bytes.
        int connection = Detach(pair.Server);
        Assert.True(connection >= 0);

        var rest = await ReadToEndAsync(context.Transport.Input).WaitAsync(Patience);
        Assert.Empty(rest);
        await context.DisposeAsync().AsTask().WaitAsync(Patience); // Kestrel's shutdown() and close(): on the stand-in

        using var adopted = new Socket(new SafeSocketHandle(connection, ownsHandle: true));
        await pair.Client.SendAsync("second"u8.ToArray());
        Assert.Equal("second", await ReceiveAsync(adopted, 6));
        await adopted.SendAsync("reply"u8.ToArray());
        Assert.Equal("reply", await ReceiveAsync(pair.Client, 5));

        // No FIN or RST came from the old owner: nothing more to read, the connection open.
        Assert.False(pair.Client.Poll(TimeSpan.Zero, SelectMode.SelectRead));
        Assert.True(pair.Client.Connected);
    }

    [Fact]
    public async Task Detach_WhileTheClientSendsWithoutPause_NoByteIsLostOrReadTwice()
    {
        // The client streams a counter; the old owner reads some through Kestrel's transport,
        // the connection is detached at whatever moment that is (a receive may be in flight),
        // the old owner's input is read to its end and the new descriptor reads the rest. Both
        // together must be the stream exactly.
        for (int round = 0; round < 20; round++)
        {
            using var pair = TcpPair.Open();
            var context = new SocketConnectionContextFactory(new SocketConnectionFactoryOptions(), NullLogger.Instance).Create(pair.Server);
            using var stop = new CancellationTokenSource();
            var sender = Task.Run(async () =>
            {
                byte[] buffer = new byte[4 * 256];
                int next = 0;
                while (!stop.IsCancellationRequested)
                {
                    for (int i = 0; i < 256; i++)
                    {
                        BinaryPrimitives.WriteInt32BigEndian(buffer.AsSpan(4 * i), next++);
                    }

                    await pair.Client.SendAsync(buffer);
                }

                pair.Client.Shutdown(SocketShutdown.Send);
                return next;
            });

            var received = new MemoryStream();
            while (received.Length < 4096 * (round + 1))
            {
                var result = await context.Transport.Input.ReadAsync();
                foreach (var segment in result.Buffer)
                {
                    received.Write(segment.Span);
                }

                context.Transport.Input.AdvanceTo(result.Buffer.End);
            }

            int connection = Detach(pair.Server);
            Assert.True(connection >= 0);
            received.Write(await ReadToEndAsync(context.Transport.Input).WaitAsync(Patience));
            await context.DisposeAsync().AsTask().WaitAsync(Patience);

            // The new owner reads while the client still sends (a full send buffer would stall it).
            using var adopted = new Socket(new SafeSocketHandle(connection, ownsHandle: true));
            var reader = Task.Run(async () =>
            {
                byte[] chunk = new byte[65536];
                using var deadline = new CancellationTokenSource(Patience);
                while (true)
                {
                    int n = await adopted.ReceiveAsync(chunk, SocketFlags.None, deadline.Token);
                    if (n == 0)
                    {
                        return;
                    }

                    received.Write(chunk, 0, n);
                }
            });
            await stop.CancelAsync();
            int sent = await sender.WaitAsync(Patience);
            await reader.WaitAsync(Patience);

            byte[] all = received.ToArray();
            Assert.Equal(sent * 4, all.Length);
            for (int i = 0; i < sent; i++)
            {
                Assert.Equal(i, BinaryPrimitives.ReadInt32BigEndian(all.AsSpan(4 * i)));
            }
        }
    }

    [Fact]
    public async Task Detach_ASocketTheEngineNeverSaw_ChangesNothing()
    {
        using var pair = TcpPair.Open();

        // No asynchronous operation yet: the engine has not registered it.
        int result = Detach(pair.Server);

        Assert.Equal(-1, result);
        pair.Client.Send("still"u8);
        byte[] buffer = new byte[5];
        Assert.Equal(5, pair.Server.Receive(buffer, SocketFlags.None));
        Assert.Equal("still", System.Text.Encoding.ASCII.GetString(buffer));
    }

    private static async Task<string> ReadAsync(PipeReader input, int length)
    {
        using var deadline = new CancellationTokenSource(Patience);
        while (true)
        {
            var result = await input.ReadAsync(deadline.Token);
            if (result.Buffer.Length >= length || result.IsCompleted)
            {
                string text = System.Text.Encoding.ASCII.GetString(result.Buffer.ToArray());
                input.AdvanceTo(result.Buffer.End);
                return text;
            }

            input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    private static async Task<byte[]> ReadToEndAsync(PipeReader input)
    {
        var all = new MemoryStream();
        while (true)
        {
            var result = await input.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                all.Write(segment.Span);
            }

            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return all.ToArray();
            }
        }
    }

    private static async Task<string> ReceiveAsync(Socket socket, int length)
    {
        using var deadline = new CancellationTokenSource(Patience);
        byte[] buffer = new byte[length];
        int read = 0;
        while (read < length)
        {
            int n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, deadline.Token);
            Assert.NotEqual(0, n);
            read += n;
        }

        return System.Text.Encoding.ASCII.GetString(buffer);
    }

    private static int Detach(System.Net.Sockets.Socket socket)
    {
        int fd = (int)socket.SafeHandle.DangerousGetHandle();
        return ConnectionDetach.Detach(fd, ProcFs.SelfInode(fd), ProcFs.SelfEpollRegistrations());
    }
}
