using System.Net.Sockets;
using System.Text;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>
/// The promise under faults, with real processes and signals: an upgrade succeeds or changes
/// nothing, afterwards exactly one generation accepts, nothing is left behind. Each test acts at
/// one precise moment of an upgrade, found by waiting for what the processes log or hold on.
/// </summary>
public sealed class FaultTests : IDisposable
{
    private const int SIGKILL = 9;
    private const int SIGUSR2 = 12;
    private const int SIGTERM = 15;
    private const int SIGCONT = 18;
    private const int SIGSTOP = 19;

    private readonly string _hold = Path.Combine(Path.GetTempPath(), "handoff-hold-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => File.Delete(_hold);

    [Theory]
    [InlineData("spawned")]
    [InlineData("warming-up")]
    public async Task SigtermToOld_BeforeNewReportsReady_StopsBothAndLeavesNothing(string moment)
    {
        await using var server = await ServerProcess.StartAsync(environment: HoldWarmUp());
        int old = server.CurrentPid;
        File.WriteAllText(_hold, "");

        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        if (moment == "warming-up")
        {
            await server.WaitForOutputAsync($"TestServer pid {child} holds while");
        }

        ServerProcess.Signal(old, SIGTERM);

        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
        Assert.Null(ProcessTable.State(child));

        // The output is read on another thread: its last lines may arrive after the exit is seen.
        await server.WaitForOutputAsync($"upgrade to pid {child} failed");
        await server.WaitForOutputAsync("was stopped because this generation is shutting down");
        Assert.False(File.Exists(server.PidFile), "the service was stopped: no pid file names a process");
        await Assert.ThrowsAnyAsync<SocketException>(() => server.GetPidAsync());
    }

    [Fact]
    public async Task SigtermToOld_WhileHandingOver_TheUpgradeStands()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=30s"]);
        int old = server.CurrentPid;

        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync("This generation stopped accepting and drains");
        ServerProcess.Signal(old, SIGTERM);

        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
        Assert.Equal(child, server.CurrentPid);
        Assert.Equal(child, await server.GetPidAsync());
    }

