using System.Diagnostics;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// Zero-loss termination, as a Kubernetes pod ends: on SIGTERM the health check fails at once
/// while the generation goes on accepting for Handoff:ShutdownDelay (the time the endpoint takes
/// to leave the load balancers), then drains and exits 0. The load here plays the load balancer:
/// it keeps sending (new connections, or keep-alive) for 1,000 more requests after it saw the check fail.
/// </summary>
public sealed class ShutdownDelayTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Sigterm_WithShutdownDelay_UnhealthyAtOnceAndNoRequestFails(bool keepAlive)
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:ShutdownDelay=3s"]);
        int pid = server.CurrentPid;
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive);
        LoadReport report;
        TimeSpan unhealthyAfter;
        var probes = new List<string>();
        Task<int> slow;
        long servedAfterSignal;
        try
        {
            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
            slow = await server.StartSlowRequestAsync(4); // runs into the drain

            // "At once" is measured on the server's state, not on a probe's latency (a busy
            // machine delays the probe, not the state): the generation turns unhealthy before it
            // logs that it is shutting down, so every probe sent after that line was seen must
            // get 503. A 200 before it is the signal still on its way.
            var signalled = Stopwatch.StartNew();
            ServerProcess.Signal(pid, 15);
            while (true)
            {
                bool announced = server.CountOf("(Handoff:ShutdownDelay)") > 0;
                var sent = signalled.Elapsed;
                var health = await HttpProbe.GetAsync(server.EndPoint, "/healthz", TimeSpan.FromSeconds(30));
                probes.Add($"{health.Status} sent at {sent.TotalMilliseconds:0} ms{(announced ? " (after the log line)" : "")}, answered at {signalled.Elapsed.TotalMilliseconds:0} ms");
                if (health.Status == 503)
                {
                    unhealthyAfter = signalled.Elapsed;
                    break;
                }

                Assert.Equal(200, health.Status);
                Assert.False(announced, $"healthy after the server logged that it is shutting down; probes: {string.Join("; ", probes)}");
                Assert.True(signalled.Elapsed < TimeSpan.FromSeconds(10), "the health check never failed");
            }

            // And it stays unhealthy.
            await server.WaitForOutputAsync("(Handoff:ShutdownDelay)");
            Assert.Equal(503, (await HttpProbe.GetAsync(server.EndPoint, "/healthz", TimeSpan.FromSeconds(30))).Status);

            // Still accepting and serving: the load balancer has not caught up yet.
            // The load balancer takes a moment to react: the load goes on for more requests
            // (well within the 3 s delay) before it stops.
            long atUnhealthy = load.Succeeded;
            await load.WaitForProgressAsync(1000, TimeSpan.FromSeconds(30));
            servedAfterSignal = load.Succeeded - atUnhealthy;
        }
        finally
        {
            report = await load.StopAsync();
        }

        output.WriteLine($"{report}; unhealthy seen {unhealthyAfter.TotalMilliseconds:0} ms after SIGTERM; {servedAfterSignal} served after the check failed; probes: {string.Join("; ", probes)}");
        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.True(servedAfterSignal >= 200, $"{servedAfterSignal} requests served after the check failed");
        Assert.Equal(pid, await slow.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, await server.WaitForExitAsync(pid, TimeSpan.FromSeconds(30)));
        Assert.Equal(1, server.CountOf("Handoff:ShutdownDelay"));
        Assert.Equal(0, server.CountOf("aborting"));
    }

    [Fact]
    public async Task SecondSigterm_DuringShutdownDelay_EndsItAndTheServerDrainsAndExits()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:ShutdownDelay=60s"]);
        int pid = server.CurrentPid;

        ServerProcess.Signal(pid, 15);
        await server.WaitForOutputAsync("(Handoff:ShutdownDelay)");
        Assert.Equal(pid, await server.GetPidAsync()); // still serving
        ServerProcess.Signal(pid, 15);

        // Long before the 60 s delay would have ended.
        Assert.Equal(0, await server.WaitForExitAsync(pid, TimeSpan.FromSeconds(30)));
        Assert.Equal(1, server.CountOf("a second shutdown signal ends Handoff:ShutdownDelay"));
    }
}
