using Handoff.Testing;
namespace Handoff.IntegrationTests;

/// <summary>SIGTERM and SIGINT: the same graceful drain as after an upgrade, then exit 0.</summary>
public sealed class ShutdownTests
{
    [Theory]
    [InlineData(15)]
    [InlineData(2)]
    public async Task Signal_UnderLoad_InFlightRequestsCompleteThenExitZero(int signal)
    {
        await using var server = await ServerProcess.StartAsync();
        int pid = server.CurrentPid;
        Assert.False(ProcessTable.Ignores(pid, signal), ProcessTable.IgnoredSignalMessage(pid, signal));
        var load = new LoadClient(server.EndPoint, connections: 8, keepAlive: true);
        await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
        var slow = new List<Task<int>>();
        for (int i = 0; i < 4; i++)
        {
            slow.Add(await server.StartSlowRequestAsync(2));
        }

        ServerProcess.Signal(pid, signal);
        foreach (var request in slow)
        {
            Assert.Equal(pid, await request);
        }

        Assert.Equal(0, await server.WaitForExitAsync(pid, TimeSpan.FromSeconds(30)));
        var report = await load.StopAsync();

        // Once the listener is closed, new connections are refused: those are expected. What
        // must not happen is a request that reached the server and got no response.
        var lost = report.Failures.Where(f => !f.Contains("Connection refused", StringComparison.Ordinal)).ToList();
        Assert.True(lost.Count == 0, report.ToString());
        Assert.False(File.Exists(server.PidFile), "the last generation removes its pid file");
    }
}
