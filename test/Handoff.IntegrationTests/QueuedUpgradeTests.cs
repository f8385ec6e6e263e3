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

    [Fact]
    public async Task Sigusr2_EverySecondForTenSeconds_UnderLoad_TheLastRequestIsServed_NoRequestFails()
    {
        // The default RollbackWindow (2 s): most signals land during an upgrade or a window.
        await using var server = await HelloSleepServer.StartAsync();
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));

        double lastSignal = 0;
        for (int i = 0; i < 10; i++)
        {
            int pid = server.CurrentPid;
            server.Track(pid);
            lastSignal = Uptime();
            HelloSleepServer.Signal(pid, 12);
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

    [Fact]
    public async Task Supervisor_Sigusr2_EverySecondForTenSeconds_UnderLoad_TheLastRequestIsServed_NoRequestFails()
    {
        await using var server = await SupervisedServer.StartAsync(pidNamespace: false);
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));

        double lastSignal = 0;
        for (int i = 0; i < 10; i++)
        {
            lastSignal = Uptime();
            HelloSleepServer.Signal(server.SupervisorPid, 12);
            await Task.Delay(TimeSpan.FromSeconds(1));
        }

        int last = await WaitForGenerationStartedAfterAsync(() => ServingPid(server), lastSignal, _ => { }, () => server.Output);
        await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
        var report = await load.StopAsync();

        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.Contains(last, report.Pids);
        Assert.DoesNotContain("refused an upgrade", server.Output, StringComparison.Ordinal);
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
