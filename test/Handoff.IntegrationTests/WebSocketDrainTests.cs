using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>WebSockets and server-sent events across an upgrade: at the drain's start the old
/// generation closes its WebSockets with 1012 (Service Restart) and ends its event streams, the
/// clients reconnect to the new generation, and the old one exits without waiting for
/// <c>DrainTimeout</c>.</summary>
public sealed class WebSocketDrainTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int SIGUSR2 = 12;
    private const WebSocketCloseStatus ServiceRestart = (WebSocketCloseStatus)1012;

    // Short, so that "the old generation exits soon after the drain's start" is seen within
    // the two seconds; DrainTimeout stays long, so that an exit before it is the
    // WebSockets' doing.
    private static readonly string[] Options = ["--Handoff:RollbackWindow=500ms", "--Handoff:DrainTimeout=30s"];

    [Fact]
    public async Task Upgrade_FiftyWebSockets_ClosedWith1012_ReconnectToTheNewGeneration()
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var clients = new List<Task<(WebSocketCloseStatus? Status, long ClosedAt, int NewPid)>>();
        var connected = new List<Task>();
        for (int i = 0; i < 50; i++)
        {
            var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            connected.Add(ready.Task);
            clients.Add(Task.Run(() => ClientAsync(server, old, ready, timeout.Token)));
        }

        await Task.WhenAll(connected).WaitAsync(timeout.Token);

        ServerProcess.Signal(old, SIGUSR2);
        long drainStart = await WaitForNewPidAsync(server, old, timeout.Token);
        int newPid = server.CurrentPid;
        server.Track(newPid);
        await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30));
        double goneAfter = Stopwatch.GetElapsedTime(drainStart).TotalSeconds;

        var results = await Task.WhenAll(clients);
        Assert.All(results, r => Assert.Equal(ServiceRestart, r.Status));
        double latest = results.Max(r => Stopwatch.GetElapsedTime(drainStart, r.ClosedAt).TotalSeconds);
        Assert.True(latest < 1, $"the last close came {latest:0.000} s after the new generation was ready");
        Assert.All(results, r => Assert.Equal(newPid, r.NewPid));
        output.WriteLine($"50 WebSockets: last close {latest:0.000} s, old generation gone {goneAfter:0.000} s after the new generation was ready");
        Assert.True(goneAfter < 2, $"the old generation exited {goneAfter:0.000} s after the new one was ready");
        await server.WaitForOutputAsync($"Pid {old} closes 50 WebSockets with status 1012");
    }

    [Fact]
    public async Task Upgrade_WebSocketOverHttp2_ClosedWith1012_ReconnectsToTheNewGeneration()
    {
        // RFC 8441: a WebSocket on an HTTP/2 stream (extended CONNECT), here over h2c.
        await using var server = await ServerProcess.StartAsync(arguments: [.. Options, "--Kestrel:EndpointDefaults:Protocols=Http2"]);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var handler = new HttpMessageInvoker(new SocketsHttpHandler());
        var uri = new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws");
        using var socket = Http2WebSocket();
        await socket.ConnectAsync(uri, handler, timeout.Token);
        Assert.Equal($"pid:{old}", await WebSocketText.ReceiveAsync(socket, timeout.Token));

        ServerProcess.Signal(old, SIGUSR2);
        await WaitForNewPidAsync(server, old, timeout.Token);
        server.Track(server.CurrentPid);
        await WebSocketText.ReceiveCloseAsync(socket, timeout.Token);

        Assert.Equal(ServiceRestart, socket.CloseStatus);
        using var next = Http2WebSocket();
        await next.ConnectAsync(uri, handler, timeout.Token);
        Assert.Equal($"pid:{server.CurrentPid}", await WebSocketText.ReceiveAsync(next, timeout.Token));
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));

        static ClientWebSocket Http2WebSocket()
        {
            var socket = new ClientWebSocket();
            socket.Options.HttpVersion = System.Net.HttpVersion.Version20;
            socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
            return socket;
        }
    }

    [Fact]
    public async Task Stop_WebSocketGetsGoingAway_AndTheServerExitsAtOnce()
    {
        // No new generation: 1001 (Going Away), not 1012 (Service Restart).
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        int pid = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws"), timeout.Token);
        Assert.Equal($"pid:{pid}", await WebSocketText.ReceiveAsync(socket, timeout.Token));

        ServerProcess.Signal(pid, 15);
        await WebSocketText.ReceiveCloseAsync(socket, timeout.Token);

        Assert.Equal(WebSocketCloseStatus.EndpointUnavailable, socket.CloseStatus); // 1001
        await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token);
        var stopwatch = Stopwatch.StartNew();
        Assert.Equal(0, await server.WaitForExitAsync(pid, TimeSpan.FromSeconds(30)));
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10), $"exited {stopwatch.Elapsed.TotalSeconds:0.0} s after the close (DrainTimeout is 30 s)");
    }

    [Fact]
    public async Task Upgrade_EndpointOptedOut_KeepsItsWebSocketOnTheOldGeneration()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=500ms", "--Handoff:DrainTimeout=3s"]);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws-keep"), timeout.Token);
        Assert.Equal($"pid:{old}", await WebSocketText.ReceiveAsync(socket, timeout.Token));

        ServerProcess.Signal(old, SIGUSR2);
        await WaitForNewPidAsync(server, old, timeout.Token);
        server.Track(server.CurrentPid);
        await server.WaitForOutputAsync($"Pid {old} stopped accepting; draining");

        // Well past the drain's start and the rollback window, the old generation still echoes.
        await Task.Delay(TimeSpan.FromSeconds(1.5), timeout.Token);
        await socket.SendAsync(Encoding.UTF8.GetBytes("still here"), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
        Assert.Equal("still here", await WebSocketText.ReceiveAsync(socket, timeout.Token));
        Assert.True(ProcessTable.IsRunning(old));
        Assert.DoesNotContain("WebSockets with status 1012", server.Output, StringComparison.Ordinal);

        // Until Handoff:DrainTimeout, which ends it.
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task Upgrade_ServerSentEvents_EndAtTheDrainsStart_ThenComeFromTheNewGeneration()
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var client = new HttpClient();
        string url = $"http://127.0.0.1:{server.EndPoint.Port}/sse";
        using var response = await client.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token));
        Assert.Equal($"data: pid:{old}", await NextEventAsync(reader, timeout.Token));

        ServerProcess.Signal(old, SIGUSR2);
        long drainStart = await WaitForNewPidAsync(server, old, timeout.Token);
        server.Track(server.CurrentPid);
        while (await NextEventAsync(reader, timeout.Token) is not null)
        {
        }

        double ended = Stopwatch.GetElapsedTime(drainStart).TotalSeconds;
        output.WriteLine($"event stream ended {ended:0.000} s after the new generation was ready");
        Assert.True(ended < 1, $"the event stream ended {ended:0.000} s after the new generation was ready");

        using var again = await client.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        using var newReader = new StreamReader(await again.Content.ReadAsStreamAsync(timeout.Token));
        Assert.Equal($"data: pid:{server.CurrentPid}", await NextEventAsync(newReader, timeout.Token));
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
    }

    // One client: connects, reads the pid, waits for the server's close, answers it, then
    // reconnects and reads the pid that serves it now.
    private static async Task<(WebSocketCloseStatus? Status, long ClosedAt, int NewPid)> ClientAsync(ServerProcess server, int old, TaskCompletionSource ready, CancellationToken cancellationToken)
    {
        var uri = new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws");
        WebSocketCloseStatus? status;
        long closedAt;
        using (var socket = new ClientWebSocket())
        {
            await socket.ConnectAsync(uri, cancellationToken);
            Assert.Equal($"pid:{old}", await WebSocketText.ReceiveAsync(socket, cancellationToken));
            ready.SetResult();
            await WebSocketText.ReceiveCloseAsync(socket, cancellationToken);

            closedAt = Stopwatch.GetTimestamp();
            status = socket.CloseStatus;
            await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken);
        }

        using var next = new ClientWebSocket();
        await next.ConnectAsync(uri, cancellationToken);
        string pid = await WebSocketText.ReceiveAsync(next, cancellationToken);
        await next.CloseAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken);
        return (status, closedAt, int.Parse(pid["pid:".Length..], System.Globalization.CultureInfo.InvariantCulture));
    }

    // The pid file names the new generation once it is ready, just before the old one is told
    // and starts to drain: the moment measured from.
    private static async Task<long> WaitForNewPidAsync(ServerProcess server, int old, CancellationToken cancellationToken)
    {
        while (server.CurrentPid == old || server.CurrentPid == 0)
        {
            await Task.Delay(5, cancellationToken);
        }

        return Stopwatch.GetTimestamp();
    }

    private static async Task<string?> NextEventAsync(StreamReader reader, CancellationToken cancellationToken)
    {
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.StartsWith("data:", StringComparison.Ordinal))
            {
                return line;
            }
        }

        return null;
    }
}
