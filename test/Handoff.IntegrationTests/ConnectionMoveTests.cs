using System.Net;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// Connections that move (Handoff:MoveConnections, issue 23), with real processes: idle
/// keep-alive connections of a client that never reconnects stay the same TCP connections across
/// upgrades, and their next requests are answered by the new generation.
/// </summary>
public sealed class ConnectionMoveTests(ITestOutputHelper output)
{
    private const int Connections = 16;

    [Fact]
    public async Task Upgrade_ByDefault_IdleKeepAliveConnectionsMove_TheSameSocketsAnsweredByEachNewGeneration()
    {
        using var directory = new TempDirectory();
        string control = Path.Combine(directory.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=0s", $"--Handoff:ControlSocket={control}"]);
        var sockets = new List<HttpProbe>();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            int pid = server.CurrentPid;
            for (int i = 0; i < Connections; i++)
            {
                sockets.Add(await HttpProbe.ConnectAsync(server.EndPoint, limit.Token));
                Assert.Equal(pid, await RequestAsync(sockets[i], limit.Token));
            }

            var ports = sockets.Select(s => ((IPEndPoint)s.LocalEndPoint!).Port).ToList();
            for (int upgrade = 1; upgrade <= 3; upgrade++)
            {
                int old = pid;
                pid = await server.UpgradeWithoutWaitingForExitAsync();

                // The old generation has nothing left to drain once its connections have moved.
                Assert.Equal(0, await server.WaitForExitAsync(old, ServerProcess.StartTimeout));
                foreach (var socket in sockets)
                {
                    // No FIN or RST arrived: the same connection carries the next request.
                    Assert.False(socket.HasUnaskedInput, "the connection was closed");
                    Assert.Equal(pid, await RequestAsync(socket, limit.Token));
                }

                output.WriteLine($"upgrade {upgrade}: {Connections} connections moved from pid {old} to pid {pid}");
            }

            Assert.Equal(ports, sockets.Select(s => ((IPEndPoint)s.LocalEndPoint!).Port).ToList());
            Assert.Equal(3, server.CountOf($"{Connections} adopted, 0 closed"));

            // handoff status, asked the newest generation, says what came to it.
            var status = await ToolRun.RunAsync(["status", "--control", control]);
            Assert.True(status.ExitCode == 0, status.ToString());
            Assert.Contains($"moved here at the last upgrade: {Connections} connections adopted, 0 closed, 0 passed on", status.Output, StringComparison.Ordinal);
            var json = await ToolRun.RunAsync(["status", "--control", control, "--json"]);
            using var document = System.Text.Json.JsonDocument.Parse(json.Output);
            var movedHere = document.RootElement.GetProperty("movedHere");
            Assert.Equal((Connections, 0, 0, true), (movedHere.GetProperty("adopted").GetInt32(), movedHere.GetProperty("closed").GetInt32(), movedHere.GetProperty("passedOn").GetInt32(), movedHere.GetProperty("ended").GetBoolean()));

            // Each old generation learnt from the new one what became of them.
            await server.WaitForOutputAsync($"moved {Connections} connections to the new generation (it took {Connections} and closed 0)", 3);
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
            output.WriteLine(server.Output);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Upgrade_TlsOrHttp2Connections_DrainAsBefore_CountedAsNotMoving(bool tls)
    {
        // Moving is on (the default): HTTPS keep-alive connections and h2c connections cannot
        // move, and drain as they always did: no request fails, the old generation says none
        // moved and why.
        const int Clients = 16;
        string directory = TestAssets.CreateTempDirectory();
        string[] arguments = tls
            ? TestCertificate.HttpsEndpointArguments(TestCertificate.WritePfxIn(directory))
            : ["--Kestrel:EndpointDefaults:Protocols=Http2"];
        await using var server = await ServerProcess.StartAsync(urls: tls ? "" : null, arguments: [.. arguments, "--Handoff:RollbackWindow=500ms"], directory: directory, removeDirectory: true);
        ILoad load = tls ? new LoadClient(server.EndPoint, connections: Clients, keepAlive: true, tls: true) : new Http2LoadClient(server.EndPoint, connections: Clients, tls: false);
        var (report, pids) = await server.UpgradeUnderLoadAsync(load, times: 1);

        Assert.True(report.Failures.Count == 0, report.ToString());
        var moved = await server.WaitForOutputAsync(new System.Text.RegularExpressions.Regex($@"\(pid {pids[0]}\) moved (\d+) connections to the new generation \([^)]*\); of (\d+) asked to move, (\d+) closed instead; (\d+) could not move"));
        Assert.Equal("0", moved.Groups[1].Value);
        Assert.Equal("0", moved.Groups[2].Value);
        Assert.True(int.Parse(moved.Groups[4].Value, System.Globalization.CultureInfo.InvariantCulture) >= Clients, moved.Value);
    }

    [Fact]
    public async Task TenUpgrades_UnderAKeepAliveLoad_EveryClientKeepsItsConnection_NoneFails()
    {
        const int Clients = 64;
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:MoveConnections=true", "--Handoff:RollbackWindow=0s"]);
        var load = new LoadClient(server.EndPoint, Clients, keepAlive: true);
        LoadReport report;
        IReadOnlyList<int> pids;
        try
        {
            (report, pids) = await server.UpgradeUnderLoadAsync(load, 10);
            output.WriteLine($"{report}; {load.Connects} connections opened");
        }
        finally
        {
            output.WriteLine(server.Output);
        }

        // Clients that never retry: not one request failed, and not one client had to open a
        // second connection, yet every generation answered them.
        Assert.Empty(report.Failures);
        Assert.Equal(Clients, load.Connects);
        Assert.Equal(pids.Order(), report.Pids.Order());
        Assert.Equal(10, server.CountOf($"{Clients} adopted, 0 closed"));
    }

    [Fact]
    public async Task Upgrade_TenThousandIdleKeepAliveConnections_AllMove_NoneReconnects()
    {
        const int Many = 10_000;
        IdleConnectionsTests.RaiseOpenFileLimit(Many + 2048);
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:MoveConnections=true", "--Handoff:RollbackWindow=0s"]);
        int first = server.CurrentPid;
        var sockets = new System.Net.Sockets.Socket[Many];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = 64 };
        try
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, Many), parallel, async (i, token) =>
            {
                sockets[i] = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await sockets[i].ConnectAsync(server.EndPoint, token);
                Assert.Equal(first, await IdleConnectionsTests.RequestAsync(sockets[i], keepAlive: true, token));
            });

