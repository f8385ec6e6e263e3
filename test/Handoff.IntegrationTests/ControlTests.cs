using System.Text.Json;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>The control socket and the <c>handoff</c> tool against a real TestServer:
/// upgrades that report their outcome and exit codes, status, and who may ask.</summary>
public sealed class ControlTests
{
    [Fact]
    public async Task Upgrade_UnderKeepAliveLoad_ExitsZeroAndPrintsTheNewPid_NoFailedRequest()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}"]);
        var before = Inode(control);
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        try
        {
            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
            for (int i = 0; i < 3; i++)
            {
                int old = server.CurrentPid;
                bool json = i == 2;
                var run = await ToolRun.RunAsync(json ? ["upgrade", "--control", control, "--json"] : ["upgrade", "--control", control]);
                Assert.True(run.ExitCode == 0, run.ToString());
                int current = server.CurrentPid;
                Assert.NotEqual(old, current);
                if (json)
                {
                    CheckTimeline(run.Output, current);
                }
                else
                {
                    Assert.Contains($"upgraded: pid {old} -> {current}, generation {i + 2}, ready after ", run.Output, StringComparison.Ordinal);

                    // The new build timed its own start: the runtime's and the application's shares.
                    Assert.Matches(@"timeline: Handoff \d+\.\d ms, runtime start \d+\.\d ms, application start \d+\.\d ms, rollback window \d+ ms; stopped accepting \d+\.\d ms and committed \d+\.\d ms after the request", run.Output);
                }

                server.Track(current);
                await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
            }

            // The same socket (same inode) at the same path, still private to its user.
            Assert.Equal(before, Inode(control));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(control));
        }
        finally
        {
            var report = await load.StopAsync();
            Assert.True(report.Failures.Count == 0, report.ToString());
        }
    }

    [Fact]
    public async Task Upgrade_BrokenBuild_ExitsOneWithTheReasonAsLogged_ServerUnchanged()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        string marker = Path.Combine(dir.Path, "broken");
        await using var server = await ServerProcess.StartAsync(
            arguments: [$"--Handoff:ControlSocket={control}"],
            environment: new Dictionary<string, string> { ["TESTSERVER_BREAK_FAILSTART"] = marker });
        int pid = server.CurrentPid;
        File.WriteAllText(marker, "");

        var run = await ToolRun.RunAsync(["upgrade", "--control", control]);

        Assert.True(run.ExitCode == 1, run.ToString());
        const string Reason = "unhandled exception: InvalidOperationException: TestServer:FailStart is set";
        Assert.Contains("upgrade failed: new generation 2 (pid ", run.Error, StringComparison.Ordinal);
        Assert.Contains(Reason, run.Error, StringComparison.Ordinal);
        Assert.Contains($"the server is unchanged: generation 1 (pid {pid}) serves", run.Error, StringComparison.Ordinal);

        // Exactly the line the server logged.
        string reason = run.Error.Split('\n').Single(l => l.StartsWith("handoff: upgrade failed: ", StringComparison.Ordinal))["handoff: upgrade failed: ".Length..];
        Assert.Contains(reason, server.Output, StringComparison.Ordinal);
        Assert.Equal(pid, server.CurrentPid);
        Assert.Equal(pid, await server.GetPidAsync());

        var status = await StatusAsync(control);
        Assert.Equal("failed", status.GetProperty("lastUpgrade").GetProperty("outcome").GetString());
        Assert.Equal(reason, status.GetProperty("lastUpgrade").GetProperty("detail").GetString());
    }

    [Fact]
    public async Task Upgrade_TwoAtOnce_TheSecondWaitsForTheFirst_ThenRunsInItsSuccessor()
    {
        // Two deploys a moment apart: the second build must serve, and its caller must hear
        // how its own upgrade ended.
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        string hold = Path.Combine(dir.Path, "hold");
        await using var server = await ServerProcess.StartAsync(
            arguments: [$"--Handoff:ControlSocket={control}"],
            environment: new Dictionary<string, string> { ["TESTSERVER_HOLD_WARMUP"] = hold });
        File.WriteAllText(hold, "");
        var first = ToolRun.RunAsync(["upgrade", "--control", control]);
        await server.WaitForSpawnAsync(2);

        var second = ToolRun.RunAsync(["upgrade", "--control", control]);
        await server.WaitForOutputAsync("upgrade asked for while an upgrade is already in progress");
        File.Delete(hold);
        var firstRun = await first;
        var secondRun = await second;

        Assert.True(firstRun.ExitCode == 0, firstRun.ToString());
        Assert.Contains("generation 2", firstRun.Output, StringComparison.Ordinal);
        Assert.True(secondRun.ExitCode == 0, secondRun.ToString());
        Assert.Contains("generation 3", secondRun.Output, StringComparison.Ordinal);
        await server.WaitForOutputAsync("the upgrade it passed on ended: upgrade succeeded: generation 3");
        var status = await StatusAsync(control);
        Assert.Equal(3, status.GetProperty("generation").GetInt32());
        server.Track(server.CurrentPid);
        Assert.Equal(server.CurrentPid, await server.GetPidAsync());
    }

    [Fact]
    public async Task Upgrade_WhileShuttingDown_IsRefused_ExitFour()
    {
        // "Try again later" must be told apart from "the build is broken" (exit 1).
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}", "--Handoff:ShutdownDelay=30s"]);
        ServerProcess.Signal(server.CurrentPid, 15);
        await server.WaitForOutputAsync("Handoff:ShutdownDelay");

        var run = await ToolRun.RunAsync(["upgrade", "--control", control]);

        Assert.True(run.ExitCode == 4, run.ToString());
        Assert.Contains("upgrade refused: this generation is shutting down", run.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Upgrade_WhileTheStopDrainsARequest_SaysTheServerMayBeShuttingDown_ExitTwo()
    {
        // A stopping server closes its control socket and then drains: the tool must not say
        // only "is the server running?" while it still runs.
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}"]);
        var request = await server.StartSlowRequestAsync(5);
        ServerProcess.Signal(server.CurrentPid, 15);
        await server.WaitForOutputAsync("draining 1 open connections");
        await server.WaitUntilAsync(() => Interop.Libc.FileType(control) is null, TimeSpan.FromSeconds(30), "the stopping server to remove its control socket");

        var run = await ToolRun.RunAsync(["upgrade", "--control", control]);

        Assert.True(run.ExitCode == 2, run.ToString());
        Assert.Contains("or it is shutting down", run.Error, StringComparison.Ordinal);
        Assert.True(ProcessTable.IsRunning(server.FirstPid));
        Assert.Equal(server.FirstPid, await request);
    }

    [Fact]
    public async Task Upgrade_CallerWithAnotherUid_IsRefused_ByTheSocketModeAndByThePeerCheck()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}"]);
        int pid = server.CurrentPid;
        string[] nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

        // A copy the other user can run wherever the checkout is (a 0700 directory, say).
        string tool = TestAssets.CopyHandoffToolTo(Path.Combine(dir.Path, "tool"));

        // Mode 0600: the kernel refuses the connect.
        var denied = await ToolRun.RunAsync(["upgrade", "--control", control], prefix: nobody, tool: tool);
        Assert.True(denied.ExitCode == 2, denied.ToString());
        Assert.Contains("permission denied", denied.Error, StringComparison.Ordinal);

        // Someone opened the mode up: SO_PEERCRED still refuses, and the server says so.
        File.SetUnixFileMode(control, (UnixFileMode)0b110_110_110);
        var refused = await ToolRun.RunAsync(["upgrade", "--control", control], prefix: nobody, tool: tool);
        Assert.True(refused.ExitCode == 2, refused.ToString());
        Assert.Contains("the server refused: permission denied: uid 65534 may not use this control socket", refused.Error, StringComparison.Ordinal);
        await server.WaitForOutputAsync("Refused a control connection from pid");
        Assert.Contains("(uid 65534)", server.Output, StringComparison.Ordinal);
        Assert.Equal(pid, server.CurrentPid);
        Assert.DoesNotContain("upgrade requested over the control socket", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UpgradeAndStatus_NoServer_ExitTwo_AndSayWhy()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");

        var missing = await ToolRun.RunAsync(["upgrade", "--control", control]);
        Assert.True(missing.ExitCode == 2, missing.ToString());
        Assert.Contains($"no control socket at {control}", missing.Error, StringComparison.Ordinal);

        // A socket file nobody listens on, as a server that is gone leaves it (bound, never
        // listening: .NET would unlink the path if this socket were disposed first).
        using var stale = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        stale.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(control));

        var gone = await ToolRun.RunAsync(["status", "--control", control]);
        Assert.True(gone.ExitCode == 2, gone.ToString());
        Assert.Contains("nobody answers", gone.Error, StringComparison.Ordinal);

        var usage = await ToolRun.RunAsync(["upgrade"]);
        Assert.True(usage.ExitCode == 2, usage.ToString());
        Assert.Contains("say which server", usage.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Status_AfterAnUpgrade_ShowsTheNewGenerationAndTheOldOneDrainingWithItsConnection()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}"]);
        int old = server.CurrentPid;
        var slow = await server.StartSlowRequestAsync(6);

        var upgrade = await ToolRun.RunAsync(["upgrade", "--control", control]);
        Assert.True(upgrade.ExitCode == 0, upgrade.ToString());
        int current = server.CurrentPid;
        server.Track(current);

        var status = await StatusAsync(control);
        Assert.Equal(current, status.GetProperty("pid").GetInt32());
        Assert.Equal(2, status.GetProperty("generation").GetInt32());
        Assert.Equal("serving", status.GetProperty("state").GetString());
        Assert.Equal(old, status.GetProperty("parentPid").GetInt32());
        Assert.Equal($"127.0.0.1:{server.EndPoint.Port}", status.GetProperty("listeners")[0].GetProperty("address").GetString());
        Assert.Equal(1, status.GetProperty("listeners").GetArrayLength());
        Assert.Equal(control, status.GetProperty("controlSocket").GetString());
        var draining = Assert.Single(status.GetProperty("draining").EnumerateArray());
        Assert.Equal(old, draining.GetProperty("pid").GetInt32());
        Assert.Equal(1, draining.GetProperty("openConnections").GetInt32()); // the slow request, not the channel its idle ones moved on
        Assert.Equal("succeeded", status.GetProperty("lastUpgrade").GetProperty("outcome").GetString());

        var text = await ToolRun.RunAsync(["status", "--control", control]);
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains($"generation 2, pid {current}: serving since ", text.Output, StringComparison.Ordinal);
        Assert.Contains($"draining: pid {old} (1 connections)", text.Output, StringComparison.Ordinal);
        Assert.Equal(old, await slow);
    }

    [Fact]
    public async Task Upgrade_WithAPidFileInsteadOfTheControlSocket_SignalsAndReportsTheNewPid()
    {
        await using var server = await ServerProcess.StartAsync();
        int old = server.CurrentPid;

        var run = await ToolRun.RunAsync(["upgrade", "--pid-file", server.PidFile]);

        Assert.True(run.ExitCode == 0, run.ToString());
        int current = server.CurrentPid;
        server.Track(current);
        Assert.NotEqual(old, current);
        Assert.Contains($"upgraded: pid {old} -> {current}", run.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_ControlSocketOfARunningServer_ExitsWithConfigErrorNamingIt()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}"]);

        var second = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(TestAssets.TestServerAppHost, ["--urls", "http://127.0.0.1:0", $"--Handoff:ControlSocket={control}"])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        })!;
        string error = await second.StandardError.ReadToEndAsync();
        await second.WaitForExitAsync();

        Assert.Equal(78, second.ExitCode);
        Assert.Contains($"Handoff:ControlSocket '{control}' is in use", error, StringComparison.Ordinal);
        Assert.Equal(server.CurrentPid, (await StatusAsync(control)).GetProperty("pid").GetInt32());
    }

    [Fact]
    public async Task Upgrade_PidThatDoesNotHandleTheSignal_IsNotSignalled_ExitTwo()
    {
        using var sleep = System.Diagnostics.Process.Start("sleep", "60")!;
        try
        {
            var run = await ToolRun.RunAsync(["upgrade", "--pid", sleep.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);

            Assert.True(run.ExitCode == 2, run.ToString());
            Assert.Contains($"pid {sleep.Id} does not handle SIGUSR2", run.Error, StringComparison.Ordinal);
            Assert.False(sleep.HasExited, "the tool killed a process that does not handle the signal");
        }
        finally
        {
            sleep.Kill();
        }
    }

    [Fact]
    public async Task ControlPathDeleted_FailedUpgradeInBetween_TheNextUpgradeServesTheControlSocketAgain()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        string marker = Path.Combine(dir.Path, "broken");
        await using var server = await ServerProcess.StartAsync(
            arguments: [$"--Handoff:ControlSocket={control}"],
            environment: new Dictionary<string, string> { ["TESTSERVER_BREAK_FAILWARMUP"] = marker });
        int first = server.CurrentPid;

        // Someone deletes the path; the next build fails its warm-up after binding a fresh
        // socket there. It must not leave that socket file behind for the next one to trust.
        File.Delete(control);
        File.WriteAllText(marker, "");
        ServerProcess.Signal(first, 12);
        await server.WaitForOutputAsync("failed, still serving");
        await server.WaitUntilAsync(() => Interop.Libc.FileType(control) is null, TimeSpan.FromSeconds(30), "the failed generation to remove the socket file it bound");

        File.Delete(marker);
        var (_, next, _) = await server.UpgradeAsync();

        var status = await StatusAsync(control);
        Assert.Equal(next, status.GetProperty("pid").GetInt32());
    }

    [Fact]
    public async Task ControlPathReplacedByAFile_UpgradesGoOn_TheSocketComesBackOnceItIsRemoved_ASymlinkToTheSocketIsTheSocket()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}"]);

        // A regular file where the socket was: the new generation cannot bind there and must
        // not delete it; it serves on (the upgrade succeeds) and says why the path is dead.
        File.Delete(control);
        File.WriteAllText(control, "somebody's data");
        var (_, second, _) = await server.UpgradeAsync();
        await server.WaitForOutputAsync($"The Unix socket path {control} of inherited listener");
        Assert.Equal("somebody's data", File.ReadAllText(control));
        Assert.DoesNotContain("Unhandled exception", server.Output, StringComparison.Ordinal);
        var notSocket = await ToolRun.RunAsync(["status", "--control", control]);
        Assert.True(notSocket.ExitCode == 2 && notSocket.Error.Contains("is not a socket but a file", StringComparison.Ordinal), notSocket.ToString());

        // Removed: the next generation binds the socket there again.
        File.Delete(control);
        var (_, third, _) = await server.UpgradeAsync();
        Assert.Equal(third, (await StatusAsync(control)).GetProperty("pid").GetInt32());
        Assert.NotEqual(second, third);

        // The socket moved and a symlink put in its place: clients reach it through the link,
        // and so does the tool; the next generation keeps it.
        string moved = Path.Combine(dir.Path, "moved.sock");
        File.Move(control, moved);
        File.CreateSymbolicLink(control, moved);
        var upgrade = await ToolRun.RunAsync(["upgrade", "--control", control]);
        Assert.True(upgrade.ExitCode == 0, upgrade.ToString());
        server.Track(server.CurrentPid);
        var status = await StatusAsync(control);
        Assert.Equal(4, status.GetProperty("generation").GetInt32());
    }

    [Fact]
    public async Task Start_ControlPathIsAFile_ExitsWithConfigErrorNamingIt_AndLeavesTheFile()
    {
        using var dir = new TempDirectory();
        string control = Path.Combine(dir.Path, "control.sock");
        File.WriteAllText(control, "somebody's data");
        var start = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(TestAssets.TestServerAppHost, ["--urls", "http://127.0.0.1:0", $"--Handoff:ControlSocket={control}"])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        })!;
        var output = start.StandardOutput.ReadToEndAsync();
        string error = await start.StandardError.ReadToEndAsync();
        await start.WaitForExitAsync();

        Assert.Equal(78, start.ExitCode);
        Assert.Contains($"Handoff:ControlSocket '{control}' is a file, not a socket", error + await output, StringComparison.Ordinal);
        Assert.Equal("somebody's data", File.ReadAllText(control));
    }

    private static async Task<JsonElement> StatusAsync(string control)
    {
        var run = await ToolRun.RunAsync(["status", "--control", control, "--json"]);
        Assert.True(run.ExitCode == 0, run.ToString());
        using var document = JsonDocument.Parse(run.Output);
        return document.RootElement.Clone();
    }

    private static ulong Inode(string path) => ProcessTable.Inode(path);

    // The answer's timeline: every moment after the one before it, and the shares add up.
    private static void CheckTimeline(string output, int newPid)
    {
        using var answer = JsonDocument.Parse(output);
        Assert.Equal(newPid, answer.RootElement.GetProperty("newPid").GetInt32());
        var t = answer.RootElement.GetProperty("timeline");
        double Ms(string name) => t.GetProperty(name).GetDouble();
        string[] order = ["spawnedMs", "runtimeStartedMs", "adoptedMs", "readyMs", "reportReadMs", "committedMs"];
        for (int i = 1; i < order.Length; i++)
        {
            Assert.True(Ms(order[i - 1]) <= Ms(order[i]), $"{order[i - 1]} after {order[i]}: {output}");
        }

        Assert.True(Ms("spawnedMs") >= 0 && Ms("runtimeMs") > 0 && Ms("applicationMs") > 0, output);
        double sum = Ms("handoffMs") + Ms("runtimeMs") + Ms("applicationMs") + Ms("rollbackWindowMs");
        Assert.True(Math.Abs(sum - Ms("committedMs")) < 0.5, $"the shares add up to {sum} ms, not to the commit's {Ms("committedMs")} ms: {output}");
    }
}
