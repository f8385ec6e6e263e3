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

    [Theory]
    [InlineData(1, 0, 4)]
    [InlineData(60_000, 4_000, 1)]
    public async Task Upgrades_ClientsSendingContinuously_KeepTheirConnectionAndCount_NoMessageLostOrRepeated(int messageBytes, int fragmentBytes, int inFlight)
    {
        // 64 clients, each sending its next messages as soon as the previous ones are answered,
        // inFlight at a time (the next message's frames then wait behind the one being read);
        // with fragmentBytes, each message goes in frames of that size (a message half received
        // is then a common moment for the move to find).
        const int Clients = 64;
        const int Upgrades = 3;
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token);
        var clients = Enumerable.Range(0, Clients).Select(i => new EchoClient(server.EndPoint.Port, i, messageBytes, fragmentBytes, inFlight)).ToList();
        try
        {
            await Task.WhenAll(clients.Select(c => c.ConnectAsync(timeout.Token)));
            var running = clients.Select(c => Task.Run(() => c.RunAsync(stop.Token))).ToList();
            var pids = new List<int> { server.CurrentPid };
            for (int i = 0; i < Upgrades; i++)
            {
                await WaitForAllAsync(clients, c => c.Answered >= 5 && c.LastPid == pids[^1], "every client to be answered by the current generation", timeout.Token);
                var (old, next, exit) = await server.UpgradeAsync();
                Assert.Equal(0, exit);
                pids.Add(next);
                await WaitForAllAsync(clients, c => c.LastPid == next, $"every client to be answered by pid {next}", timeout.Token);
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

            output.WriteLine($"{Clients} clients, {clients.Sum(c => c.Answered)} messages answered in order across {Upgrades} upgrades; pids {string.Join(", ", pids)}");
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

    [Theory]
    [InlineData("/ws", "")]
    [InlineData("/ws-move?save=none", "its session set no SaveState")]
    [InlineData("/ws-move?save=throw", "its SaveState threw InvalidOperationException")]
    [InlineData("/ws-move?save=hang", "its SaveState did not return within 1 s")]
    public async Task Upgrade_WebSocketThatCannotMove_ClosedWith1012_AsBefore(string path, string reason)
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.EndPoint.Port}{path}"), timeout.Token);
        if (path.StartsWith("/ws-move", StringComparison.Ordinal))
        {
            await socket.SendAsync("hello"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
            Assert.Equal($"pid:{old} #1 hello", await WebSocketText.ReceiveAsync(socket, timeout.Token));
        }
        else
        {
            Assert.Equal($"pid:{old}", await WebSocketText.ReceiveAsync(socket, timeout.Token));
        }

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
    public async Task Upgrade_ToABuildWithoutTheEndpoint_ClosedWith1012()
    {
        // The next build maps /ws-move as a plain WebSocket endpoint: it names no endpoint it
        // resumes, so the old generation sends nothing and closes with 1012.
        using var files = new TempDirectory();
        string marker = Path.Combine(files.Path, "no-moving-websockets");
        await using var server = await ServerProcess.StartAsync(arguments: Options, environment: new Dictionary<string, string> { ["TESTSERVER_BREAK_NOMOVINGWEBSOCKETS"] = marker });
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws-move"), timeout.Token);
        await socket.SendAsync("hello"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
        Assert.Equal($"pid:{old} #1 hello", await WebSocketText.ReceiveAsync(socket, timeout.Token));

        File.WriteAllText(marker, "");
        ServerProcess.Signal(old, 12);
        await WebSocketText.ReceiveCloseAsync(socket, timeout.Token);
        Assert.Equal(ServiceRestart, socket.CloseStatus);
        server.Track(server.CurrentPid);
        await server.WaitForOutputAsync($"Pid {old}: a WebSocket of /ws-move does not move and is closed with 1012 (Service Restart): the new generation does not map this endpoint with MapHandoffWebSocket");
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
    }

    private static async Task WaitForAllAsync(List<EchoClient> clients, Func<EchoClient, bool> condition, string what, CancellationToken cancellationToken)
    {
        while (!clients.All(condition))
        {
            if (clients.FirstOrDefault(c => c.Failure is not null) is { } failed)
            {
                throw new InvalidOperationException($"client {failed.Index} failed while waiting for {what}: {failed.Failure}");
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
