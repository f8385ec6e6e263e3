using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>HTTPS endpoints from Kestrel's configuration, with certificate files: upgrades
/// under load, and a certificate replaced under load, which makes Kestrel reload its
/// configuration and rebind the endpoint.</summary>
public sealed class TlsTests
{
    private const int SIGUSR2 = 12;

    [Fact]
    public async Task Upgrade_FiveTimesUnderHttpsKeepAliveLoad_ZeroFailedRequests()
    {
        string directory = TestAssets.CreateTempDirectory();
        string pfx = TestCertificate.WritePfxIn(directory);
        await using var server = await ServerProcess.StartAsync(urls: "", arguments: [.. TestCertificate.HttpsEndpointArguments(pfx), "--Handoff:RollbackWindow=500ms"], directory: directory, removeDirectory: true);
        var (report, pids) = await server.UpgradeUnderLoadAsync(new LoadClient(server.EndPoint, connections: 32, keepAlive: true, tls: true), times: 5); // ten: bench/run's https

        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.Contains(pids[^1], report.Pids);
    }

    [Fact]
    public async Task CertificateReplacedUnderLoad_SameSocketNothingRefusedOrReset_NewCertificateServed()
    {
        string directory = TestAssets.CreateTempDirectory();
        string pfx = Path.Combine(directory, "server.pfx");
        string first = TestCertificate.WritePfx(pfx);
        await using var server = await ServerProcess.StartAsync(urls: "", arguments: TestCertificate.HttpsEndpointArguments(pfx), directory: directory, removeDirectory: true);
        int pid = server.CurrentPid;
        ulong socket = ProcessTable.ListeningSocketInode(server.EndPoint.Port);
        Assert.NotEqual(0UL, socket);
        var load = new LoadClient(server.EndPoint, connections: 32, keepAlive: true, tls: true);
        LoadReport report;
        string second;
        try
        {
            await load.WaitForProgressAsync(500, TimeSpan.FromSeconds(30));
            second = TestCertificate.WritePfx(pfx, "CN=localhost, O=rotated");

            // Kestrel sees the file change and reloads; the endpoint's connections drain, and
            // the endpoint is bound again with the new certificate on the same socket.
            await server.WaitUntilAsync(() => load.Certificates.Contains(second), TimeSpan.FromSeconds(30), "a connection to get the new certificate");

            await load.WaitForProgressAsync(500, TimeSpan.FromSeconds(30));
        }
        finally
        {
            report = await load.StopAsync();
        }

        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.Contains(first, load.Certificates);
        Assert.Contains(second, load.Certificates);
        Assert.Equal(socket, ProcessTable.ListeningSocketInode(server.EndPoint.Port));
        Assert.Equal(pid, server.CurrentPid);
        Assert.DoesNotContain("address already in use", server.Output, StringComparison.OrdinalIgnoreCase);
        await server.WaitForOutputAsync($"Pid {pid} drained the connections of 127.0.0.1:{server.EndPoint.Port} in");
    }

