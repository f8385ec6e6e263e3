using System.Net.Sockets;
using System.Text;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Handoff.Tests.AspNetCore;

/// <summary>
/// The new generation's half of a connection that moves: a real host with Kestrel on a loopback
/// port adopts connections sent on a move channel (a socket pair whose other end the test
/// writes, as the old generation would) and serves them as its own.
/// </summary>
public sealed class ConnectionAdoptionTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Adopt_AConnectionSentOnTheChannel_KestrelServesIt_AndTheBytesThatCameWithItFirst()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseHandoff().UseUrls("http://127.0.0.1:0");
        await using var app = builder.Build();
        app.MapGet("/", context => context.Response.WriteAsync("adopted"));
        await app.StartAsync();
        ulong inode = app.Services.GetRequiredService<Upgrader>().Listeners.Listeners.Single().SocketInode!.Value;
        var adoption = app.Services.GetRequiredService<ConnectionAdoption>();
        var drainer = app.Services.GetRequiredService<ConnectionDrainer>();
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        adoption.Start(receiver);
        try
        {
            // Two connections made elsewhere (as the old generation accepted them): one idle, one
            // with a request the old generation had read already.
            using var idle = TcpPair.Open();
            using var pipelined = TcpPair.Open();
            MoveChannel.Send(sender, Fd(idle.Server), MoveKind.Http1, inode, [], []);
            MoveChannel.Send(sender, Fd(pipelined.Server), MoveKind.Http1, inode, Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []);
            idle.Server.Dispose();
            pipelined.Server.Dispose();

            Assert.EndsWith("adopted", await ReceiveAsync(pipelined.Client), StringComparison.Ordinal);
            await idle.Client.SendAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
            Assert.EndsWith("adopted", await ReceiveAsync(idle.Client), StringComparison.Ordinal);
            Assert.Equal(2, adoption.Adopted);
            Assert.Equal(2, drainer.Count); // tracked like accepted ones: they drain and move again

            // The old generation is done: the channel ends, accepts are as before.
            Interop.Libc.Close(sender);
            sender = -1;
            await UpgraderTestExtensions.WaitUntilAsync(() => !adoption.IsReceiving);
            using var fresh = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };
            Assert.Equal("adopted", await fresh.GetStringAsync("/"));
        }
        finally
        {
            if (sender >= 0)
            {
                Interop.Libc.Close(sender);
            }

            await app.StopAsync();
        }
    }

    [Fact]
    public async Task Adopt_AConnectionNoListenerHereServes_ClosesIt()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseHandoff().UseUrls("http://127.0.0.1:0");
        await using var app = builder.Build();
        await app.StartAsync();
        var adoption = app.Services.GetRequiredService<ConnectionAdoption>();
        var (sender, receiver) = Interop.Libc.StreamSocketPair();
        adoption.Start(receiver);
        try
        {
            using var pair = TcpPair.Open();
            MoveChannel.Send(sender, Fd(pair.Server), MoveKind.Http1, listenerInode: 1, [], []);
            pair.Server.Dispose();

            pair.Client.ReceiveTimeout = (int)Patience.TotalMilliseconds;
            Assert.Equal(0, pair.Client.Receive(new byte[1]));

            // Counted once the channel has ended (the count follows the close).
            Interop.Libc.Close(sender);
            sender = -1;
            await adoption.Ended.WaitAsync(Patience);
            Assert.Equal(1, adoption.Refused);
        }
        finally
        {
            if (sender >= 0)
            {
                Interop.Libc.Close(sender);
            }

            await app.StopAsync();
        }
    }

    private static int Fd(Socket socket) => (int)socket.SafeHandle.DangerousGetHandle();

    private static async Task<string> ReceiveAsync(Socket socket)
    {
        using var deadline = new CancellationTokenSource(Patience);
        var text = new StringBuilder();
        byte[] buffer = new byte[4096];
        while (!text.ToString().EndsWith("adopted", StringComparison.Ordinal) && !text.ToString().Contains("\r\n0\r\n\r\n", StringComparison.Ordinal))
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, deadline.Token);
            Assert.NotEqual(0, n);
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        string all = text.ToString();
        return all.Contains("adopted", StringComparison.Ordinal) ? "adopted" : all;
    }
}
