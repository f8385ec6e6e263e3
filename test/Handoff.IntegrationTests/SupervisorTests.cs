using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary><c>handoff run</c> as a container's PID 1 (a new pid namespace) and as a plain
/// supervisor: a stable pid across upgrades, no zombie, signals passed on, the main
/// generation's exit code.</summary>
public sealed class SupervisorTests
{
    [Fact]
    public async Task Run_AsPid1OfAPidNamespace_SixUpgradesUnderLoad_NoFailure_SamePid_NoZombie_SigtermDrainsAndExitsZero()
    {
        // Each generation starts a helper (sleep 600) that outlives it: an orphan to reap. Each
        // upgrade waits for the previous generation's exit; a short rollback window keeps it brief.
        await using var server = await SupervisedServer.StartAsync(pidNamespace: true, appArguments: ["--Handoff:RollbackWindow=500ms"], environment: new Dictionary<string, string> { ["TESTSERVER_SPAWN_AT_START"] = "1" });
        int supervisor = server.SupervisorPid;
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        LoadReport report;
        try
        {
            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
            for (int generation = 2; generation <= 7; generation++)
            {
                if (generation % 2 == 0)
                {
                    // SIGUSR2 to the supervisor: it asks the main generation to upgrade.
                    ServerProcess.Signal(supervisor, 12);
                }
                else
                {
                    var run = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket]);
                    Assert.True(run.ExitCode == 0, run.ToString());
                }

                // The previous main generation has handed over and exited.
                await server.WaitForOutputAsync("exited with code 0", generation - 1);
                Assert.Equal(generation, (await server.StatusAsync()).GetProperty("generation").GetInt32());
                await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
            }

            Assert.True(ProcessTable.IsRunning(supervisor));
            Assert.Equal(supervisor, server.SupervisorPid);
            Assert.Equal(6, server.CountOf("is the main generation now (handed over by pid"));
        }
        finally
        {
            report = await load.StopAsync();
        }

        Assert.True(report.Failures.Count == 0, report.ToString());

        // The helpers of the six generations that exited are the supervisor's children now;
        // killed, each is reaped: no zombie anywhere in the namespace.
        var helpers = ProcessTable.Descendants(supervisor).Where(pid => ProcessTable.ParentOf(pid) == supervisor && Comm(pid) == "sleep").ToList();
        Assert.Equal(6, helpers.Count);
        foreach (int helper in helpers)
        {
            ServerProcess.Signal(helper, 9);
        }

        await server.WaitUntilAsync(() => !ProcessTable.Descendants(supervisor).Any(pid => ProcessTable.State(pid) == 'Z') && helpers.All(h => ProcessTable.State(h) is null), "every helper to be reaped");

        // SIGTERM drains the last generation; the supervisor exits with its exit code (0).
        ServerProcess.Signal(supervisor, 15);
        int exit = await server.WaitForExitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(0, exit);
        Assert.Contains("Received SIGTERM; passing it to every generation", server.Output, StringComparison.Ordinal);
        Assert.Contains("drained all connections", server.Output, StringComparison.Ordinal);
        Assert.Contains("Every generation is gone; exiting with code 0", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_MainGenerationKilled_SupervisorExitsWithItsCode_AfterEndingWhatItLeftBehind()
    {
        await using var server = await SupervisedServer.StartAsync(pidNamespace: true, environment: new Dictionary<string, string> { ["TESTSERVER_SPAWN_AT_START"] = "1" });
        int supervisor = server.SupervisorPid;
        var upgrade = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket]);
        Assert.True(upgrade.ExitCode == 0, upgrade.ToString());
        await server.WaitForOutputAsync("exited with code 0");

        int main = ProcessTable.Descendants(supervisor).Single(pid => ProcessTable.ParentOf(pid) == supervisor && Comm(pid) == "TestServer");
        ServerProcess.Signal(main, 9);

        Assert.Equal(137, await server.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("was killed by signal 9", server.Output, StringComparison.Ordinal);
        Assert.Contains("stopping the processes they left behind", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_WithoutANamespace_AdoptsEachNewGenerationAsSubreaper_AndSigintStopsWithTheGenerationsCode()
    {
        await using var server = await SupervisedServer.StartAsync(pidNamespace: false);
        Assert.Equal(server.LauncherPid, server.SupervisorPid);
        var run = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket]);
        Assert.True(run.ExitCode == 0, run.ToString());
        var status = await server.StatusAsync();
        Assert.Equal(2, status.GetProperty("generation").GetInt32());

        // Started detached (setsid) by generation 1, orphaned at once: only a subreaper
        // adopts it; otherwise its parent would be the machine's init.
        int main = status.GetProperty("pid").GetInt32();
        Assert.Equal(server.SupervisorPid, ProcessTable.ParentOf(main));
        await server.WaitForOutputAsync("exited with code 0");

        Assert.False(ProcessTable.Ignores(server.SupervisorPid, 2), ProcessTable.IgnoredSignalMessage(server.SupervisorPid, 2));
        ServerProcess.Signal(server.SupervisorPid, 2); // SIGINT, as Ctrl-C in a terminal
        Assert.Equal(0, await server.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("Received SIGINT; passing it to every generation", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_SigtermWhileTheOldGenerationCanStillRollBack_StopsTheNewOneToo()
    {
        using var hold = new TempDirectory();
        string holdFile = Path.Combine(hold.Path, "hold");
        await using var server = await SupervisedServer.StartAsync(
            pidNamespace: false,
            appArguments: ["--Handoff:RollbackWindow=5s"],
            environment: new Dictionary<string, string> { ["TESTSERVER_HOLD_WARMUP"] = holdFile });
        File.WriteAllText(holdFile, "");
        var upgrade = ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket]);
        await server.WaitForOutputAsync("started generation 2 as pid");
        File.Delete(holdFile);

        // Generation 2 reported ready; generation 1 holds its sockets for the rollback window.
        await server.WaitForOutputAsync("it keeps its listeners for 5 s");
        ServerProcess.Signal(server.SupervisorPid, 15);

        // The upgrade stands (past the point of no return), and the new main generation is
        // stopped as well: the supervisor exits instead of serving on.
        var run = await upgrade;
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(0, await server.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("became the main generation after the stop signal was passed on", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_CommandNotFound_Exits127_AndSaysWhich()
    {
        var run = await ToolRun.RunAsync(["run", "--", "/nonexistent/app"]);
        Assert.True(run.ExitCode == 127, run.ToString());
        Assert.Contains("/nonexistent/app", run.Error, StringComparison.Ordinal);

        var usage = await ToolRun.RunAsync(["run"]);
        Assert.True(usage.ExitCode == 2, usage.ToString());
        Assert.Contains("no command", usage.Error, StringComparison.Ordinal);
    }

    private static string? Comm(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
            return null;
        }
    }
}
