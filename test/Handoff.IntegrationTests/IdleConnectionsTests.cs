using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>Many idle keep-alive clients at an upgrade (a fleet of services behind one
/// connection pool each): every connection is closed cleanly, paced rather than all at once, and
/// every client's next request, on a new connection, reaches the new generation.</summary>
public sealed class IdleConnectionsTests(ITestOutputHelper output)
{
    private const int Connections = 10_000;
    private const int Parallelism = 64;

    [Fact]
    public async Task Upgrade_TenThousandIdleKeepAliveConnections_ClosedCleanlyAndTheirNextRequestsSucceed()
    {
        // 10,000 sockets here and as many in the server, which inherits this limit.
        RaiseOpenFileLimit(Connections + 2048);
        string directory = TestAssets.CreateTempDirectory();
        string metricsLog = Path.Combine(directory, "metrics.log");
        // The drain's way (closing each idle connection); ConnectionMoveTests has the moves'.
        await using var server = await ServerProcess.StartAsync(
            arguments: ["--Handoff:MoveConnections=false"],
            environment: new Dictionary<string, string> { ["TESTSERVER_METRICS_LOG"] = metricsLog },
            directory: directory,
            removeDirectory: true);
        int first = server.CurrentPid;
        var sockets = new Socket[Connections];
        try
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, Connections), new ParallelOptions { MaxDegreeOfParallelism = Parallelism }, async (i, token) =>
            {
                sockets[i] = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await sockets[i].ConnectAsync(server.EndPoint, token);
                Assert.Equal(first, await RequestAsync(sockets[i], keepAlive: true, token));
            });

            // Every client waits for its connection's end from before the upgrade, so each close
            // is timed as it arrives.
            var upgraded = Stopwatch.StartNew();
            var closedAt = new TimeSpan[Connections];
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var closes = Enumerable.Range(0, Connections).Select(async i =>
            {
                // An orderly close (FIN, read returns 0), not a reset.
                int read = await sockets[i].ReceiveAsync(new byte[1], SocketFlags.None, limit.Token);
                closedAt[i] = upgraded.Elapsed;
                Assert.Equal(0, read);
            }).ToList();
            int second = await server.UpgradeWithoutWaitingForExitAsync();
            await Task.WhenAll(closes);
            var earliest = closedAt.Min();
            var latest = closedAt.Max();
            Assert.Equal(0, await server.WaitForExitAsync(first, ServerProcess.StartTimeout));
            Assert.Equal(0, server.CountOf("aborting"));

            // The old generation's own measure of its drain (the client's clock lags when the
            // machine is busy): DrainIdleTimeout (1 s), then the closes paced over at least 20
            // ticks of 50 ms, 0.95 s more; not all in one instant. Slower when the new generation
            // accepts more slowly (the closes wait for room in its accept queue), but only in the
            // first half of DrainTimeout (30 s): then the time-based pace alone, a second at most.
            string drainLine = File.ReadAllLines(metricsLog).Single(l => l.StartsWith($"{first} handoff.drain.duration", StringComparison.Ordinal));
            double drainSeconds = double.Parse(drainLine.Split(' ')[^1], CultureInfo.InvariantCulture);
            output.WriteLine($"{Connections} idle connections: the drain took {drainSeconds:0.000} s; the client saw the closes from {earliest.TotalSeconds:0.000} s to {latest.TotalSeconds:0.000} s after the upgrade signal");
            Assert.Contains("handoff.drain.result=\"completed\"", drainLine, StringComparison.Ordinal);
            Assert.True(drainSeconds >= 1.9, $"the drain took {drainSeconds:0.000} s: the idle connections were not paced");
            Assert.True(drainSeconds < 16.5, $"the drain took {drainSeconds:0.000} s");

            // Every client comes back, on a new connection, to the new generation.
            await Parallel.ForEachAsync(Enumerable.Range(0, Connections), new ParallelOptions { MaxDegreeOfParallelism = Parallelism }, async (i, token) =>
            {
                sockets[i].Dispose();
                sockets[i] = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await sockets[i].ConnectAsync(server.EndPoint, token);
                Assert.Equal(second, await RequestAsync(sockets[i], keepAlive: false, token));
                sockets[i].Dispose();
            });
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }
        }
    }

    // Moving (the default) in CI; the drain's way (MoveConnections=false) in bench/slow-tests
    // (about 11 s each).
    [Fact]
    public Task Upgrade_KeepAliveClientsThatPauseLongerThanDrainIdleTimeout_NoneLosesARequest() => PausingClientsAsync(move: true);

    [SlowFact]
    [Trait("Category", "Slow")]
    public Task Upgrade_KeepAliveClientsThatPauseLongerThanDrainIdleTimeout_NotMoving_NoneLosesARequest() => PausingClientsAsync(move: false);

    private static async Task PausingClientsAsync(bool move)
    {
        // Service-to-service traffic: each client pauses 1.2 to 1.8 s between its requests, longer
        // than DrainIdleTimeout (1 s), and sends the next one without looking whether the server
        // closed the connection meanwhile. Closing such a connection as idle would lose that
        // request; the drain waits twice a connection's longest pause, so each client's next
        // request gets "Connection: close" instead. Moved, the connections are never closed.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=500ms", $"--Handoff:MoveConnections={move}"]);
        var load = new LoadClient(server.EndPoint, connections: 100, keepAlive: true, pause: TimeSpan.FromSeconds(1.5));
        LoadReport report;
        try
        {
            await load.WaitForProgressAsync(400, TimeSpan.FromSeconds(60)); // a few pauses on each connection
            var (oldPid, newPid, exit) = await server.UpgradeAsync();
            Assert.Equal(0, exit);
            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(60));
            Assert.Equal(0, server.CountOf("aborting"));
        }
        finally
        {
            report = await load.StopAsync();
        }

        Assert.True(report.Failures.Count == 0, report.ToString());
    }

    [Fact]
    public async Task Upgrade_NewGenerationStallsWithItsAcceptQueueHalfFull_OldHoldsItsIdleConnectionsUntilItAccepts()
    {
        // The new generation stops accepting right after it reported ready (a long GC pause, a
        // starved CPU) while new clients fill its queue. Clients of idle connections closed now
        // would find that queue full, their SYNs dropped: the old generation keeps serving them
        // instead, until the queue has room again.
        const int Idle = 100, Queued = 300; // Kestrel's backlog is 512: the queue is more than half full
        // Idle connections that would move do not close at all: this is the drain's way.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:DrainIdleTimeout=3s", "--Handoff:DrainTimeout=40s", "--Handoff:MoveConnections=false"]);
        int first = server.CurrentPid;
        var idle = new List<Socket>();
        var queued = new List<Socket>();
        int second = 0;
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            for (int i = 0; i < Idle; i++)
            {
                idle.Add(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
                await idle[i].ConnectAsync(server.EndPoint, limit.Token);
                Assert.Equal(first, await RequestAsync(idle[i], keepAlive: true, limit.Token));
            }

            ServerProcess.Signal(first, 12);
            second = await server.WaitForSpawnAsync(2);
            await server.WaitForOutputAsync($"generation 2 (pid {second}) is ready. This generation stopped accepting and drains");
            ServerProcess.Signal(second, 19); // SIGSTOP
            // kill() returns before every thread has stopped (one thread takes the stop, then
            // wakes the others): until they have, the new generation may still accept some.
            await server.WaitUntilAsync(() => Directory.GetDirectories($"/proc/{second}/task").All(t => File.ReadLines($"{t}/status").Any(l => l.StartsWith("State:\tT", StringComparison.Ordinal))), TimeSpan.FromSeconds(10), $"pid {second} to be stopped");
            for (int i = 0; i < Queued; i++)
            {
                // The kernel completes the handshake; the connection waits in the queue.
                queued.Add(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
                await queued[i].ConnectAsync(server.EndPoint, limit.Token);
            }

            // DrainIdleTimeout passes: the closes are due, and held back.
            var held = await server.WaitForOutputAsync(new Regex($@"Pid {first} closes idle connections no faster than the new generation accepts them: the accept queue of 127\.0\.0\.1:{server.EndPoint.Port} holds (\d+) of 512 connections"));
            Assert.True(int.Parse(held.Groups[1].Value, CultureInfo.InvariantCulture) >= Queued);
            int progress = server.CountOf($"Pid {first} draining: ");
            await server.WaitForOutputAsync($"Pid {first} draining: ", progress + 2); // two more seconds of the drain
            Assert.All(idle, socket => Assert.False(socket.Poll(0, SelectMode.SelectRead), "an idle connection was closed while the queue was full"));

            // It accepts again: the queued clients are served by it, the idle connections closed
            // in good order, the old generation exits 0, nothing aborted.
            ServerProcess.Signal(second, 18); // SIGCONT
            foreach (var socket in queued)
            {
                Assert.Equal(second, await RequestAsync(socket, keepAlive: false, limit.Token));
            }

            foreach (var socket in idle)
            {
                Assert.Equal(0, await socket.ReceiveAsync(new byte[1], SocketFlags.None, limit.Token));
            }

            Assert.Equal(0, await server.WaitForExitAsync(first, ServerProcess.StartTimeout));
            await server.WaitForOutputAsync($"Pid {first} drained all connections");
            Assert.Equal(0, server.CountOf("aborting"));
        }
        finally
        {
            if (second != 0)
            {
                _ = Interop.Libc.Kill(second, 18); // never leave it stopped
            }

            idle.Concat(queued).ToList().ForEach(s => s.Dispose());
        }
    }

    internal static async Task<int> RequestAsync(Socket socket, bool keepAlive, CancellationToken token)
    {
        await socket.SendAsync(Encoding.ASCII.GetBytes($"GET /?sleep=0 HTTP/1.1\r\nHost: localhost\r\n{(keepAlive ? "" : "Connection: close\r\n")}\r\n"), token);
        var received = new List<byte>();
        var buffer = new byte[4096];
        while (true)
        {
            int read = await socket.ReceiveAsync(buffer, token);
            if (read == 0)
            {
                throw new IOException("the server closed the connection before the response was complete");
            }

            received.AddRange(buffer.AsSpan(0, read));
            string text = Encoding.ASCII.GetString([.. received]);
            int headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (headEnd < 0)
            {
                continue;
            }

            Assert.StartsWith("HTTP/1.1 200", text, StringComparison.Ordinal);
            string lengthLine = text[..headEnd].Split("\r\n").Single(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
            int length = int.Parse(lengthLine["Content-Length:".Length..].Trim(), CultureInfo.InvariantCulture);
            if (received.Count >= headEnd + 4 + length)
            {
                string body = text[(headEnd + 4)..];
                return int.Parse(body[4..body.IndexOf('\n', StringComparison.Ordinal)], CultureInfo.InvariantCulture);
            }
        }
    }

    /// <summary>Raises this process's RLIMIT_NOFILE with util-linux's prlimit, if it is lower
    /// (soft and hard: the tests run as root, though a container may forbid raising the hard
    /// limit; the runtime has already raised the soft limit to the hard one).</summary>
    internal static void RaiseOpenFileLimit(int limit)
    {
        string limits = File.ReadAllText("/proc/self/limits");
        string line = limits.Split('\n').Single(l => l.StartsWith("Max open files", StringComparison.Ordinal));
        string[] fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (int.TryParse(fields[0], CultureInfo.InvariantCulture, out int soft) && soft >= limit)
        {
            return;
        }

        using var prlimit = Process.Start(new ProcessStartInfo("prlimit", $"--pid {Environment.ProcessId} --nofile={limit}:{limit}") { RedirectStandardError = true })!;
        prlimit.WaitForExit();
        Assert.True(prlimit.ExitCode == 0, $"this test needs {limit} open files; the limit is {fields[0]} and prlimit could not raise it: {prlimit.StandardError.ReadToEnd()}");
    }
}
