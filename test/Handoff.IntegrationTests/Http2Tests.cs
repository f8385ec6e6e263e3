using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>HTTP/2 across upgrades: h2c and h2 over TLS, under a load that reconnects after
/// GOAWAY and never retries a stream.</summary>
public sealed class Http2Tests
{
    // nghttp2 over TLS (h2 by ALPN): slow (18 s); nghttp2 in cleartext and the project's own
    // client over TLS run in CI.
    [SlowFact]
    [Trait("Category", "Slow")]
    public Task Upgrade_RepeatedlyUnderHttp2Load_Nghttp2OverTls_NoStreamRefusedOrFailed() =>
        Upgrade_RepeatedlyUnderHttp2Load_NoStreamRefusedOrFailed(tls: true, nghttp2: true);

    /// <summary>Under the project's own client and under Node's http2 client, which is nghttp2:
    /// nghttp2 refuses (REFUSED_STREAM, never sent) a request it had queued when any GOAWAY
    /// arrived, so a client that sends its next request as a response ends lost some per
    /// upgrade until the first GOAWAY went just before a response's end. The project's own
    /// client never queues and never saw it.</summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task Upgrade_RepeatedlyUnderHttp2Load_NoStreamRefusedOrFailed(bool tls, bool nghttp2)
    {
        string directory = TestAssets.CreateTempDirectory();
        string[] arguments = tls
            ? TestCertificate.HttpsEndpointArguments(TestCertificate.WritePfxIn(directory))
            : ["--Kestrel:EndpointDefaults:Protocols=Http2"];

        // A short rollback window: more upgrades in less time, the same handovers. Ten with
        // nghttp2; five with the project's client, which bench/run's h2c and h2tls upgrade ten
        // times.
        int times = nghttp2 ? 10 : 5;
        arguments = [.. arguments, "--Handoff:RollbackWindow=500ms"];
        await using var server = await ServerProcess.StartAsync(urls: tls ? "" : null, arguments: arguments, directory: directory, removeDirectory: true);
        var own = nghttp2 ? null : new Http2LoadClient(server.EndPoint, connections: 32, tls);
        await using var node = nghttp2 ? NodeHttp2Load.Start(server.EndPoint, connections: 32, tls) : null;
        var (report, pids) = await server.UpgradeUnderLoadAsync((ILoad?)own ?? node!, times);
        long goAways = own?.GoAways ?? node!.GoAways;
        long connections = own?.Connections ?? node!.Connections;

        Assert.True(report.Failures.Count == 0, $"{report}\n{goAways} GOAWAY frames, {connections} connections");

        // The load really crossed the upgrades: the drains sent GOAWAY and the clients
        // reconnected to the newest generation.
        Assert.True(goAways >= 32 * times, $"{goAways} GOAWAY frames");
        Assert.True(connections >= 32 * (times + 1), $"{connections} connections");
        Assert.Contains(pids[^1], report.Pids);
    }

    [Fact]
    public async Task Upgrade_HttpsConfiguredInCode_NoStreamRefusedOrFailed()
    {
        // ListenOptions.UseHttps in Program.cs rather than Kestrel:Endpoints: the first GOAWAY
        // must sit above TLS there too.
        string directory = TestAssets.CreateTempDirectory();
        string[] arguments = ["--TestServer:HttpsInCode=" + TestCertificate.WritePfxIn(directory), "--TestServer:HttpsPassword=" + TestCertificate.Password, "--Handoff:RollbackWindow=500ms"];
        await using var server = await ServerProcess.StartAsync(urls: "", arguments: arguments, directory: directory, removeDirectory: true);
        var load = new Http2LoadClient(server.EndPoint, connections: 32, tls: true);
        var (report, pids) = await server.UpgradeUnderLoadAsync(load, times: 3);

        Assert.True(report.Failures.Count == 0, $"{report}\n{load.GoAways} GOAWAY frames, {load.Connections} connections");
        Assert.True(load.GoAways >= 32 * 3, $"{load.GoAways} GOAWAY frames");
        Assert.Contains(pids[^1], report.Pids);
    }
}
