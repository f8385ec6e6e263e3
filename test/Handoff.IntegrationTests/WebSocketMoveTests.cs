using System.Globalization;
using System.Net.WebSockets;
using System.Text;
using System.Text.RegularExpressions;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>
/// WebSockets of an endpoint mapped with <c>MapHandoffWebSocket</c> (the test server's /ws-move,
/// which answers each message "pid:&lt;pid&gt; #&lt;n&gt; &lt;message&gt;", n counting the
/// connection's messages across generations) move to the new generation between two messages:
/// the client (.NET's <see cref="ClientWebSocket"/>, which never reconnects by itself) keeps its
/// connection, gets no close frame, loses no message and sees its count go on.
/// </summary>
public sealed partial class WebSocketMoveTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const WebSocketCloseStatus ServiceRestart = (WebSocketCloseStatus)1012;
    private static readonly string[] Options = ["--Handoff:RollbackWindow=300ms", "--Handoff:DrainTimeout=30s"];
    private static readonly string[] MixedPaths = ["/ws-move", "/ws-move", "/ws-move?save=throw", "/ws-move?compress=1"];

    // CI runs each load across 3 upgrades (about 4 s each); bench/slow-tests across 10 (about
    // 12 s each).
    [Theory]
    [InlineData(64, 1, 0, 4, 3)]
    [InlineData(64, 60_000, 4_000, 1, 3)]
    [InlineData(8, 1_000_000, 0, 1, 3)]
    public Task Upgrades_ClientsSendingContinuously_KeepTheirConnectionAndCount_NoMessageLostOrRepeated(int clientCount, int messageBytes, int fragmentBytes, int inFlight, int upgrades) =>
        ContinuousClientsAsync(clientCount, messageBytes, fragmentBytes, inFlight, upgrades);

    [SlowTheory]
    [Trait("Category", "Slow")]
    [InlineData(64, 1, 0, 4, 10)]
    [InlineData(64, 60_000, 4_000, 1, 10)]
    [InlineData(8, 1_000_000, 0, 1, 10)]
    public Task Upgrades_ClientsSendingContinuously_TenUpgrades(int clientCount, int messageBytes, int fragmentBytes, int inFlight, int upgrades) =>
        ContinuousClientsAsync(clientCount, messageBytes, fragmentBytes, inFlight, upgrades);

    private async Task ContinuousClientsAsync(int clientCount, int messageBytes, int fragmentBytes, int inFlight, int upgrades)
    {
        // 64 clients, each sending its next messages as soon as the previous ones are answered,
        // inFlight at a time (the next message's frames then wait behind the one being read);
        // with fragmentBytes, each message goes in frames of that size (a message half received
        // is then a common moment for the move to find).
        int Clients = clientCount;
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token);
        var clients = Enumerable.Range(0, Clients).Select(i => new EchoClient(server.EndPoint.Port, i, messageBytes, fragmentBytes, inFlight)).ToList();
        try
        {
            await Task.WhenAll(clients.Select(c => c.ConnectAsync(timeout.Token)));
            var running = clients.Select(c => Task.Run(() => c.RunAsync(stop.Token))).ToList();
            var pids = new List<int> { server.CurrentPid };
            for (int i = 0; i < upgrades; i++)
            {
                await WaitForAllAsync(clients, c => c.Answered >= 5 && c.LastPid == pids[^1], "every client to be answered by the current generation", timeout.Token, server);
                var (old, next, exit) = await server.UpgradeAsync();
                Assert.Equal(0, exit);
                pids.Add(next);
                await WaitForAllAsync(clients, c => c.LastPid == next, $"every client to be answered by pid {next}", timeout.Token, server);
                await server.WaitForOutputAsync(new Regex($@"Generation \d+ \(pid {old}\) moved (\d+) connections"));
            }

            await stop.CancelAsync();
            await Task.WhenAll(running);
            foreach (var client in clients)
            {
                Assert.Null(client.Failure);
                Assert.Equal(pids, client.Pids);
                await client.CloseAsync(timeout.Token);
            }

            output.WriteLine($"{Clients} clients, {clients.Sum(c => c.Answered)} messages answered in order across {upgrades} upgrades; pids {string.Join(", ", pids)}");
            foreach (int old in pids[..^1])
            {
                Assert.Contains($"(pid {old}) moved {Clients} connections to the new generation (it took {Clients} and closed 0)", server.Output, StringComparison.Ordinal);
            }

            Assert.DoesNotContain("does not move and is closed with 1012", server.Output, StringComparison.Ordinal);
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public async Task Upgrades_PythonWebsocketsClients_KeepTheirConnectionAndCount()
    {
        // The same with a client nobody here wrote: the "websockets" library (Debian's
        // python3-websockets), 8 connections sending two messages at a time, then a ping whose
        // pong each waits for (a ping that arrives while the connection is held for its move is
        // answered by the new generation).
        const int Clients = 8;
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        var info = new System.Diagnostics.ProcessStartInfo("/usr/bin/python3")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.ArgumentList.Add(Path.Combine(TestAssets.RepositoryRoot, "testassets", "Handoff.Testing", "python", "ws-echo-load.py"));
        info.ArgumentList.Add($"ws://127.0.0.1:{server.EndPoint.Port}/ws-move");
        info.ArgumentList.Add(Clients.ToString(CultureInfo.InvariantCulture));
        info.ArgumentList.Add("2");
        info.ArgumentList.Add("100");
        info.ArgumentList.Add("1");
        using var load = System.Diagnostics.Process.Start(info)!;
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        load.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lines.Enqueue(line);
            }
        };
        load.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lines.Enqueue("stderr: " + line);
            }
        };
        load.BeginOutputReadLine();
        load.BeginErrorReadLine();
        try
        {
            var pids = new List<int> { server.CurrentPid };
            for (int i = 0; i <= 3; i++)
            {
                if (i > 0)
                {
                    var (_, next, exit) = await server.UpgradeAsync();
                    Assert.Equal(0, exit);
                    pids.Add(next);
                }

                string pid = pids[^1].ToString(CultureInfo.InvariantCulture);
                await server.WaitUntilAsync(() => lines.Count(l => l.StartsWith("client ", StringComparison.Ordinal) && l.EndsWith(" pid " + pid, StringComparison.Ordinal)) == Clients || lines.Any(l => !l.StartsWith("client ", StringComparison.Ordinal)), TimeSpan.FromSeconds(60), $"every client to be answered by pid {pid}: {string.Join(" | ", lines.TakeLast(5))}");
                Assert.DoesNotContain(lines, l => !l.StartsWith("client ", StringComparison.Ordinal));
            }

            await load.StandardInput.WriteLineAsync("stop");
            await load.StandardInput.FlushAsync();
            await load.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            load.WaitForExit();
            string done = lines.Single(l => l.StartsWith("done ", StringComparison.Ordinal));
            output.WriteLine($"python websockets: {done}; pids {string.Join(", ", pids)}");
            Assert.Equal(0, int.Parse(done.Split(' ')[3], CultureInfo.InvariantCulture));
            Assert.Equal(0, load.ExitCode);
            Assert.Equal(Clients * pids.Count, lines.Count(l => l.StartsWith("client ", StringComparison.Ordinal)));
        }
        finally
        {
            if (!load.HasExited)
            {
                load.Kill();
            }
        }
    }

    [Theory]
    [InlineData("/ws", "")]
    [InlineData("/ws-move?save=none", "its session set no SaveState")]
    [InlineData("/ws-move?save=throw", "its SaveState threw InvalidOperationException")]
    [InlineData("/ws-move?save=hang", "its SaveState did not return within 1 s")]
    public async Task Upgrade_WebSocketThatCannotMove_ClosedWith1012_AsBefore(string path, string reason)
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        using var socket = new ClientWebSocket();
        await UpgradeExpecting1012Async(server, socket, path, reason);
    }

    [Fact]
    public async Task Upgrade_ToABuildWithoutTheEndpoint_ClosedWith1012()
    {
        // The next build maps /ws-move as a plain WebSocket endpoint: it names no endpoint it
        // resumes, so the old generation sends nothing and closes with 1012.
        using var files = new TempDirectory();
        string marker = Path.Combine(files.Path, "no-moving-websockets");
        await using var server = await ServerProcess.StartAsync(arguments: Options, environment: new Dictionary<string, string> { ["TESTSERVER_BREAK_NOMOVINGWEBSOCKETS"] = marker });
        using var socket = new ClientWebSocket();
        await UpgradeExpecting1012Async(server, socket, "/ws-move", "the new generation does not map this endpoint with MapHandoffWebSocket", () => File.WriteAllText(marker, ""));
    }

    [Fact]
    public async Task Upgrade_CompressedWebSocket_ClosedWith1012()
    {
        // permessage-deflate keeps its context from message to message: it cannot move.
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        using var socket = new ClientWebSocket();
        socket.Options.DangerousDeflateOptions = new WebSocketDeflateOptions();
        await UpgradeExpecting1012Async(server, socket, "/ws-move?compress=1", "it negotiated compression (permessage-deflate), whose context cannot move");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Upgrade_MovingEndpointOverHttp2OrTls_ClosedWith1012(bool tls)
    {
        // RFC 8441 over h2c (other streams share the connection), or HTTP/1.1 over TLS (the
        // session's keys cannot move): the endpoint is opted in, the connection cannot move.
        using var directory = new TempDirectory();
        string[] arguments = tls
            ? TestCertificate.HttpsEndpointArguments(TestCertificate.WritePfxIn(directory.Path))
            : ["--Kestrel:EndpointDefaults:Protocols=Http2"];
        await using var server = await ServerProcess.StartAsync(urls: tls ? "" : null, arguments: [.. Options, .. arguments]);
        using var socket = new ClientWebSocket();
#pragma warning disable CA5359 // The server under test uses a self-signed certificate made for the test.
        using var handler = new HttpMessageInvoker(new SocketsHttpHandler { SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true } });
#pragma warning restore CA5359
        if (!tls)
        {
            socket.Options.HttpVersion = System.Net.HttpVersion.Version20;
            socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }

        await UpgradeExpecting1012Async(server, socket, "/ws-move", tls ? "its connection cannot move (TLS, or not accepted by Handoff's listener)" : "it runs on an HTTP/2 stream (other streams share the connection)", invoker: handler, scheme: tls ? "wss" : "ws");
    }

    // Connects to path and sees the current generation answer, upgrades (after beforeUpgrade),
    // and expects the old generation's 1012 close, logged with reason (for /ws-move), then its
    // exit with 0.
    private static async Task UpgradeExpecting1012Async(ServerProcess server, ClientWebSocket socket, string path, string reason, Action? beforeUpgrade = null, HttpMessageInvoker? invoker = null, string scheme = "ws")
    {
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await socket.ConnectAsync(new Uri($"{scheme}://127.0.0.1:{server.EndPoint.Port}{path}"), invoker, timeout.Token);
        if (path.StartsWith("/ws-move", StringComparison.Ordinal))
        {
            await socket.SendAsync("hello"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
            Assert.Equal($"pid:{old} #1 hello", await WebSocketText.ReceiveAsync(socket, timeout.Token));
        }
        else
        {
            Assert.Equal($"pid:{old}", await WebSocketText.ReceiveAsync(socket, timeout.Token));
        }

        beforeUpgrade?.Invoke();
        ServerProcess.Signal(old, 12);
        await WebSocketText.ReceiveCloseAsync(socket, timeout.Token);
        Assert.Equal(ServiceRestart, socket.CloseStatus);
        server.Track(server.CurrentPid);
        if (reason.Length > 0)
        {
            await server.WaitForOutputAsync($"Pid {old}: a WebSocket of /ws-move does not move and is closed with 1012 (Service Restart): {reason}");
        }

        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task Upgrade_TheSubProtocolChosenAtTheHandshake_GoesOnInTheNewGeneration()
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("chat.v2");
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws-move"), timeout.Token);
        Assert.Equal("chat.v2", socket.SubProtocol);
        await socket.SendAsync("?protocol"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
        Assert.Equal($"pid:{old} #1 protocol:chat.v2", await WebSocketText.ReceiveAsync(socket, timeout.Token));

        var (_, next, exit) = await server.UpgradeAsync();
        Assert.Equal(0, exit);
        await socket.SendAsync("?protocol"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
        Assert.Equal($"pid:{next} #2 protocol:chat.v2", await WebSocketText.ReceiveAsync(socket, timeout.Token));
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token);
    }

    [Fact]
    public async Task Upgrade_WebSocketsCountedByKindAndReason_InMetricsAndStatus()
    {
        // Two WebSockets that move, one whose SaveState throws, one compressed, and an idle
        // HTTP/1.1 connection: the old generation's handoff.drain.connections and the new one's
        // handoff.moved_connections count each by kind (and reason), and handoff status shows
        // the kinds that came.
        using var directory = new TempDirectory();
        string control = Path.Combine(directory.Path, "control.sock");
        string metricsLog = Path.Combine(directory.Path, "metrics.log");
        await using var server = await ServerProcess.StartAsync(arguments: [.. Options, $"--Handoff:ControlSocket={control}"], environment: new Dictionary<string, string> { ["TESTSERVER_METRICS_LOG"] = metricsLog });
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var sockets = MixedPaths.Select(path => (Path: path, Socket: new ClientWebSocket())).ToList();
        try
        {
            foreach (var (path, socket) in sockets)
            {
                if (path.EndsWith("compress=1", StringComparison.Ordinal))
                {
                    socket.Options.DangerousDeflateOptions = new WebSocketDeflateOptions();
                }

                await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.EndPoint.Port}{path}"), timeout.Token);
                await socket.SendAsync("one"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
                Assert.Equal($"pid:{old} #1 one", await WebSocketText.ReceiveAsync(socket, timeout.Token));
            }

            using var http = await HttpProbe.ConnectAsync(server.EndPoint, timeout.Token);
            Assert.Equal(old, await ConnectionMoveTests.RequestAsync(http, timeout.Token));

            int next = await server.UpgradeWithoutWaitingForExitAsync();
            foreach (var (_, socket) in sockets.Where(s => s.Path != "/ws-move"))
            {
                await WebSocketText.ReceiveCloseAsync(socket, timeout.Token);
                Assert.Equal(ServiceRestart, socket.CloseStatus);
            }

            // Once moved (a message sent before would still be the old generation's to answer).
            await server.WaitForOutputAsync($"(pid {old}) moved ");
            foreach (var (_, socket) in sockets.Where(s => s.Path == "/ws-move"))
            {
                await socket.SendAsync("two"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
                Assert.Equal($"pid:{next} #2 two", await WebSocketText.ReceiveAsync(socket, timeout.Token));
            }

            Assert.Equal(next, await ConnectionMoveTests.RequestAsync(http, timeout.Token));
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));

            string[] expected =
            [
                $"{old} handoff.drain.connections{{handoff.connection.kind=\"http1\",handoff.connection.outcome=\"moved\"}} 1",
                $"{old} handoff.drain.connections{{handoff.connection.kind=\"websocket\",handoff.connection.outcome=\"moved\"}} 2",
                $"{old} handoff.drain.connections{{handoff.connection.kind=\"websocket\",handoff.connection.outcome=\"closed\",handoff.connection.reason=\"save_state_failed\"}} 1",
                $"{old} handoff.drain.connections{{handoff.connection.kind=\"websocket\",handoff.connection.outcome=\"drained\",handoff.connection.reason=\"compression\"}} 1",
                $"{next} handoff.moved_connections{{handoff.connection.kind=\"http1\",handoff.connection.outcome=\"adopted\"}} 1",
                $"{next} handoff.moved_connections{{handoff.connection.kind=\"websocket\",handoff.connection.outcome=\"adopted\"}} 2",
            ];
            await server.WaitUntilAsync(() => File.Exists(metricsLog) && File.ReadAllLines(metricsLog).Count(l => l.Contains("connections{", StringComparison.Ordinal)) >= expected.Length, TimeSpan.FromSeconds(30), "the moves' counts in the metrics log");
            var counted = File.ReadAllLines(metricsLog).Where(l => l.Contains("connections{", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
            Assert.Equal(expected.Order(StringComparer.Ordinal), counted);

            var status = await ToolRun.RunAsync(["status", "--control", control]);
            Assert.True(status.ExitCode == 0, status.ToString());
            Assert.Contains("moved here at the last upgrade: 3 connections adopted, 0 closed, 0 passed on (http1: 1 adopted, 0 closed; websocket: 2 adopted, 0 closed)", status.Output, StringComparison.Ordinal);
            Assert.Contains("open connections: 3\n", status.Output, StringComparison.Ordinal); // the WebSockets that moved have no Kestrel connection here
        }
        finally
        {
            sockets.ForEach(s => s.Socket.Dispose());
        }
    }

    [Fact]
    public async Task NewGenerationKilledInTheRollbackWindow_WebSocketsStayWithTheOldOne_ThenMoveAtTheNextUpgrade()
    {
        // Nothing moves before the commit: the old generation keeps serving every WebSocket as if
        // nothing happened, and a later upgrade moves them.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=3s", "--Handoff:DrainTimeout=30s"]);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token);
        var clients = Enumerable.Range(0, 4).Select(i => new EchoClient(server.EndPoint.Port, i, 1, 0, 2)).ToList();
        try
        {
            await Task.WhenAll(clients.Select(c => c.ConnectAsync(timeout.Token)));
            var running = clients.Select(c => Task.Run(() => c.RunAsync(stop.Token))).ToList();
            await WaitForAllAsync(clients, c => c.Answered >= 5, "every client to be answered", timeout.Token, server);

            ServerProcess.Signal(old, 12);
            int doomed = int.Parse((await server.WaitForOutputAsync(new Regex(@"Generation 2 \(pid (\d+)\) is ready"))).Groups[1].Value, CultureInfo.InvariantCulture);
            await server.WaitForOutputAsync($"(pid {old}): generation 2 (pid {doomed}) is ready");
            ServerProcess.Signal(doomed, 9);
            await server.WaitForOutputAsync($"(pid {old}): upgrade to pid {doomed} failed, still serving");
            int before = clients.Min(c => c.Answered);
            await WaitForAllAsync(clients, c => c.Answered >= before + 10, "every client to be answered after the rollback", timeout.Token, server);
            Assert.All(clients, c => Assert.Equal([old], c.Pids));

            var (_, next, exit) = await server.UpgradeAsync();
            Assert.Equal(0, exit);
            await WaitForAllAsync(clients, c => c.LastPid == next, $"every client to be answered by pid {next}", timeout.Token, server);
            await stop.CancelAsync();
            await Task.WhenAll(running);
            Assert.All(clients, c => Assert.Null(c.Failure));
            Assert.All(clients, c => Assert.Equal([old, next], c.Pids));
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public async Task OldGenerationKilledWhileAWebSocketIsMidMessage_TheOthersMovedAndServe_ThatOneIsClosed()
    {
        // One client has sent the first frame of a message and pauses: its move waits for the
        // message's end (up to 5 s), while an idle one has moved. SIGKILL of the old generation
        // then closes the waiting one (its client sees the connection end, not a silence), and
        // the moved one goes on with the new generation.
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var moved = new ClientWebSocket();
        using var waiting = new ClientWebSocket();
        var uri = new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws-move");
        await moved.ConnectAsync(uri, timeout.Token);
        await waiting.ConnectAsync(uri, timeout.Token);
        await moved.SendAsync("one"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
        Assert.Equal($"pid:{old} #1 one", await WebSocketText.ReceiveAsync(moved, timeout.Token));
        await waiting.SendAsync("half"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: false, timeout.Token);

        ServerProcess.Signal(old, 12);
        await server.WaitUntilAsync(() => server.CurrentPid != old && server.CurrentPid != 0, TimeSpan.FromSeconds(30), "the new generation");
        int next = server.CurrentPid;
        server.Track(next);
        await server.WaitForOutputAsync($"(pid {old}) is superseded");

        // The idle one moves as soon as it can: ask until the new generation answers, the count
        // going on from one to the other.
        int n = 1;
        string answer;
        do
        {
            n++;
            await moved.SendAsync(Encoding.UTF8.GetBytes($"m{n}"), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
            answer = await WebSocketText.ReceiveAsync(moved, timeout.Token);
            Assert.Matches($@"^pid:({old}|{next}) #{n} m{n}$", answer);
            await Task.Delay(10, timeout.Token);
        }
        while (!answer.StartsWith($"pid:{next} ", StringComparison.Ordinal));

        ServerProcess.Signal(old, 9);
        await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30));
        var buffer = new byte[256];
        await Assert.ThrowsAsync<WebSocketException>(async () => await waiting.ReceiveAsync(buffer.AsMemory(), timeout.Token));

        await moved.SendAsync("last"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
        Assert.Equal($"pid:{next} #{n + 1} last", await WebSocketText.ReceiveAsync(moved, timeout.Token));
        await moved.CloseAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token);
    }

    private static async Task WaitForAllAsync(List<EchoClient> clients, Func<EchoClient, bool> condition, string what, CancellationToken cancellationToken, ServerProcess? server = null)
    {
        while (!clients.All(condition))
        {
            if (clients.FirstOrDefault(c => c.Failure is not null) is { } failed)
            {
                string[] output = server?.Output.Split('\n') ?? [];
                string log = string.Join("\n", output.Where((l, i) => l.Contains("WebSocket", StringComparison.Ordinal) || l.Contains("mov", StringComparison.Ordinal) || (i > 0 && output[i - 1].StartsWith("warn", StringComparison.Ordinal)) || (i > 0 && output[i - 1].StartsWith("fail", StringComparison.Ordinal))));
                throw new InvalidOperationException($"client {failed.Index} failed while waiting for {what}: {failed.Failure}\n{log}");
            }

            if (cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"Timed out waiting for {what}: {string.Join("; ", clients.Where(c => !condition(c)).Take(5).Select(c => c.ToString()))}");
            }

            await Task.Delay(20, CancellationToken.None);
        }
    }

    /// <summary>One client: sends a message, waits for its answer, checks it, and again; never
    /// reconnects. Any close frame, error, missing, repeated or reordered answer ends it with a
    /// <see cref="Failure"/>.</summary>
    private sealed partial class EchoClient(int port, int index, int messageBytes, int fragmentBytes, int inFlight) : IDisposable
    {
        private readonly ClientWebSocket _socket = new();
        private readonly byte[] _buffer = new byte[1 << 20];
        private int _answered;
        private int _lastPid;

        public int Index => index;

        public int Answered => Volatile.Read(ref _answered);

        public int LastPid => Volatile.Read(ref _lastPid);

        public List<int> Pids { get; } = [];

        public string? Failure { get; private set; }

        public Task ConnectAsync(CancellationToken cancellationToken) =>
            _socket.ConnectAsync(new Uri($"ws://127.0.0.1:{port}/ws-move"), cancellationToken);

        public async Task RunAsync(CancellationToken stop)
        {
            try
            {
                for (int first = 1; !stop.IsCancellationRequested; first += inFlight)
                {
                    for (int n = first; n < first + inFlight; n++)
                    {
                        byte[] message = Message(n);
                        int step = fragmentBytes > 0 ? fragmentBytes : message.Length;
                        for (int offset = 0; offset < message.Length; offset += step)
                        {
                            int length = Math.Min(step, message.Length - offset);
                            await _socket.SendAsync(message.AsMemory(offset, length), WebSocketMessageType.Text, offset + length == message.Length, CancellationToken.None);
                        }
                    }

                    for (int n = first; n < first + inFlight; n++)
                    {
                        Check(n, await ReceiveAsync());
                    }
                }
            }
#pragma warning disable CA1031 // Any failure is the test's finding, reported by the test.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Failure = $"{e.GetType().Name}: {e.Message} (state {_socket.State}, close {_socket.CloseStatus} {_socket.CloseStatusDescription})";
            }
        }

        private byte[] Message(int n)
        {
            string text = $"c{index} m{n} ";
            return Encoding.UTF8.GetBytes(text.PadRight(Math.Max(messageBytes, text.Length), 'x'));
        }

        // The answer to message n: its own text, counted n, from some generation.
        private void Check(int n, string answer)
        {
            byte[] message = Message(n);
            var match = Answer().Match(answer);
            if (!match.Success || match.Groups[3].Value != Encoding.UTF8.GetString(message))
            {
                throw new InvalidOperationException($"message {n}: unexpected answer {answer[..Math.Min(80, answer.Length)]}");
            }

            int pid = int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
            long count = long.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
            if (count != n)
            {
                throw new InvalidOperationException($"message {n} was answered as #{count} by pid {pid}: the count did not go on");
            }

            if (Pids.Count == 0 || Pids[^1] != pid)
            {
                Pids.Add(pid);
            }

            Volatile.Write(ref _lastPid, pid);
            Volatile.Write(ref _answered, n);
        }

        public async Task CloseAsync(CancellationToken cancellationToken) =>
            await _socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken);

        public void Dispose() => _socket.Dispose();

        public override string ToString() => $"client {index}: {Answered} answered, last pid {LastPid}, failure {Failure ?? "none"}";

        private async Task<string> ReceiveAsync()
        {
            int length = 0;
            ValueWebSocketReceiveResult result;
            do
            {
                result = await _socket.ReceiveAsync(_buffer.AsMemory(length), CancellationToken.None);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    throw new InvalidOperationException("the server sent a close frame");
                }

                length += result.Count;
            }
            while (!result.EndOfMessage);

            return Encoding.UTF8.GetString(_buffer, 0, length);
        }

        [GeneratedRegex(@"^pid:(\d+) #(\d+) (.*)$", RegexOptions.Singleline)]
        private static partial Regex Answer();
    }
}