    [Fact]
    public async Task SigkillOld_BeforeNewCheckedItsParent_NewAdoptsAndServes()
    {
        await using var server = await ServerProcess.StartAsync();
        int old = server.CurrentPid;

        // Catch the new process the moment it exists (a spin on the old process's children
        // lists, microseconds per look), long before its runtime reaches the startup hook
        // (tens of milliseconds), and hold it there while the old one dies.
        var caught = Task.Factory.StartNew(() => CatchNewChild(old), TaskCreationOptions.LongRunning);
        ServerProcess.Signal(old, SIGUSR2);
        int child = await caught;
        server.Track(child);
        ServerProcess.Signal(old, SIGKILL);
        await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30));
        ServerProcess.Signal(child, SIGCONT);

        await server.WaitUntilAsync(() => server.CurrentPid == child, ServerProcess.StartTimeout, "the orphaned generation to write the pid file");
        await server.WaitForOutputAsync($"the generation that started it (pid {old}) has exited before it took over"); // logged through the console logger's queue
        Assert.Equal(child, await server.GetPidAsync());
        Assert.DoesNotContain("stale or forged", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SigkillOld_AfterNewCheckedItsParent_NewServesAndWritesThePidFile()
    {
        await using var server = await ServerProcess.StartAsync(environment: HoldWarmUp());
        int old = server.CurrentPid;
        File.WriteAllText(_hold, "");

        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync($"TestServer pid {child} holds while");
        ServerProcess.Signal(old, SIGKILL);
        await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30));
        File.Delete(_hold);

        await server.WaitUntilAsync(() => server.CurrentPid == child, ServerProcess.StartTimeout, "the new generation to write the pid file");
        await server.WaitForOutputAsync($"the previous generation (pid {old}) is gone; this generation writes the pid file itself"); // logged through the console logger's queue
        Assert.Equal(child, await server.GetPidAsync());
    }

    [Fact]
    public async Task SigkillNew_RightAfterItReportedReady_OldResumesAndTheUpgradeFails()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=10s"]);
        int old = server.CurrentPid;

        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync($"Generation 2 (pid {child}) is ready");
        ServerProcess.Signal(child, SIGKILL);

        await server.WaitForOutputAsync("this generation accepts again");
        Assert.Contains($"pid {child}) exited (killed by signal 9)", server.Output, StringComparison.Ordinal);
        Assert.Null(ProcessTable.State(child));
        Assert.Equal(old, server.CurrentPid);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(old, await server.GetPidAsync());
        }

        // And the server is whole: the next upgrade succeeds.
        var (_, next, exit) = await server.UpgradeAsync();
        Assert.Equal(0, exit);
        Assert.Equal(next, await server.GetPidAsync());
    }

    [Fact]
    public async Task SigtermToNew_WithinRollbackWindowWithARequestInFlight_OldResumes()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=20s"]);
        int old = server.CurrentPid;

        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync("This generation stopped accepting and drains");
        var slow = await server.StartSlowRequestAsync(3); // reaches the new generation
        ServerProcess.Signal(child, SIGTERM);

        await server.WaitForOutputAsync("this generation accepts again");
        Assert.Contains($"pid {child}) it began stopping", server.Output, StringComparison.Ordinal);

        // Served either way: the stopping generation tells its parent first and closes its own
        // accept gate a moment later, so a connection in between may still reach it.
        Assert.Contains(await server.GetPidAsync(), new[] { old, child });
        Assert.Equal(child, await slow);
        await ProcessTable.WaitForExitAsync(child, TimeSpan.FromSeconds(30));
        Assert.Equal(old, server.CurrentPid);
        Assert.Equal(old, await server.GetPidAsync());
    }

    [Fact]
    public async Task UpgradeOfNewGeneration_WhileOldCanStillRollBack_IsRefusedUntilItCommits()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=3s"]);
        int first = server.CurrentPid;
        ServerProcess.Signal(first, SIGUSR2);
        int second = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync($"Generation 2 (pid {second}) is ready");

        // Were the second generation to hand over now and exit, the first would roll back
        // beside the third: two generations accepting.
        ServerProcess.Signal(second, SIGUSR2);
        await server.WaitForOutputAsync($"the previous generation (pid {first}) can still roll back to itself");

        await server.WaitForOutputAsync($"Generation 1 (pid {first}) is superseded");
        ServerProcess.Signal(second, SIGUSR2);
        int third = await server.WaitForSpawnAsync(3);
        Assert.Equal(0, await server.WaitForExitAsync(first, TimeSpan.FromSeconds(60)));
        await ProcessTable.WaitForExitAsync(second, TimeSpan.FromSeconds(60));
        Assert.Equal(third, server.CurrentPid);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(third, await server.GetPidAsync());
        }
    }

    [Fact]
    public async Task GroupSigterm_WhileHandingOver_LeavesNoPidFileOrSocketFile()
    {
        using var temp = new TempDirectory(); // disposed after the server: declared first
        string directory = temp.Path;
        string socketPath = Path.Combine(directory, "hello.sock");
        await using var server = await ServerProcess.StartAsync(
            urls: $"http://127.0.0.1:0;http://unix:{socketPath}",
            arguments: ["--Handoff:RollbackWindow=20s"],
            command: ["setsid", TestAssets.TestServerAppHost],
            directory: directory);
        int old = server.CurrentPid;

        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync("This generation stopped accepting and drains");
        ServerProcess.Signal(-old, SIGTERM); // systemctl stop, a terminal's Ctrl-C

        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
        await ProcessTable.WaitForExitAsync(child, TimeSpan.FromSeconds(30));
        Assert.False(File.Exists(server.PidFile), "no pid file may name a process after the service stopped");
        Assert.False(File.Exists(socketPath), "no socket file may be left after the service stopped");
    }

    [Fact]
    public async Task SigtermToNew_BeforeApplicationStarted_NeverReportsReadyAndOldServes()
    {
        await using var server = await ServerProcess.StartAsync(environment: new Dictionary<string, string> { ["TESTSERVER_HOLD_START"] = _hold });
        int old = server.CurrentPid;
        File.WriteAllText(_hold, "");

        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync($"TestServer pid {child} holds while");
        ServerProcess.Signal(child, SIGTERM);
        await server.WaitForOutputAsync($"Generation 2 (pid {child}) is stopping");
        File.Delete(_hold);

        await server.WaitForOutputAsync($"upgrade to pid {child} failed");
        Assert.Contains("stopped before it became ready", server.Output, StringComparison.Ordinal);
        Assert.DoesNotContain($"Generation 2 (pid {child}) is ready", server.Output, StringComparison.Ordinal);
        Assert.Null(ProcessTable.State(child));
        Assert.Equal(old, server.CurrentPid);
        Assert.Equal(old, await server.GetPidAsync());
    }

    [Fact]
    public async Task PidDirectoryRemoved_BeforeAnUpgrade_UpgradeFailsCleanlyAndOneGenerationAccepts()
    {
        // The new generation checks Handoff:PidFile before it binds anything and refuses to
        // start: the upgrade fails with that reason and nothing changes. (The old generation's
        // own write after "ready" failing is covered by UpgraderTests: the upgrade stands.)
        using var temp = new TempDirectory(); // disposed after the server: declared first
        string directory = temp.Path;
        string run = Path.Combine(directory, "run");
        Directory.CreateDirectory(run);
        await using var server = await ServerProcess.StartAsync(directory: directory, pidFile: Path.Combine(run, "app.pid"));
        int old = server.CurrentPid;
        Directory.Delete(run, recursive: true);

        for (int attempt = 1; attempt <= 2; attempt++)
        {
            ServerProcess.Signal(old, SIGUSR2);
            int child = await server.WaitForSpawnAsync(2, attempt);
            await server.WaitForOutputAsync($"upgrade to pid {child} failed");
            Assert.Null(ProcessTable.State(child));
        }

        Assert.Contains($"Handoff:PidFile '{Path.Combine(run, "app.pid")}': the directory '{run}' does not exist", server.Output, StringComparison.Ordinal);
        Assert.Empty(ProcessTable.Descendants(old));
        Assert.Equal(old, await server.GetPidAsync());

        Directory.CreateDirectory(run);
        ServerProcess.Signal(old, SIGUSR2);
        int next = await server.WaitForSpawnAsync(2, attempt: 3);
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(60)));
        Assert.Equal(next, server.CurrentPid);
        Assert.Equal(next, await server.GetPidAsync());
    }

    [Fact]
    public async Task ProcessStartedAtTopOfProgram_InheritsNoSocketPipeOrVariable()
    {
        await using var server = await ServerProcess.StartAsync(environment: new Dictionary<string, string> { ["TESTSERVER_SPAWN_AT_START"] = "1" });
        var (_, next, _) = await server.UpgradeAsync();
        var helpers = System.Text.RegularExpressions.Regex.Matches(server.Output, @"TestServer started helper pid (\d+)")
            .Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        try
        {
            await CheckHelperAsync(server, next, helpers[^1]);
        }
        finally
        {
            // Generation 1's helper outlived it and is no descendant of a generation any more.
            foreach (int pid in helpers)
            {
                _ = Interop.Libc.Kill(pid, SIGKILL);
                await ProcessTable.WaitForExitAsync(pid, TimeSpan.FromSeconds(10));
            }
        }
    }

    private static async Task CheckHelperAsync(ServerProcess server, int next, int helper)
    {

        Assert.Equal(next, ProcessTable.ParentOf(helper));
        var fds = ProcessTable.OpenFds(helper);
        Assert.DoesNotContain(fds, f => f.Contains("socket:", StringComparison.Ordinal));
        Assert.True(fds.Count <= 3, $"the helper holds more than stdin, stdout and stderr:\n{string.Join("\n", fds)}");
        string environ = File.ReadAllText($"/proc/{helper}/environ");
        Assert.DoesNotContain("HANDOFF_HANDOVER", environ, StringComparison.Ordinal);
        Assert.DoesNotContain("DOTNET_STARTUP_HOOKS", environ, StringComparison.Ordinal);

        // Native code sees the same environment as .NET does.
        Assert.Contains("(unset)", (await HttpProbe.GetAsync(server.EndPoint, "/native-env?name=HANDOFF_HANDOVER", TimeSpan.FromSeconds(30))).Body, StringComparison.Ordinal);
        Assert.Contains("(unset)", (await HttpProbe.GetAsync(server.EndPoint, "/native-env?name=DOTNET_STARTUP_HOOKS", TimeSpan.FromSeconds(30))).Body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StrayDescriptorOfTheFirstGeneration_IsNotPassedOn()
    {
        await using var server = await ServerProcess.StartAsync(command: ["bash", "-c", "exec 7</etc/hostname; exec \"$0\" \"$@\"", TestAssets.TestServerAppHost]);
        Assert.Contains(ProcessTable.OpenFds(server.FirstPid), f => f.StartsWith("7 -> /etc/hostname", StringComparison.Ordinal));

        var (_, next, _) = await server.UpgradeAsync();

        Assert.DoesNotContain(ProcessTable.OpenFds(next), f => f.Contains("/etc/hostname", StringComparison.Ordinal));
    }

    [Fact]
    public async Task UpgradeSignalToTheProcessGroup_NeverKillsAStartingGeneration()
    {
        // setsid: the server leads its own process group, as a service or a shell job does.
        await using var server = await ServerProcess.StartAsync(command: ["setsid", TestAssets.TestServerAppHost]);
        int group = server.FirstPid;
        for (int generation = 2; generation <= 4; generation += 2)
        {
            int old = server.CurrentPid;
            ServerProcess.Signal(-group, SIGUSR2);
            int child = await server.WaitForSpawnAsync(generation);

            // The same group signal again while the new generation starts up: it reaches the
            // starting one too, which must survive it. The upgrading one remembers it as an
            // upgrade asked for meanwhile, which the new generation runs once it serves for good.
            ServerProcess.Signal(-group, SIGUSR2);

            int grandchild = await server.WaitForSpawnAsync(generation + 1);
            await server.WaitUntilAsync(() => server.CurrentPid == grandchild, ServerProcess.StartTimeout, $"generation {generation + 1}");
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(60)));
            Assert.Equal(0, await server.WaitForExitAsync(child, TimeSpan.FromSeconds(60)));
            Assert.Equal(grandchild, await server.GetPidAsync());
        }

        Assert.DoesNotContain("failed", server.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("signal 12", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WebSocketHandshake_DuringTheDrain_Succeeds()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:DrainIdleTimeout=5s"]);
        int old = server.CurrentPid;
        using var connection = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await connection.ConnectAsync(server.EndPoint);
        string first = await RoundTripAsync(connection, "GET /?sleep=0 HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.Contains($"pid:{old}", first, StringComparison.Ordinal);
        var slow = await server.StartSlowRequestAsync(5); // keeps the old generation draining

        ServerProcess.Signal(old, SIGUSR2);
        await server.WaitForOutputAsync($"Pid {old} stopped accepting; draining");
        string handshake = await RoundTripAsync(connection, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 101", handshake, StringComparison.Ordinal);
        Assert.Contains("Upgrade: websocket", handshake, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("close", handshake, StringComparison.OrdinalIgnoreCase);

        // Accepted while draining, the WebSocket is closed at once with 1012 (Service Restart):
        // the client reconnects, to the new generation. A close frame: FIN and opcode 8,
        // unmasked, the status code, the reason.
        string closeFrame = "\x88\x11\x03\xF4Service Restart";
        var frames = new StringBuilder(handshake[(handshake.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..]);
        var buffer = new byte[256];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!frames.ToString().Contains(closeFrame, StringComparison.Ordinal))
        {
            int n = await connection.ReceiveAsync(buffer, timeout.Token);
            Assert.True(n > 0, $"the connection ended without a close frame 1012: {frames}");
            frames.Append(Encoding.Latin1.GetString(buffer, 0, n));
        }

        Assert.Equal(old, await slow);
    }

    private Dictionary<string, string> HoldWarmUp() => new() { ["TESTSERVER_HOLD_WARMUP"] = _hold };

    /// <summary>Spins until <paramref name="parent"/> has a child, stops it with SIGSTOP and
    /// returns its pid (bounded by 30 s).</summary>
    private static int CatchNewChild(int parent)
    {
        var deadline = Environment.TickCount64 + 30_000;
        while (Environment.TickCount64 < deadline)
        {
            foreach (string task in Directory.EnumerateDirectories($"/proc/{parent}/task"))
            {
                string text;
                try
                {
                    text = File.ReadAllText(Path.Combine(task, "children")).Trim();
                }
                catch (IOException)
                {
                    continue;
                }

                if (text.Length > 0)
                {
                    int pid = int.Parse(text.Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
                    ServerProcess.Signal(pid, SIGSTOP);
                    return pid;
                }
            }
        }

        throw new TimeoutException($"pid {parent} started no process");
    }

    private static async Task<string> RoundTripAsync(Socket connection, string request)
    {
        await connection.SendAsync(Encoding.ASCII.GetBytes(request));
        var received = new StringBuilder();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!received.ToString().Contains("\r\n\r\n", StringComparison.Ordinal) || !BodyComplete(received.ToString()))
        {
            int n = await connection.ReceiveAsync(buffer, timeout.Token);
            if (n == 0)
            {
                break;
            }

            received.Append(Encoding.Latin1.GetString(buffer, 0, n)); // one char per byte
        }

        return received.ToString();
    }

    private static bool BodyComplete(string response)
    {
        int end = response.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        var length = System.Text.RegularExpressions.Regex.Match(response[..end], @"Content-Length: (\d+)", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
        return !length.Success || response.Length - end - 4 >= int.Parse(length.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }
}
