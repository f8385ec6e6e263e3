using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>The seeds' raw TCP server on Handoff's core API alone (samples/RawTcpServer, no
/// ASP.NET Core): long-lived connections served by the generation that accepted them, counted
/// and drained with <see cref="ConnectionDrain"/>.</summary>
public sealed partial class RawTcpServerTests
{
    private static readonly string RawTcpServer = typeof(RawTcpServerTests).Assembly
        .GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "RawTcpServer").Value!;

    [Fact]
    public async Task Upgrade_RawSocketServer_HandsOverAndOldExitsZero()
    {
        await using var server = await RawServer.StartAsync();
        int first = server.Process.Id;
        Assert.Equal($"pid:{first} hello #1", await AskAsync(server.EndPoint, "hello"));

        int second = await server.UpgradeAsync(first);
        Assert.Equal(0, await server.ExitCodeAsync(first));
        Assert.Equal($"pid:{second} again #1", await AskAsync(server.EndPoint, "again"));
        await server.WaitForOutputAsync($"pid {second} generation 2 listening on {server.EndPoint}");

        ServerProcess.Signal(second, 15);
        Assert.Equal(0, await server.ExitCodeAsync(second));
        Assert.False(File.Exists(server.PidFile));
    }

    [Fact]
    public async Task LongLivedClient_MovingOff_AcrossTwoUpgrades_SeesNoError_ItsGenerationServesItUntilItLeaves()
    {
        await using var server = await RawServer.StartAsync(move: false);
        int first = server.Process.Id;

        // The articles' client: one connection, its name again and again.
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(server.EndPoint);
        using var reader = new StreamReader(new NetworkStream(client, ownsSocket: false));
        using var stop = new CancellationTokenSource();
        int answers = 0;
        var loop = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await client.SendAsync(Encoding.UTF8.GetBytes("alice\n"));
                string? line = await reader.ReadLineAsync();
                Assert.Equal($"pid:{first} alice #{answers + 1}", line);
                Interlocked.Increment(ref answers);
                await Task.Delay(50); // the client's own rhythm (the articles' writes once a second), not a wait for the server
            }
        });

        int second = await server.UpgradeAsync(first);
        int third = await server.UpgradeAsync(second);
        Assert.Equal($"pid:{third} bob #1", await AskAsync(server.EndPoint, "bob"));
        int before = Volatile.Read(ref answers);
        await server.WaitUntilAsync(() => Volatile.Read(ref answers) > before + 5, "the client to go on after two upgrades");

        // Generations 1 and 2 still run: 1 serves the client; both have stopped accepting.
        Assert.True(ProcessTable.IsRunning(first));
        await stop.CancelAsync();
        await loop;
        client.Shutdown(SocketShutdown.Both);
        client.Close();

        Assert.Equal(0, await server.ExitCodeAsync(first));
        Assert.Equal(0, await server.ExitCodeAsync(second));
        await server.WaitForOutputAsync($"pid {first} exits: 0 connections moved, 1 finished, 0 aborted");
        server.Track(third);
    }

    [Fact]
    public async Task ClientThatNeverLeaves_IsAbortedAtTheDrainTimeout_AndTheServerExitsZero()
    {
        await using var server = await RawServer.StartAsync(drainSeconds: 2);
        int pid = server.Process.Id;
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(server.EndPoint);
        await client.SendAsync(Encoding.UTF8.GetBytes("idle\n"));
        var buffer = new byte[256];
        Assert.StartsWith($"pid:{pid} idle", Encoding.UTF8.GetString(buffer, 0, await client.ReceiveAsync(buffer)), StringComparison.Ordinal);

        ServerProcess.Signal(pid, 15);

        Assert.Equal(0, await server.ExitCodeAsync(pid));
        await server.WaitForOutputAsync($"pid {pid} draining 1 connections (at most 2 s)");
        await server.WaitForOutputAsync($"pid {pid} exits: 0 connections moved, 0 finished, 1 aborted at the drain timeout");
        Assert.False(File.Exists(server.PidFile));

        // Reset, not a clean end: the connection was aborted.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await Assert.ThrowsAsync<SocketException>(async () => await client.ReceiveAsync(buffer, timeout.Token));
    }

    // Three upgrades in CI (about 9 s); ten in bench/slow-tests (about 30 s: the client asks
    // once a second).
    [Fact]
    public Task SeedsClient_AcrossUpgrades_KeepsItsConnectionAndSession_EachNewGenerationAnswers() => SeedsClientAsync(3);

    [SlowFact]
    [Trait("Category", "Slow")]
    public Task SeedsClient_AcrossTenUpgrades_KeepsItsConnectionAndSession_EachNewGenerationAnswers() => SeedsClientAsync(10);

    private static async Task SeedsClientAsync(int upgrades)
    {
        // The articles' client (the sample's client mode): one connection, its name once a
        // second, every answer printed; it exits 1 if the server ever closes the connection.
        await using var server = await RawServer.StartAsync();
        using var client = Process.Start(new ProcessStartInfo(RawTcpServer, ["client", server.EndPoint.ToString(), "alice"]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })!;
        var answers = new List<string>();
        client.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lock (answers)
                {
                    answers.Add(line);
                }
            }
        };
        client.BeginOutputReadLine();
        string[] Answers()
        {
            lock (answers)
            {
                return [.. answers];
            }
        }

        try
        {
            var pids = new List<int> { server.Process.Id };
            await server.WaitUntilAsync(() => Answers().Length > 0, "the client's first answer");
            for (int i = 0; i < upgrades; i++)
            {
                int next = await server.UpgradeAsync(pids[^1]);
                Assert.Equal(0, await server.ExitCodeAsync(pids[^1])); // it moved the client and left
                pids.Add(next);
                await server.WaitUntilAsync(() => Answers()[^1].StartsWith($"pid:{next} ", StringComparison.Ordinal), $"pid {next} to answer the client");
                Assert.False(client.HasExited, "the client lost its connection");
                await server.WaitForOutputAsync($"pid {pids[^2]} exits: 1 connections moved, 0 finished, 0 aborted");
            }

            // One session: the n-th answer says #n whichever generation gave it, and the
            // generations answered in their order, each until it moved the connection on.
            var lines = Answers();
            var answered = lines.Select(l => AnswerRegex().Match(l)).ToList();
            Assert.All(answered, m => Assert.True(m.Success, string.Join("\n", lines)));
            Assert.Equal(Enumerable.Range(1, lines.Length), answered.Select(m => int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture)));
            Assert.Equal(pids, answered.Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).Distinct());
            Assert.False(client.HasExited);
        }
        finally
        {
            client.Kill();
            await client.WaitForExitAsync();
        }
    }

    [GeneratedRegex(@"^pid:(\d+) alice #(\d+)$")]
    private static partial Regex AnswerRegex();

    private static async Task<string> AskAsync(EndPoint endPoint, string line)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint, cts.Token);
        await socket.SendAsync(Encoding.UTF8.GetBytes(line + "\n"), cts.Token);
        using var reader = new StreamReader(new NetworkStream(socket, ownsSocket: false));
        return await reader.ReadLineAsync(cts.Token) ?? "";
    }

    /// <summary>RawTcpServer followed across generations through its pid file.</summary>
    private sealed class RawServer : IAsyncDisposable
    {
        private readonly StringBuilder _output = new();
        private readonly HashSet<int> _pids = [];
        private readonly TempDirectory _directory = new();

        private RawServer(int? drainSeconds, bool move)
        {
            string[] arguments = drainSeconds is { } seconds
                ? ["127.0.0.1:0", PidFile, seconds.ToString(System.Globalization.CultureInfo.InvariantCulture)]
                : ["127.0.0.1:0", PidFile];
            var start = new ProcessStartInfo(RawTcpServer, arguments) { RedirectStandardOutput = true, UseShellExecute = false };
            start.Environment["Handoff__MoveConnections"] = move ? "true" : "false";
            Process = Process.Start(start)!;
            Process.OutputDataReceived += (_, e) =>
            {
                lock (_output)
                {
                    _output.AppendLine(e.Data);
                }
            };
            Process.BeginOutputReadLine();
            _pids.Add(Process.Id);
        }

        public Process Process { get; }

        public string PidFile => Path.Combine(_directory.Path, "raw.pid");

        public IPEndPoint EndPoint { get; private set; } = new(IPAddress.Loopback, 0);

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public static async Task<RawServer> StartAsync(int? drainSeconds = null, bool move = true)
        {
            var server = new RawServer(drainSeconds, move);
            try
            {
                await server.WaitUntilAsync(() => Handoff.PidFile.Read(server.PidFile) == server.Process.Id && ListeningRegex().IsMatch(server.Output), "the first generation");
                server.EndPoint = new IPEndPoint(IPAddress.Loopback, int.Parse(ListeningRegex().Match(server.Output).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
                return server;
            }
            catch
            {
                await server.DisposeAsync();
                throw;
            }
        }

        /// <summary>SIGUSR2 to <paramref name="current"/> (once: a signal that comes while its
        /// parent can still roll back waits for that, it is not dropped); returns the new
        /// generation's pid.</summary>
        public async Task<int> UpgradeAsync(int current)
        {
            ServerProcess.Signal(current, 12);
            await WaitUntilAsync(
                () => Handoff.PidFile.Read(PidFile) is { } pid && pid != current,
                $"a generation after pid {current}");
            int next = Handoff.PidFile.Read(PidFile)!.Value;
            Track(next);
            return next;
        }

        /// <summary>How <paramref name="pid"/> exited (the first generation is this test's
        /// child; the later ones are reaped by the test host, a subreaper).</summary>
        public async Task<int?> ExitCodeAsync(int pid)
        {
            if (pid != Process.Id)
            {
                return await ProcessTable.WaitForExitAsync(pid, TimeSpan.FromSeconds(30));
            }

            // Not WaitForExitAsync: it also waits for the end of the output, which the later
            // generations inherited and keep open.
            await WaitUntilAsync(() => Process.HasExited, $"pid {pid} to exit");
            return Process.ExitCode;
        }

        /// <summary>Waits for <paramref name="text"/> in the output. A line written just before
        /// an exit may still be in the pipe when the exit is seen, so a line is awaited, never
        /// asserted at once.</summary>
        public Task WaitForOutputAsync(string text) =>
            WaitUntilAsync(() => Output.Contains(text, StringComparison.Ordinal), $"'{text}' in the output");

        public void Track(int pid)
        {
            lock (_pids)
            {
                _pids.Add(pid);
            }
        }

        public async Task WaitUntilAsync(Func<bool> condition, string what)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (!condition())
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"timed out waiting for {what}; output:\n{Output}");
                }

                await Task.Delay(20);
            }
        }

        public async ValueTask DisposeAsync()
        {
            int[] pids;
            lock (_pids)
            {
                pids = [.. _pids];
            }

            ProcessTable.SignalTrees(pids, 9);
            foreach (int pid in pids)
            {
                try
                {
                    await ProcessTable.WaitForExitAsync(pid, TimeSpan.FromSeconds(10));
                }
                catch (TimeoutException)
                {
                }
            }

            Process.Dispose();
            _directory.Dispose();
        }
    }

    [GeneratedRegex(@"listening on 127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningRegex();
}
