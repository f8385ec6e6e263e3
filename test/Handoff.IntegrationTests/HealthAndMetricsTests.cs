using System.Globalization;
using System.Text.RegularExpressions;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>What an operator sees: the health check and the meter <c>Handoff</c> of real
/// generations through a failed and a successful upgrade and a stop. TestServer's /metrics shows
/// what an in-process MeterListener (as an exporter uses) received; its metrics log keeps the
/// records of generations that have exited.</summary>
public sealed partial class HealthAndMetricsTests
{
    [Fact]
    public async Task FailedUpgradeThenUpgradeThenStop_HealthAndMetricsTellWhatHappened()
    {
        string directory = TestAssets.CreateTempDirectory();
        string metricsLog = Path.Combine(directory, "metrics.log");
        string broken = Path.Combine(directory, "broken");
        await using var server = await ServerProcess.StartAsync(
            arguments: ["--Handoff:RollbackWindow=500ms", "--Handoff:DrainIdleTimeout=20s", "--Handoff:DrainTimeout=25s", "--Handoff:MoveConnections=false"],
            environment: new Dictionary<string, string> { ["TESTSERVER_METRICS_LOG"] = metricsLog, ["TESTSERVER_BREAK_FAILSTART"] = broken },
            directory: directory,
            removeDirectory: true);
        int first = server.CurrentPid;
        Assert.Equal(200, (await HttpProbe.GetAsync(server.EndPoint, "/healthz", TimeSpan.FromSeconds(30))).Status);
        Assert.Equal(1, (await MetricsAsync(server))["handoff.generation"]);

        // A broken build: the generation that tried counts the failure, and serves on.
        File.WriteAllText(broken, "");
        ServerProcess.Signal(first, 12);
        await server.WaitForOutputAsync($"(pid {first}): upgrade to pid");
        await server.WaitUntilAsync(() => FailedRegex().IsMatch(server.Output), ServerProcess.StartTimeout, "the upgrade to fail");
        server.Track(int.Parse(FailedRegex().Match(server.Output).Groups["new"].Value, CultureInfo.InvariantCulture));
        File.Delete(broken);
        var afterFailure = await MetricsAsync(server);
        Assert.Equal(1, afterFailure["handoff.upgrades{error.type=\"start_failed\",handoff.upgrade.result=\"failed\"}"]);
        Assert.Equal(200, (await HttpProbe.GetAsync(server.EndPoint, "/healthz", TimeSpan.FromSeconds(30))).Status);

        // A keep-alive connection to the first generation, kept across the upgrade (drained, not
        // moved: a moved one would be answered by the new generation).
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var kept = await HttpProbe.ConnectAsync(server.EndPoint, cts.Token);
        Assert.Equal(200, (await kept.GetAsync("/healthz", keepAlive: true, cts.Token)).Status);

        int second = await server.UpgradeWithoutWaitingForExitAsync();

        // The new generation is healthy and counts the upgrade that made it; the old one,
        // still draining, answers unhealthy and closes the connection.
        Assert.Equal(200, (await HttpProbe.GetAsync(server.EndPoint, "/healthz", TimeSpan.FromSeconds(30))).Status);
        var afterUpgrade = await MetricsAsync(server);
        Assert.Equal(2, afterUpgrade["handoff.generation"]);
        Assert.Equal(1, afterUpgrade["handoff.upgrades{handoff.upgrade.result=\"succeeded\"}"]);
        Assert.Equal(1, afterUpgrade["handoff.draining_generations"]);
        var old = await kept.GetAsync("/healthz", keepAlive: true, cts.Token);
        Assert.Equal(503, old.Status);
        Assert.True(old.ConnectionClose);
        Assert.Equal("Unhealthy", old.Body);
        kept.Dispose();
        Assert.Equal(0, await server.WaitForExitAsync(first, ServerProcess.StartTimeout));
        Assert.Equal(0, (await MetricsAsync(server))["handoff.draining_generations"]);

        ServerProcess.Signal(second, 15);
        Assert.Equal(0, await server.WaitForExitAsync(second, ServerProcess.StartTimeout));

        // What each generation recorded, including the first's, which has exited.
        string[] log = File.ReadAllLines(metricsLog);
        Assert.Contains(log, l => l.StartsWith($"{first} handoff.upgrade.duration{{error.type=\"start_failed\",handoff.upgrade.result=\"failed\"}} ", StringComparison.Ordinal));
        Assert.Contains(log, l => l.StartsWith($"{first} handoff.upgrade.duration{{handoff.upgrade.result=\"succeeded\"}} ", StringComparison.Ordinal));
        Assert.Contains(log, l => l.StartsWith($"{first} handoff.drain.duration{{handoff.drain.reason=\"upgrade\",handoff.drain.result=\"completed\"}} ", StringComparison.Ordinal));
        Assert.Contains(log, l => l.StartsWith($"{second} handoff.drain.duration{{handoff.drain.reason=\"shutdown\",handoff.drain.result=\"completed\"}} ", StringComparison.Ordinal));
        Assert.DoesNotContain(log, l => l.Contains("aborted_connections", StringComparison.Ordinal));
    }

    private static async Task<Dictionary<string, double>> MetricsAsync(ServerProcess server)
    {
        var response = await HttpProbe.GetAsync(server.EndPoint, "/metrics", TimeSpan.FromSeconds(30));
        Assert.Equal(200, response.Status);
        return response.Body.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' '))
            .ToDictionary(parts => string.Join(' ', parts[..^1]), parts => double.Parse(parts[^1], CultureInfo.InvariantCulture), StringComparer.Ordinal);
    }

    [GeneratedRegex(@"upgrade to pid (?<new>\d+) failed")]
    private static partial Regex FailedRegex();
}
