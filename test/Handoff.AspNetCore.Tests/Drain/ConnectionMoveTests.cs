using System.Net;
using System.Net.Sockets;
using System.Text;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Handoff.Tests.AspNetCore;

/// <summary>
/// The old generation's half of a connection that moves (<see cref="DrainableConnection.BeginMove"/>):
/// a real host with Kestrel on a loopback port and a real client socket; the move channel is a
/// socket pair whose other end the test reads, as the new generation would.
/// </summary>
public sealed class ConnectionMoveTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task ReadToEnd_AReadCancelledBeforeIt_StillWaitsForTheEnd_AndKeepsWhatCameMeanwhile()
    {
        // Kestrel cancelled its pending read when asked to close, while it was not reading: the
        // cancellation waits for the next read. The socket's receive loop puts the client's next
        // request in a moment later, then the end of file of the detach.
        var pipe = new System.IO.Pipelines.Pipe();
        pipe.Reader.CancelPendingRead();
        var reading = DrainableConnection.ReadToEndAsync(pipe.Reader);
        await Task.Yield();
        Assert.False(reading.IsCompleted, "the cancelled read was taken for the end");

        await pipe.Writer.WriteAsync(Encoding.ASCII.GetBytes("GET /next HTTP/1.1\r\n\r\n"));
        await pipe.Writer.CompleteAsync();
        Assert.Equal("GET /next HTTP/1.1\r\n\r\n", Encoding.ASCII.GetString(await reading.WaitAsync(Patience)));
    }

    [Fact]
    public async Task BeginMove_IdleKeepAliveConnection_MovesWithoutAClose_AndTheNewOwnerServesTheNextRequest()
    {
        await using var server = await Server.StartAsync();
        using var client = await server.ConnectAsync();
        Assert.EndsWith("pid", await Exchange(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), StringComparison.Ordinal);
        var (channel, peer) = Interop.Libc.StreamSocketPair();
        var target = new MoveTarget(channel);
        try
        {
            Assert.True(server.OnlyConnection().BeginMove(target));
            var moved = await Task.Run(() => MoveChannel.Receive(peer)).WaitAsync(Patience);

            Assert.NotNull(moved);
            Assert.Equal(MoveKind.Http1, moved.Kind);
            Assert.Empty(moved.Bytes);
            await UpgraderTestExtensions.WaitUntilAsync(() => server.Drainer.Count == 0);
            Assert.Equal((1, 0), (target.Moved, target.NotMoved));

            // The client was told nothing: no FIN, no RST. Its next request reaches the new owner.
            Assert.False(client.Poll(TimeSpan.Zero, SelectMode.SelectRead));
            using var adopted = new Socket(new SafeSocketHandle(moved.Fd, ownsHandle: true));
            await client.SendAsync(Encoding.ASCII.GetBytes("GET /again HTTP/1.1\r\nHost: x\r\n\r\n"));
            Assert.StartsWith("GET /again ", await ReceiveSomeAsync(adopted), StringComparison.Ordinal);
            await adopted.SendAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nmoved"));
            Assert.EndsWith("moved", await ReceiveSomeAsync(client), StringComparison.Ordinal);
        }
        finally
        {
            Interop.Libc.Close(channel);
            Interop.Libc.Close(peer);
        }
    }

    [Fact]
    public async Task BeginMove_WithTheNextRequestPipelined_SendsItsBytesWithTheConnection()
    {
        var (release, started, map) = SlowEndpoint();
        await using var server = await Server.StartAsync(map);
        using var client = await server.ConnectAsync();
        const string next = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        await client.SendAsync(Encoding.ASCII.GetBytes("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + next));
        await started.Task.WaitAsync(Patience);
        var (channel, peer) = Interop.Libc.StreamSocketPair();
        try
        {
            Assert.True(server.OnlyConnection().BeginMove(new MoveTarget(channel)));
            release.SetResult();
            var moved = await Task.Run(() => MoveChannel.Receive(peer)).WaitAsync(Patience);

            // The old generation answered the first request and left the second, already read,
            // to the new one.
            Assert.NotNull(moved);
            Assert.Equal(next, Encoding.ASCII.GetString(moved.Bytes));
            string response = await ReadResponseAsync(client);
            Assert.EndsWith("slow", response, StringComparison.Ordinal);
            Assert.DoesNotContain("Connection: close", response, StringComparison.OrdinalIgnoreCase);
            Interop.Libc.Close(moved.Fd);
        }
        finally
        {
            Interop.Libc.Close(channel);
            Interop.Libc.Close(peer);
        }
    }

    [Fact]
    public async Task BeginMove_WhileARequestLineIsHalfRead_DoesNotMove_TheRequestIsAnsweredWithConnectionClose()
    {
        // Kestrel has begun parsing: not a boundary. The request is served here, its response
        // says Connection: close (as in a drain), and the connection closes instead of moving.
        await using var server = await Server.StartAsync();
        using var client = await server.ConnectAsync();
        await Exchange(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        await client.SendAsync("GET /pa"u8.ToArray());
        await UpgraderTestExtensions.WaitUntilAsync(() => server.OnlyConnection().Features.Get<IConnectionSocketFeature>()!.Socket.Available == 0);
        var (channel, peer) = Interop.Libc.StreamSocketPair();
        var target = new MoveTarget(channel);
        try
        {
            Assert.True(server.OnlyConnection().BeginMove(target));
            await client.SendAsync(Encoding.ASCII.GetBytes("th HTTP/1.1\r\nHost: x\r\n\r\n"));
            string response = await ReadResponseAsync(client);

            Assert.Contains("Connection: close", response, StringComparison.OrdinalIgnoreCase);
            client.ReceiveTimeout = (int)Patience.TotalMilliseconds;
            Assert.Equal(0, client.Receive(new byte[16]));
            await UpgraderTestExtensions.WaitUntilAsync(() => target.NotMoved == 1);
            Assert.Equal(0, target.Moved);
        }
        finally
        {
            Interop.Libc.Close(channel);
            Interop.Libc.Close(peer);
        }
    }

    [Fact]
    public async Task BeginMove_DuringARequest_LetsItsResponseKeepTheConnectionAlive_ThenMoves()
    {
        var (release, started, map) = SlowEndpoint();
        await using var server = await Server.StartAsync(map);
        using var client = await server.ConnectAsync();
        await client.SendAsync(Encoding.ASCII.GetBytes("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
        await started.Task.WaitAsync(Patience);
        var (channel, peer) = Interop.Libc.StreamSocketPair();
        try
        {
            Assert.True(server.OnlyConnection().BeginMove(new MoveTarget(channel)));
            release.SetResult();
            string response = await ReadResponseAsync(client);
            var moved = await Task.Run(() => MoveChannel.Receive(peer)).WaitAsync(Patience);

            Assert.EndsWith("slow", response, StringComparison.Ordinal);
            Assert.DoesNotContain("Connection: close", response, StringComparison.OrdinalIgnoreCase);
            Assert.NotNull(moved);
            Assert.False(client.Poll(TimeSpan.Zero, SelectMode.SelectRead));
            Interop.Libc.Close(moved.Fd);
        }
        finally
        {
            Interop.Libc.Close(channel);
            Interop.Libc.Close(peer);
        }
    }

    [Fact]
    public async Task BeginMove_WhenTheNewGenerationIsGone_ClosesTheConnectionAsBefore()
    {
        await using var server = await Server.StartAsync();
        using var client = await server.ConnectAsync();
        await Exchange(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        var (channel, peer) = Interop.Libc.StreamSocketPair();
        Interop.Libc.Close(peer); // nobody receives
        var target = new MoveTarget(channel);
        try
        {
            Assert.True(server.OnlyConnection().BeginMove(target));
            client.ReceiveTimeout = (int)Patience.TotalMilliseconds;

            Assert.Equal(0, client.Receive(new byte[16])); // end of file: closed, not left hanging
            await UpgraderTestExtensions.WaitUntilAsync(() => target.NotMoved == 1);
            Assert.True(target.IsBroken);
        }
        finally
        {
            Interop.Libc.Close(channel);
        }
    }

    // "/slow": answers "slow" once released.
    [Fact]
    public async Task WebSocket_UpgradedAfterItsConnectionWasAskedToClose_ReadsAndNeverMoves()
    {
        // A drain or a move asks Kestrel to close an idle connection just as the client sends a
        // WebSocket handshake on it: the WebSocket works, and its connection, whose bytes are no
        // longer HTTP, can never move.
        DrainableConnection? carrier = null;
        await using var server = await Server.StartAsync(app =>
        {
            app.UseWebSockets();
            app.Map("/ws", async context =>
            {
                carrier = DrainableConnection.Find(context)!;
                carrier.RequestClose();
                using var webSocket = await context.WebSockets.AcceptWebSocketAsync();
                var buffer = new byte[64];
                var received = await webSocket.ReceiveAsync(buffer, CancellationToken.None);
                await webSocket.SendAsync(buffer.AsMemory(0, received.Count), System.Net.WebSockets.WebSocketMessageType.Text, true, CancellationToken.None);
                await webSocket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, "", CancellationToken.None);
            });
        });

        using var client = new System.Net.WebSockets.ClientWebSocket();
        using var timeout = new CancellationTokenSource(Patience);
        await client.ConnectAsync(new Uri(server.Url.Replace("http:", "ws:", StringComparison.Ordinal) + "ws"), timeout.Token);
        await client.SendAsync(Encoding.ASCII.GetBytes("hello"), System.Net.WebSockets.WebSocketMessageType.Text, true, timeout.Token);
        var echo = new byte[64];
        var result = await client.ReceiveAsync(echo, timeout.Token);
        Assert.Equal("hello", Encoding.ASCII.GetString(echo, 0, result.Count));
        Assert.Equal(System.Net.WebSockets.WebSocketMessageType.Close, (await client.ReceiveAsync(echo, timeout.Token)).MessageType);
        Assert.False(carrier!.CanMove);
    }

    private static (TaskCompletionSource Release, TaskCompletionSource Started, Action<WebApplication> Map) SlowEndpoint()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        return (release, started, app => app.MapGet("/slow", async context =>
        {
            started.SetResult();
            await release.Task;
            await Server.WriteAsync(context, "slow");
        }));
    }

    private static async Task<string> Exchange(Socket client, string request)
    {
        await client.SendAsync(Encoding.ASCII.GetBytes(request));
        return await ReadResponseAsync(client);
    }

    // One response with a Content-Length.
    private static async Task<string> ReadResponseAsync(Socket client)
    {
        var text = new StringBuilder();
        using var deadline = new CancellationTokenSource(Patience);
        byte[] buffer = new byte[4096];
        while (true)
        {
            int n = await client.ReceiveAsync(buffer, SocketFlags.None, deadline.Token);
            Assert.NotEqual(0, n);
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
            string all = text.ToString();
            int end = all.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            var length = System.Text.RegularExpressions.Regex.Match(all, "Content-Length: (\\d+)", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
            if (end >= 0 && length.Success && all.Length >= end + 4 + int.Parse(length.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))
            {
                return all;
            }
        }
    }

    private static async Task<string> ReceiveSomeAsync(Socket socket)
    {
        using var deadline = new CancellationTokenSource(Patience);
        byte[] buffer = new byte[4096];
        int n = await socket.ReceiveAsync(buffer, SocketFlags.None, deadline.Token);
        return Encoding.ASCII.GetString(buffer, 0, n);
    }

    private sealed class Server : IAsyncDisposable
    {
        private readonly WebApplication _app;

        private Server(WebApplication app) => _app = app;

        public ConnectionDrainer Drainer => _app.Services.GetRequiredService<ConnectionDrainer>();

        public static async Task<Server> StartAsync(Action<WebApplication>? map = null)
        {
            var builder = WebApplication.CreateBuilder();
            builder.WebHost.UseHandoff().UseUrls("http://127.0.0.1:0");
            var app = builder.Build();
            app.MapGet("/", context => WriteAsync(context, "pid"));
            map?.Invoke(app);
            await app.StartAsync();
            return new Server(app);
        }

        // With a Content-Length, which is how the tests find a response's end.
        public static Task WriteAsync(Microsoft.AspNetCore.Http.HttpContext context, string body)
        {
            context.Response.ContentLength = body.Length;
            return context.Response.Body.WriteAsync(Encoding.ASCII.GetBytes(body)).AsTask();
        }

        public string Url => _app.Urls.First().TrimEnd('/') + "/";

        public async Task<Socket> ConnectAsync()
        {
            var uri = new Uri(_app.Urls.First());
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, uri.Port));
            return client;
        }

        public DrainableConnection OnlyConnection()
        {
            DrainableConnection? found = null;
            foreach (var connection in Drainer.Connections)
            {
                Assert.Null(found);
                found = connection;
            }

            return found ?? throw new InvalidOperationException("no connection tracked");
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