            var upgraded = System.Diagnostics.Stopwatch.StartNew();
            int second = await server.UpgradeWithoutWaitingForExitAsync();
            var committed = upgraded.Elapsed;
            Assert.Equal(0, await server.WaitForExitAsync(first, ServerProcess.StartTimeout));
            var exited = upgraded.Elapsed;
            await server.WaitForOutputAsync($"moved {Many} connections to the new generation (it took {Many} and closed 0)");
            output.WriteLine($"{Many} idle connections: committed {committed.TotalSeconds:0.00} s after the signal, the old generation exited {(exited - committed).TotalSeconds:0.00} s later (the test's clock)");

            // The same connections, none closed, each answered by the new generation.
            await Parallel.ForEachAsync(Enumerable.Range(0, Many), parallel, async (i, token) =>
            {
                Assert.False(sockets[i].Poll(TimeSpan.Zero, System.Net.Sockets.SelectMode.SelectRead), $"connection {i} was closed");
                Assert.Equal(second, await IdleConnectionsTests.RequestAsync(sockets[i], keepAlive: true, token));
            });
            Assert.Equal(1, server.CountOf($"{Many} adopted, 0 closed"));
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }

            output.WriteLine(server.Output.Length > 20_000 ? server.Output[^20_000..] : server.Output);
        }
    }

    // A keep-alive request whose answer keeps the connection alive: the pid that answered.
    internal static async Task<int> RequestAsync(HttpProbe probe, CancellationToken cancellationToken)
    {
        var response = await probe.GetAsync("/?sleep=0", keepAlive: true, cancellationToken);
        Assert.Equal(200, response.Status);
        Assert.False(response.ConnectionClose);
        return response.Pid;
    }
}
