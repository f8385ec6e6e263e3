using Handoff.Testing;
namespace Handoff.IntegrationTests;

/// <summary>Upgrades of a real TestServer process by SIGUSR2, under real load.</summary>
public sealed class UpgradeTests
{
    [Fact]
    public async Task Upgrade_LongRequestInFlight_CompletesOnOldPidThenOldExits()
    {
        // The seeds' demo as README walks through it, on the sample a user reads.
        await using var server = await ServerProcess.StartAsync(command: [TestAssets.HelloSleepAppHost]);
        int oldPid = server.CurrentPid;

        var longRequest = await server.StartSlowRequestAsync(3);
        ServerProcess.Signal(oldPid, 12);
        await server.WaitUntilAsync(() => server.CurrentPid != oldPid, ServerProcess.StartTimeout, "the new generation");
        int newPid = server.CurrentPid;
        server.Track(newPid);

        // The pid file changes when the new generation is ready; the old one stops accepting a
        // moment later. From then on every new connection reaches the new generation.
        await server.WaitUntilAsync(() => server.Output.Contains($"Pid {oldPid} stopped accepting", StringComparison.Ordinal), TimeSpan.FromSeconds(30), "the old generation to stop accepting");
        Assert.Equal(newPid, await server.GetPidAsync());
        Assert.True(ProcessTable.IsRunning(oldPid), "the old generation must wait for its request in flight");

        Assert.Equal(oldPid, await longRequest);
        Assert.Equal(0, await server.WaitForExitAsync(oldPid, TimeSpan.FromSeconds(30)));
        Assert.Equal(newPid, await server.GetPidAsync());
    }

    [Fact]
    public async Task Upgrade_WhileOlderGenerationStillDrains_Succeeds()
    {
        await using var server = await ServerProcess.StartAsync();
        int first = server.CurrentPid;
        var slow = await server.StartSlowRequestAsync(12); // outlasts two upgrades with their rollback windows

        int second = await server.UpgradeWithoutWaitingForExitAsync();
        Assert.True(ProcessTable.IsRunning(first), "generation 1 still drains its slow request");
        int third = await server.UpgradeWithoutWaitingForExitAsync();
        Assert.True(ProcessTable.IsRunning(first), "a slow request in generation 1 must not block the next deploy");

        Assert.Equal(first, await slow);
        Assert.Equal(0, await server.WaitForExitAsync(first, TimeSpan.FromSeconds(30)));
        // Generation 2 exits while its parent, generation 1, still runs: generation 1 reaps it,
        // so its exit code is not ours to see. It must be gone, not a zombie.
        await server.WaitForExitAsync(second, TimeSpan.FromSeconds(30));
        Assert.Null(ProcessTable.State(second));
        Assert.Equal(third, await server.GetPidAsync());
    }


    [SlowFact]
    [Trait("Category", "Slow")]
    public Task Upgrade_TenTimesUnderKeepAliveLoad_ZeroFailedRequests() => Upgrade_RepeatedlyUnderLoad_ZeroFailedRequests(keepAlive: true, times: 10);

    [Theory]
    [InlineData(true, 5)] // ten times: the slow scenario above
    [InlineData(false, 5)] // bench/run upgrades ten times under this load (close)
    public async Task Upgrade_RepeatedlyUnderLoad_ZeroFailedRequests(bool keepAlive, int times)
    {
        // The load runs through each rollback window; half a second of it is as good as two.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=500ms"]);
        var (report, pids) = await server.UpgradeUnderLoadAsync(new LoadClient(server.EndPoint, connections: 32, keepAlive), times);

        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.Contains(pids[^1], report.Pids);
        Assert.All(pids.SkipLast(1), pid => Assert.Null(ProcessTable.State(pid)));
    }

    [Fact]
    public async Task Upgrade_TenTimes_ServingProcessKeepsSameFdCount()
    {
        // Generation 1 carries whatever its starter leaked to it (Process.Start passes on the test
        // host's stray descriptors); from generation 2 on a generation gets exactly stdin, stdout,
        // stderr and what Handoff hands over, so that is the baseline. A short rollback window:
        // each upgrade waits for the old generation's exit, and the window is not the subject.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=200ms"]);
        await server.UpgradeAsync();
        await server.GetPidAsync();
        var firstFds = await SettledFdsAsync(server.CurrentPid);
        int before = firstFds.Count;

        // A leak of one descriptor per upgrade shows after the first; ten make a slow one show too.
        for (int i = 0; i < 9; i++)
        {
            await server.UpgradeAsync();
        }

        await server.GetPidAsync();

        var lastFds = await SettledFdsAsync(server.CurrentPid);

        Assert.True(before == lastFds.Count, $"generation 2 had {before} fds, generation 11 has {lastFds.Count}.\nfirst:\n{string.Join("\n", firstFds)}\nlast:\n{string.Join("\n", lastFds)}");
        Assert.Empty(ProcessTable.Descendants(server.CurrentPid));
    }

    // The probe's connection closes a moment after its response, and the runtime opens files
    // lazily: read the table until it has not changed for half a second (at most 10 s).
    private static async Task<IReadOnlyList<string>> SettledFdsAsync(int pid)
    {
        var fds = ProcessTable.OpenFds(pid);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        var stableSince = DateTime.UtcNow;
        while (DateTime.UtcNow < deadline && DateTime.UtcNow - stableSince < TimeSpan.FromMilliseconds(500))
        {
            await Task.Delay(50);
            var now = ProcessTable.OpenFds(pid);
            if (now.Count != fds.Count)
            {
                stableSince = DateTime.UtcNow;
            }

            fds = now;
        }

        return fds;
    }
}
