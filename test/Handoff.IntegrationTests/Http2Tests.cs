using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>HTTP/2 across upgrades: h2c and h2 over TLS, under a load that reconnects after
/// GOAWAY and never retries a stream.</summary>
public sealed class Http2Tests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Upgrade_TenTimesUnderHttp2Load_NoStreamRefusedOrFailed(bool tls)
    {
        string directory = TestAssets.CreateTempDirectory();
        string[] arguments = tls
            ? TestCertificate.HttpsEndpointArguments(CreateCertificate(directory))
            : ["--Kestrel:EndpointDefaults:Protocols=Http2"];
        await using var server = await HelloSleepServer.StartAsync(urls: tls ? "" : null, arguments: arguments, directory: directory);
        var load = new Http2LoadClient(server.EndPoint, connections: 32, tls);
        var pids = new List<int> { server.CurrentPid };
        try
        {
            for (int i = 0; i < 10; i++)
            {
                await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
                var (oldPid, newPid, exitCode) = await server.UpgradeAsync();
                Assert.True(exitCode is 0 or null, $"generation pid {oldPid} exited with {exitCode}");
                pids.Add(newPid);
            }

            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
        }
        finally
        {
            long goAways = load.GoAways;
            long connections = load.Connections;
            var report = await load.StopAsync();
            Assert.True(report.Failures.Count == 0, $"{report}\n{goAways} GOAWAY frames, {connections} connections");

            // The load really crossed the upgrades: the drains sent GOAWAY and the clients
            // reconnected to the newest generation.
            Assert.True(goAways >= 32 * 10, $"{goAways} GOAWAY frames");
            Assert.True(connections >= 32 * 11, $"{connections} connections");
            Assert.Contains(pids[^1], report.Pids);
        }
    }

    private static string CreateCertificate(string directory)
    {
        string pfx = Path.Combine(directory, "server.pfx");
        TestCertificate.WritePfx(pfx);
        return pfx;
    }
}