    [Fact]
    public async Task CertificateReplacedWhileDraining_OldGenerationFinishesItsRequest_AndDoesNotRebind()
    {
        var (server, pfx, probe, slow) = await StartWithSlowRequestAsync(15);
        await using var _ = server;
        using var __ = probe;
        int old = server.CurrentPid;

        ServerProcess.Signal(old, SIGUSR2);
        await server.WaitForOutputAsync($"Pid {old} stopped accepting; draining");
        server.Track(server.CurrentPid);
        TestCertificate.WritePfx(pfx, "CN=localhost, O=rotated");

        // Kestrel notices the replaced file within a few seconds. Alone, it would then abort the
        // request 5 s later, and bind the endpoint again beside the generation that serves it.
        var response = await slow;
        Assert.Equal(200, response.Status);
        Assert.Equal(old, response.Pid);
        Assert.Contains($"Pid {old}: a configuration reload rebinds", server.Output, StringComparison.Ordinal);
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
        Assert.DoesNotContain("address already in use", server.Output, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Unable to bind", server.Output, StringComparison.Ordinal);
        Assert.Equal(server.CurrentPid, (await HttpProbe.GetAsync(server.EndPoint, "/?sleep=0", TimeSpan.FromSeconds(10), tls: true)).Pid);
    }

    // Slow (it waits out a reload's 5 s drain and a long request); the reload and the upgrade
    // are each covered in CI by CertificateReplacedUnderLoad_... and CertificateReplacedWhileDraining_...
    [SlowFact]
    [Trait("Category", "Slow")]
    public async Task CertificateReplacedThenUpgrade_RequestOnTheReloadedEndpointFinishes()
    {
        var (server, pfx, probe, slow) = await StartWithSlowRequestAsync(20);
        await using var _ = server;
        using var __ = probe;
        int old = server.CurrentPid;

        // The reload waits for the request as a serving generation does (a few seconds); the
        // upgrade that comes meanwhile makes it wait as a draining one does (DrainTimeout).
        TestCertificate.WritePfx(pfx, "CN=localhost, O=rotated");
        await server.WaitForOutputAsync($"Pid {old}: a configuration reload rebinds", timeout: TimeSpan.FromSeconds(30));
        ServerProcess.Signal(old, SIGUSR2);

        var response = await slow;
        Assert.Equal(200, response.Status);
        Assert.Equal(old, response.Pid);
        server.Track(server.CurrentPid);
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
        Assert.DoesNotContain($"connections of 127.0.0.1:{server.EndPoint.Port} still open", server.Output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--Kestrel:Endpoints:Https:Protocols=Http1AndHttp2AndHttp3", "Kestrel:Endpoints:Https:Protocols (https://127.0.0.1:0) is 'Http1AndHttp2AndHttp3'")]
    [InlineData("--Kestrel:EndpointDefaults:Protocols=Http3", "Kestrel:EndpointDefaults:Protocols is 'Http3'")]
    public async Task Start_Http3Endpoint_ExitsWithConfigErrorNamingIt(string protocols, string named)
    {
        using var dir = new TempDirectory();
        string pfx = TestCertificate.WritePfxIn(dir.Path);
        var info = new System.Diagnostics.ProcessStartInfo(TestAssets.TestServerAppHost)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (string argument in TestCertificate.HttpsEndpointArguments(pfx).Append(protocols))
        {
            info.ArgumentList.Add(argument);
        }

        using var server = System.Diagnostics.Process.Start(info)!;
        var output = server.StandardOutput.ReadToEndAsync();
        string error = await server.StandardError.ReadToEndAsync();
        await server.WaitForExitAsync();

        Assert.Equal(78, server.ExitCode);
        Assert.Contains(named + ", which enables HTTP/3. Handoff cannot hand HTTP/3 (QUIC over UDP) over", error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error + await output, StringComparison.Ordinal);
    }

    // An HTTPS server from configuration with a request of the given length running on it.
    private static async Task<(ServerProcess Server, string Pfx, HttpProbe Probe, Task<HttpProbeResponse> Slow)> StartWithSlowRequestAsync(int seconds)
    {
        string directory = TestAssets.CreateTempDirectory();
        string pfx = TestCertificate.WritePfxIn(directory);
        var server = await ServerProcess.StartAsync(urls: "", arguments: TestCertificate.HttpsEndpointArguments(pfx), directory: directory, removeDirectory: true);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var probe = await HttpProbe.ConnectAsync(server.EndPoint, timeout.Token, tls: true);
        var slow = probe.GetAsync($"/?sleep={seconds}", keepAlive: true, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(60));
        await server.WaitForOutputAsync($"TestServer pid {server.CurrentPid} received a request sleeping {seconds} s");
        return (server, pfx, probe, slow);
    }
}
