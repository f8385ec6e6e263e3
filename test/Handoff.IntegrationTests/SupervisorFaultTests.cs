using System.Globalization;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>
/// <c>handoff run</c> under faults, with real processes and signals: the old main generation
/// killed in the middle of an upgrade, the supervisor itself killed or stopped. Its promise is the
/// core's: no healthy generation is stopped, nothing is left that cannot upgrade, and the pid it
/// follows is never a dead one.
/// </summary>
public sealed class SupervisorFaultTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Run_OldMainKilledRightAfterTheNewOneIsReady_TheNewOneClaimsTheMainPid_ServesOn_AndUpgradesNext()
    {
        using var files = new TempDirectory();
        string pidFile = Path.Combine(files.Path, "app.pid");

        // A long rollback window: the kill lands while generation 1 could still roll back, before
        // it handed the main pid over.
        await using var server = await SupervisedServer.StartAsync(pidNamespace: false, appArguments: ["--Handoff:RollbackWindow=60s", $"--Handoff:PidFile={pidFile}"]);
        int supervisor = server.SupervisorPid;
        int first = (await server.StatusAsync()).GetProperty("pid").GetInt32();
        var during = new LoadClient(server.EndPoint, connections: 8, keepAlive: true);
        await during.WaitForProgressAsync(100, Long);

        ServerProcess.Signal(supervisor, 12);
        int second = Pid(await server.WaitForMatchAsync(@"Generation 2 \(pid (\d+)\) is ready"));
        await server.WaitForOutputAsync("it keeps its listeners for 60 s");
        ServerProcess.Signal(first, 9);

        await server.WaitForOutputAsync($"Pid {second} is the main generation now: it claimed the main pid after pid {first} exited");
        await during.StopAsync(); // Requests in flight on the killed generation fail: not counted.

        // After the kill: one generation serves, every request succeeds, the pid file names it.
        await AssertServesWithoutFailureAsync(server);
        Assert.True(ProcessTable.IsRunning(supervisor));
        Assert.Equal(second, (await server.StatusAsync()).GetProperty("pid").GetInt32());
        await server.WaitUntilAsync(() => ReadPid(pidFile) == second, "the pid file to name generation 2");
        Assert.DoesNotContain("stopping the processes they left behind", server.Output, StringComparison.Ordinal);

        // The supervisor follows it: the next upgrade signal reaches generation 2.
        ServerProcess.Signal(supervisor, 12);
        await server.WaitForOutputAsync($"asking the main generation (pid {second}) to upgrade");
        int third = Pid(await server.WaitForMatchAsync(@"Generation 3 \(pid (\d+)\) is ready"));

        // A detached generation whose parent lives is not told otherwise by getppid().
        await server.WaitForOutputAsync($"(pid {second}): generation 3 (pid {third}) is ready");
        Assert.DoesNotContain($"(pid {third}): the previous generation (pid {second}) is gone", server.Output, StringComparison.Ordinal);

        ServerProcess.Signal(supervisor, 15);
        Assert.Equal(0, await server.WaitForExitAsync(Long));
    }

    [Fact]
    public async Task Run_OldMainKilledWhileTheNewOneStarts_TheNewOneIsKept_ClaimsTheMainPidWhenReady()
    {
        using var files = new TempDirectory();
        string pidFile = Path.Combine(files.Path, "app.pid");
        string hold = Path.Combine(files.Path, "hold");
        await using var server = await SupervisedServer.StartAsync(
            pidNamespace: false,
            appArguments: [$"--Handoff:PidFile={pidFile}"],
            environment: new Dictionary<string, string> { ["TESTSERVER_HOLD_WARMUP"] = hold });
        int supervisor = server.SupervisorPid;
        int first = (await server.StatusAsync()).GetProperty("pid").GetInt32();
        File.WriteAllText(hold, "");

        ServerProcess.Signal(supervisor, 12);
        int second = Pid(await server.WaitForMatchAsync(@"started generation 2 as pid (\d+)"));
        ServerProcess.Signal(first, 9);

        // The supervisor knows generation 2 (its parent announced it) and waits for it instead
        // of stopping it as something left behind.
        await server.WaitForOutputAsync($"The main generation (pid {first}) exited before its new generation took over; waiting for pids {second}");
        Assert.True(ProcessTable.IsRunning(second));
        Assert.True(ProcessTable.IsRunning(supervisor));
        File.Delete(hold);

        await server.WaitForOutputAsync($"Pid {second} is the main generation now: it claimed the main pid after pid {first} exited");
        await AssertServesWithoutFailureAsync(server);
        Assert.Equal(second, (await server.StatusAsync()).GetProperty("pid").GetInt32());
        await server.WaitUntilAsync(() => ReadPid(pidFile) == second, "the pid file to name generation 2");

        ServerProcess.Signal(supervisor, 15);
        Assert.Equal(0, await server.WaitForExitAsync(Long));
        Assert.DoesNotContain("stopping the processes they left behind", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_SupervisorStoppedWhileTheMainPidIsHanded_NewOneDies_OldOneRollsBack_SupervisorFollowsTheLiveOne()
    {
        // SIGSTOP holds the supervisor while generation 1 sends MAINPID= (queued) and waits for
        // the barrier; generation 2 dies meanwhile; generation 1 rolls back. When the supervisor
        // reads MAINPID= it names a dead pid: it must not follow it.
        await using var server = await SupervisedServer.StartAsync(pidNamespace: false, appArguments: ["--Handoff:RollbackWindow=3s"]);
        int supervisor = server.SupervisorPid;
        int first = (await server.StatusAsync()).GetProperty("pid").GetInt32();
        ServerProcess.Signal(supervisor, 12);
        int second = Pid(await server.WaitForMatchAsync(@"Generation 2 \(pid (\d+)\) is ready"));
        var pipesBefore = Pipes(first);
        ServerProcess.Signal(supervisor, 19); // SIGSTOP
        try
        {
            // The barrier's pipe appears once MAINPID= has been sent (and waits: nobody reads).
            // Generation 1 holds only its read end (the write end went to the supervisor); the
            // pipe it makes to wake its own wait for the new generation, in the rollback window,
            // has both ends there and must not be taken for it.
            await server.WaitUntilAsync(() => Pipes(first).Where(p => p.Value == 1).Any(p => !pipesBefore.ContainsKey(p.Key)), "generation 1 to wait for the barrier", Long);
            ServerProcess.Signal(second, 9);
            await server.WaitForOutputAsync($"rolled back after it had told the service manager that pid {second} is the main process", timeout: Long);
        }
        finally
        {
            ServerProcess.Signal(supervisor, 18); // SIGCONT
        }

        // It reads MAINPID= naming generation 2 (dead), then generation 1's claim back.
        await server.WaitForOutputAsync($"Pid {first} is the main generation now: it claimed the main pid after pid {second} exited");
        await AssertServesWithoutFailureAsync(server);

        // The next upgrade reaches the live generation, and a stop reports no phantom.
        ServerProcess.Signal(supervisor, 12);
        await server.WaitForOutputAsync($"asking the main generation (pid {first}) to upgrade");
        await server.WaitForMatchAsync(@"is the main generation now \(handed over by pid " + first.ToString(CultureInfo.InvariantCulture) + @"\)", Long);
        ServerProcess.Signal(supervisor, 15);
        Assert.Equal(0, await server.WaitForExitAsync(Long));
    }

    [Fact]
    public async Task Run_SupervisorStoppedAcrossTwoUpgrades_FollowsTheChainOfHandoversToTheServingGeneration()
    {
        // While the supervisor is stopped, generation 1 hands over to 2 and 2 to 3; 1 and 2
        // exit. Read late, the first MAINPID= names a generation that is gone: the supervisor
        // must follow the chain to 3, not stop it as something left behind.
        await using var server = await SupervisedServer.StartAsync(pidNamespace: false, appArguments: ["--Handoff:RollbackWindow=500ms"]);
        int supervisor = server.SupervisorPid;
        ServerProcess.Signal(supervisor, 19); // SIGSTOP
        int third;
        try
        {
            for (int i = 0; i < 2; i++)
            {
                var upgrade = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket, "--timeout", "60s"]);
                Assert.True(upgrade.ExitCode == 0, upgrade.ToString());
            }

            var status = await server.StatusAsync();
            Assert.Equal(3, status.GetProperty("generation").GetInt32());
            third = status.GetProperty("pid").GetInt32();
        }
        finally
        {
            ServerProcess.Signal(supervisor, 18); // SIGCONT
        }

        await server.WaitForMatchAsync(@"Pid " + third.ToString(CultureInfo.InvariantCulture) + @" is the main generation now \(handed over by pid \d+\)", Long);
        await AssertServesWithoutFailureAsync(server);
        Assert.True(ProcessTable.IsRunning(supervisor));
        Assert.True(ProcessTable.IsRunning(third));
        Assert.DoesNotContain("stopping the processes they left behind", server.Output, StringComparison.Ordinal);

        ServerProcess.Signal(supervisor, 12);
        await server.WaitForOutputAsync($"asking the main generation (pid {third}) to upgrade");
        await server.WaitForMatchAsync(@"Generation 4 \(pid \d+\) is ready", Long);
        ServerProcess.Signal(supervisor, 15);
        Assert.Equal(0, await server.WaitForExitAsync(Long));
    }

    [Fact]
    public async Task Run_SupervisorKilledDuringAnUpgrade_TheServerServesOnUnsupervised_UpgradesItself_AndARestartSaysWhatToDo()
    {
        using var files = new TempDirectory();
        string hold = Path.Combine(files.Path, "hold");
        var left = new HashSet<int>();
        await using var server = await SupervisedServer.StartAsync(
            pidNamespace: false,
            appArguments: ["--Handoff:RollbackWindow=500ms"],
            environment: new Dictionary<string, string> { ["TESTSERVER_HOLD_WARMUP"] = hold });
        try
        {
            int first = (await server.StatusAsync()).GetProperty("pid").GetInt32();
            left.Add(first);
            File.WriteAllText(hold, "");
            ServerProcess.Signal(server.SupervisorPid, 12);
            left.Add(Pid(await server.WaitForMatchAsync(@"started generation 2 as pid (\d+)")));
            ServerProcess.Signal(server.SupervisorPid, 9);
            await server.WaitUntilAsync(() => server.ExitCodeIfExited is not null, "the supervisor to die", supervisorGone: true);
            Assert.Equal(137, server.ExitCodeIfExited);
            File.Delete(hold);

            // The upgrade in flight completes without anyone to follow the main pid.
            await server.WaitForMatchAsync(@"Generation 1 \(pid \d+\) was superseded|Generation 2 \(pid \d+\) is ready", Long, supervisorGone: true);
            await WaitForGenerationAsync(server, 2);
            await server.WaitForMatchAsync(System.Text.RegularExpressions.Regex.Escape("the service manager (handoff run, or systemd) is gone"), Long, supervisorGone: true);
            await AssertServesWithoutFailureAsync(server);

            // It upgrades itself: the control socket (and the upgrade signal) still work.
            var upgrade = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket, "--timeout", "60s"]);
            Assert.True(upgrade.ExitCode == 0, upgrade.ToString() + server.Output);
            var status = await server.StatusAsync();
            Assert.Equal(3, status.GetProperty("generation").GetInt32());
            int third = status.GetProperty("pid").GetInt32();
            left.Add(third);
            await AssertServesWithoutFailureAsync(server);

            // A new handoff run finds it and says so instead of failing in generation 1.
            var again = await ToolRun.RunAsync(["run", "--control", server.ControlSocket, "--", TestAssets.TestServerAppHost, "--urls", "http://127.0.0.1:0"]);
            Assert.True(again.ExitCode == 78, again.ToString());
            Assert.Contains($"generation 3 (pid {third})", again.Error, StringComparison.Ordinal);
            Assert.Contains("kill -TERM", again.Error, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", again.Error, StringComparison.Ordinal);

            // Stopped as the message says, it drains and exits 0.
            ServerProcess.Signal(third, 15);
            await server.WaitUntilAsync(() => !ProcessTable.IsRunning(third), "generation 3 to exit", Long, supervisorGone: true);
        }
        finally
        {
            foreach (int pid in left.Where(ProcessTable.IsRunning))
            {
                ServerProcess.Signal(pid, 9);
            }
        }
    }

    private static async Task AssertServesWithoutFailureAsync(SupervisedServer server)
    {
        var load = new LoadClient(server.EndPoint, connections: 8, keepAlive: true);
        LoadReport report;
        try
        {
            await load.WaitForProgressAsync(300, Long);
        }
        finally
        {
            report = await load.StopAsync();
        }

        Assert.True(report.Failures.Count == 0, report.ToString());
    }

    private static async Task WaitForGenerationAsync(SupervisedServer server, int generation)
    {
        var deadline = DateTime.UtcNow + Long;
        while (true)
        {
            var run = await ToolRun.RunAsync(["status", "--control", server.ControlSocket, "--json"]);
            if (run.ExitCode == 0)
            {
                using var status = System.Text.Json.JsonDocument.Parse(run.Output);
                if (status.RootElement.GetProperty("generation").GetInt32() == generation && status.RootElement.GetProperty("state").GetString() == "serving")
                {
                    return;
                }
            }

            Assert.True(DateTime.UtcNow < deadline, $"generation {generation} did not serve: {run}\n{server.Output}");
            await Task.Delay(50);
        }
    }

    private static int Pid(System.Text.RegularExpressions.Match match) => int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);

    private static int? ReadPid(string path) =>
        File.Exists(path) && int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? pid : null;

    // The pipes a process holds, by inode.
    /// <summary>The pipes <paramref name="pid"/> holds, each with how many of its ends.</summary>
    private static Dictionary<string, int> Pipes(int pid) => ProcessTable.OpenFds(pid)
        .Select(fd => fd[(fd.IndexOf("-> ", StringComparison.Ordinal) + 3)..])
        .Where(target => target.StartsWith("pipe:", StringComparison.Ordinal))
        .GroupBy(target => target, StringComparer.Ordinal)
        .ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
}
