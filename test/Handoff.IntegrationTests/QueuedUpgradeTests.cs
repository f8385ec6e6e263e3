using System.Globalization;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>Upgrades asked for while one runs or while the generation that just took over can
/// still roll back: none is dropped, and the build on disk when the last request came serves.
/// Deploys a few seconds apart, or a deploy script that signals the pid its pid file names as
/// soon as it changed, do exactly this.</summary>
public sealed class QueuedUpgradeTests
{
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(90);

    [SlowFact] // The Queued_* tests below put a second request into each moment; this repeats it.
    [Trait("Category", "Slow")]
    public async Task Sigusr2_EverySecondForTenSeconds_UnderLoad_TheLastRequestIsServed_NoRequestFails()
    {
        // The default RollbackWindow (2 s): most signals land during an upgrade or a window.
        await using var server = await ServerProcess.StartAsync();
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));

        double lastSignal = 0;
        for (int i = 0; i < 10; i++)
        {
            int pid = server.CurrentPid;
            server.Track(pid);
            lastSignal = Uptime();
            ServerProcess.Signal(pid, 12);
            await Task.Delay(TimeSpan.FromSeconds(1));
        }

        int last = await WaitForGenerationStartedAfterAsync(() => server.CurrentPid, lastSignal, server.Track, () => server.Output);
        await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
        var report = await load.StopAsync();

        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.Equal(last, await server.GetPidAsync());
        Assert.Contains("upgrade asked for while", server.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("refused an upgrade", server.Output, StringComparison.Ordinal);
    }

    // Slow: Sigusr2_EverySecondForTenSeconds_... covers the same under a plain server in CI.
    [SlowFact]
    [Trait("Category", "Slow")]
    public async Task Supervisor_Sigusr2_EverySecondForTenSeconds_UnderLoad_TheLastRequestIsServed_NoRequestFails()
    {
        await using var server = await SupervisedServer.StartAsync(pidNamespace: false);
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));

        double lastSignal = 0;
        for (int i = 0; i < 10; i++)
        {
            lastSignal = Uptime();
            ServerProcess.Signal(server.SupervisorPid, 12);
            await Task.Delay(TimeSpan.FromSeconds(1));
        }

        int last = await WaitForGenerationStartedAfterAsync(() => ServingPid(server), lastSignal, _ => { }, () => server.Output);
        await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
        var report = await load.StopAsync();

        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.Contains(last, report.Pids);
        Assert.DoesNotContain("refused an upgrade", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HandoffUpgradeWithPidFile_TwoDeploysAMomentApart_TheSecondRunsAfterTheRollbackWindow_AndEachReportsWhatItCaused()
    {
        // The deploy script the README shows, started again as soon as the pid file changed:
        // the second signal reaches the new generation while its parent can still roll back
        // (2 s by default); it waits, runs, and the second tool follows the pid file to the
        // generation it caused.
        await using var server = await ServerProcess.StartAsync();
        int first = server.CurrentPid;

        var one = ToolRun.RunAsync(["upgrade", "--pid-file", server.PidFile]);
        await server.WaitUntilAsync(() => server.CurrentPid != first && server.CurrentPid != 0, ServerProcess.StartTimeout, "the first upgrade's new pid");
        int second = server.CurrentPid;
        server.Track(second);
        var two = await ToolRun.RunAsync(["upgrade", "--pid-file", server.PidFile]);
        var oneRun = await one;

        Assert.True(two.ExitCode == 0, two.ToString());
        Assert.True(oneRun.ExitCode == 0, oneRun.ToString());
        int third = server.CurrentPid;
        server.Track(third);
        Assert.NotEqual(second, third);
        Assert.Contains($"(pid {second}): upgrade asked for while", server.Output, StringComparison.Ordinal);
        Assert.Contains($"upgraded: pid {second} -> {third}", two.Output, StringComparison.Ordinal);
        // The first tool reports the second generation or, had the third taken over while it
        // watched the rollback window, the third: either way the newest it saw stand.
        Assert.Matches($@"upgraded: pid {first} -> ({second}|{third}) ", oneRun.Output);
        Assert.Equal(third, await server.GetPidAsync());
    }

    [Fact]
    public async Task Queued_TheGenerationHoldingItIsKilled_TheOldOneServesOn_AndTheCallerIsToldItDoesNotKnow()
    {
        // The new generation holds a request that waits for its parent's commit, and dies
        // (SIGKILL) in the rollback window: the parent takes over again, as after any death
        // there. The waiting request died with the process; its caller must not hang for its
        // timeout or hear "upgraded", and nothing may be left running.
        using var dir = new TempDirectory();
        var (server, control, first, second, upgrading, waiting) = await QueueAnUpgradeInTheRollbackWindowAsync(dir.Path, "60s");
        await using var _ = server;
        ServerProcess.Signal(second, 9);
        var run = await waiting;
        var upgraded = await upgrading;

        // The first upgrade failed (its new generation died in the window); the second was lost
        // with the process that held it, and its caller is told the connection closed.
        Assert.True(upgraded.ExitCode == 1, upgraded.ToString());
        Assert.True(run.ExitCode == 3, run.ToString());
        Assert.Contains("the server closed the connection", run.Error, StringComparison.Ordinal);
        await server.WaitUntilAsync(() => server.CurrentPid == first, TimeSpan.FromSeconds(30), $"pid {first} to serve again");
        Assert.Equal(first, await server.GetPidAsync());
        Assert.False(ProcessTable.IsRunning(second));
        Assert.DoesNotContain("started generation 3", server.Output, StringComparison.Ordinal);

        // And the control socket is the old generation's again.
        var status = await ToolRun.RunAsync(["status", "--control", control]);
        Assert.True(status.ExitCode == 0, status.ToString());
        Assert.Contains($"pid {first}", status.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Queued_TheOldGenerationIsKilledInTheRollbackWindow_TheWaitingUpgradeRunsAtOnce()
    {
        // The request waits for a commit that can no longer be withdrawn once the parent is
        // dead (SIGKILL, an OOM kill): it must run then, not wait out RollbackWindow.
        using var dir = new TempDirectory();
        var (server, _, first, second, upgrading, waiting) = await QueueAnUpgradeInTheRollbackWindowAsync(dir.Path, "8s");
        await using var __ = server;
        ServerProcess.Signal(first, 9);

        // Long before the 8 s window would have ended (it takes well under a second); its
        // caller hears the outcome when generation 3's own window has passed.
        await server.WaitForOutputAsync("started generation 3", timeout: TimeSpan.FromSeconds(6));
        var run = await waiting;
        await upgrading; // its server was killed: whatever it says, it ends

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("generation 3", run.Output, StringComparison.Ordinal);
        int third = server.CurrentPid;
        server.Track(third);
        Assert.NotEqual(second, third);
        Assert.Equal(third, await server.GetPidAsync());
    }

    [Fact]
    public async Task Queued_TheControlSocketRemovedMeanwhile_IsPassedOnWithTheSignal()
    {
        // A cleanup (tmpfiles, a deploy script) replaces the socket's directory while a request
        // waits for the handover to end: the generation that took it must still pass it on,
        // with the upgrade signal, rather than refuse it.
        using var dir = new TempDirectory();
        string run = Path.Combine(dir.Path, "run");
        Directory.CreateDirectory(run);
        string control = Path.Combine(run, "control.sock");
        string hold = Path.Combine(dir.Path, "hold");
        await using var server = await ServerProcess.StartAsync(
            arguments: [$"--Handoff:ControlSocket={control}", "--Handoff:RollbackWindow=5s"],
            environment: new Dictionary<string, string> { ["TESTSERVER_HOLD_WARMUP"] = hold });
        int first = server.CurrentPid;
        File.WriteAllText(hold, "");
        var upgrading = ToolRun.RunAsync(["upgrade", "--control", control]);
        int second = await server.WaitForSpawnAsync(2);
        var waiting = ToolRun.RunAsync(["upgrade", "--control", control]);
        await server.WaitForOutputAsync("upgrade asked for while an upgrade is already in progress");
        File.Delete(hold);

        // Generation 2 serves; its parent can roll back for 5 s and passes the request on at
        // the end of it. Meanwhile the socket's path is gone (the directory itself is back).
        await server.WaitUntilAsync(() => server.CurrentPid == second, ServerProcess.StartTimeout, "generation 2 to take over");
        Directory.Delete(run, recursive: true);
        Directory.CreateDirectory(run);

        var upgraded = await upgrading;
        var run2 = await waiting;
        Assert.True(upgraded.ExitCode == 0, upgraded.ToString());
        Assert.True(run2.ExitCode == 0, run2.ToString());
        int third = await server.WaitForSpawnAsync(3);
        await server.WaitUntilAsync(() => server.CurrentPid == third, ServerProcess.StartTimeout, "generation 3 to serve");
        Assert.Contains($"(pid {first}) was superseded with an upgrade asked for meanwhile: pid {second} runs it, asked with SIGUSR2 (the successor could not be reached over the control socket {control}: the path no longer exists)", server.Output, StringComparison.Ordinal);
        Assert.Equal(third, await server.GetPidAsync());
    }

    // A server with a control socket upgraded once by `handoff upgrade` (whose outcome comes
    // when the window ends), and a second `handoff upgrade` waiting in the new generation for
    // its parent's commit.
    private static async Task<(ServerProcess Server, string Control, int First, int Second, Task<ToolRun> Upgrading, Task<ToolRun> Waiting)> QueueAnUpgradeInTheRollbackWindowAsync(string directory, string rollbackWindow)
    {
        string control = Path.Combine(directory, "control.sock");
        var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}", $"--Handoff:RollbackWindow={rollbackWindow}"]);
        try
        {
            int first = server.CurrentPid;
            var upgrading = ToolRun.RunAsync(["upgrade", "--control", control, "--timeout", "100s"]);
            await server.WaitUntilAsync(() => server.CurrentPid is not 0 && server.CurrentPid != first, ServerProcess.StartTimeout, "the new generation to take over");
            int second = server.CurrentPid;
            server.Track(second);
            var waiting = ToolRun.RunAsync(["upgrade", "--control", control, "--timeout", "100s"]);
            await server.WaitForOutputAsync($"(pid {second}): upgrade asked for while");
            return (server, control, first, second, upgrading, waiting);
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    // Waits until the serving generation was started after the last request (so it runs the
    // build on disk then) and serves for good: its parent logged that it is superseded by it,
    // which it does only once the rollback window has passed.
    private static async Task<int> WaitForGenerationStartedAfterAsync(Func<int> serving, double uptime, Action<int> track, Func<string> output)
    {
        var deadline = DateTime.UtcNow + Settle;
        while (DateTime.UtcNow < deadline)
        {
            int pid = serving();
            if (pid > 0)
            {
                track(pid);
                if (ProcessTable.IsRunning(pid) && StartedAt(pid) > uptime && output().Contains($"(pid {pid}) serves", StringComparison.Ordinal))
                {
                    return pid;
                }
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"no generation started after the last signal serves within {Settle.TotalSeconds} s (serving: pid {serving()}):\n{output()}");
    }

    private static int ServingPid(SupervisedServer server)
    {
        try
        {
            var status = server.StatusAsync().GetAwaiter().GetResult();
            return status.GetProperty("state").GetString() == "serving" ? status.GetProperty("pid").GetInt32() : 0;
        }
        catch (InvalidOperationException)
        {
            return 0;
        }
    }

    // Seconds since boot, as /proc/uptime says, and a process's start in the same clock.
    private static double Uptime() =>
        double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture);

    private static double StartedAt(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[19], CultureInfo.InvariantCulture) / 100.0; // field 22, in clock ticks (USER_HZ = 100)
        }
        catch (IOException)
        {
            return 0;
        }
    }
}
