using System.Net;
using System.Net.Sockets;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>IPv4, IPv6 and Unix domain listeners together are handed over, twice, and the Unix
/// socket path survives every old generation's exit.</summary>
public sealed class ListenerKindsTests
{
    [Fact]
    public async Task Upgrade_TcpV4V6AndUnixListeners_AllServeNewGeneration()
    {
        using var temp = new TempDirectory(); // disposed after the server: declared first
        string directory = temp.Path;
        string socketPath = Path.Combine(directory, "hello.sock");
        int v6Port = FreePort(IPAddress.IPv6Loopback);
        await using var server = await ServerProcess.StartAsync(
            urls: $"http://127.0.0.1:0;http://[::1]:{v6Port};http://unix:{socketPath}",
            directory: directory);
        var endPoints = new EndPoint[] { server.EndPoint, new IPEndPoint(IPAddress.IPv6Loopback, v6Port), new UnixDomainSocketEndPoint(socketPath) };
        var socketInode = new FileInfo(socketPath).Exists ? GetInode(socketPath) : 0;

        foreach (var endPoint in endPoints)
        {
            Assert.Equal(server.FirstPid, await server.GetPidAsync(endPoint: endPoint));
        }

        for (int i = 0; i < 2; i++)
        {
            var (oldPid, newPid, _) = await server.UpgradeAsync();
            Assert.Null(ProcessTable.State(oldPid));
            foreach (var endPoint in endPoints)
            {
                Assert.Equal(newPid, await server.GetPidAsync(endPoint: endPoint));
            }

            // The inherited sockets sit at 3, 4, 5 with FD_CLOEXEC set again: they do not leak
            // into processes the new generation starts.
            var fds = ProcessTable.OpenFds(newPid);
            foreach (int fd in new[] { 3, 4, 5 })
            {
                Assert.Contains(fds, f => f.StartsWith($"{fd} -> socket:", StringComparison.Ordinal));
                Assert.True(ProcessTable.IsCloseOnExec(newPid, fd), $"fd {fd} of pid {newPid} lacks FD_CLOEXEC");
            }

            Assert.True(File.Exists(socketPath), "the old generation must not unlink the Unix socket path");
            Assert.Equal(socketInode, GetInode(socketPath));
        }
    }

    [Fact]
    public async Task Upgrade_NewBuildDropsAPort_TheOldGenerationServesItUntilTheCommit_ThenItIsRefused()
    {
        using var temp = new TempDirectory();
        string listeners = Path.Combine(temp.Path, "listeners");
        File.WriteAllText(listeners, "2");
        await using var server = await ServerProcess.StartAsync(
            arguments: ["--Handoff:RollbackWindow=3s"],
            environment: new Dictionary<string, string> { ["TESTSERVER_LISTENERS_FILE"] = listeners });
        var ports = System.Text.RegularExpressions.Regex.Matches(server.Output, @"Now listening on: http://127\.0\.0\.1:(\d+)")
            .Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).Distinct().ToList();
        Assert.Equal(2, ports.Count);
        var kept = new IPEndPoint(IPAddress.Loopback, ports[0]);
        var dropped = new IPEndPoint(IPAddress.Loopback, ports[1]);
        int first = server.CurrentPid;
        var load = new LoadClient(kept, connections: 4, keepAlive: true);
        await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));

        // The next build listens on the first port only.
        File.WriteAllText(listeners, "1");
        ServerProcess.Signal(first, 12);
        await server.WaitForOutputAsync($"keeps accepting on 127.0.0.1:{ports[1]} until the handover commits");

        // Within the rollback window the old generation still serves the dropped port, at
        // once: new connections neither wait unserved in its queue nor get reset later.
        var onDropped = new LoadClient(dropped, connections: 2, keepAlive: false);
        LoadReport droppedReport;
        try
        {
            await onDropped.WaitForProgressAsync(20, TimeSpan.FromSeconds(30));
        }
        finally
        {
            droppedReport = await onDropped.StopAsync();
        }

        Assert.True(droppedReport.Failures.Count == 0, droppedReport.ToString());
        Assert.Equal([first], droppedReport.Pids);

        // After the commit the port is closed for good: a connection is refused, not queued.
        await server.WaitForOutputAsync($"(pid {first}) is superseded");
        using (var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            var refused = await Assert.ThrowsAsync<SocketException>(async () => await probe.ConnectAsync(dropped));
            Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
        }

        await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
        var report = await load.StopAsync();
        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.NotEqual(first, server.CurrentPid);
        server.Track(server.CurrentPid);
    }

    [Fact]
    public async Task UnixSocketPath_DeletedByHand_IsBoundAgainAtTheNextUpgradeAndRemovedAtTheFinalStop()
    {
        using var temp = new TempDirectory(); // disposed after the server: declared first
        string directory = temp.Path;
        string socketPath = Path.Combine(directory, "hello.sock");
        await using var server = await ServerProcess.StartAsync(urls: $"http://127.0.0.1:0;http://unix:{socketPath}", directory: directory);
        var unix = new UnixDomainSocketEndPoint(socketPath);
        File.Delete(socketPath);
        await Assert.ThrowsAnyAsync<SocketException>(() => server.GetPidAsync(endPoint: unix));

        var (_, next, _) = await server.UpgradeAsync();

        Assert.Equal(next, await server.GetPidAsync(endPoint: unix));
        await server.WaitForOutputAsync($"The Unix socket path {socketPath} of inherited listener");

        ServerProcess.Signal(next, 15);
        Assert.Equal(0, await server.WaitForExitAsync(next, TimeSpan.FromSeconds(30)));
        Assert.False(File.Exists(socketPath), "the last generation leaves no socket file behind");
    }

    [Fact]
    public async Task UnixSocketPath_AnotherFileAtThePath_IsNeverDeleted()
    {
        using var temp = new TempDirectory(); // disposed after the server: declared first
        string directory = temp.Path;
        string path = Path.Combine(directory, "data.sock");
        File.WriteAllText(path, "not a socket");

        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => ServerProcess.StartAsync(urls: $"http://unix:{path}", directory: directory));

        Assert.Contains("Address already in use", e.Message, StringComparison.Ordinal);
        Assert.Equal("not a socket", File.ReadAllText(path));
    }

    [Theory]
    [InlineData("config")]
    [InlineData("environment")]
    public async Task Upgrade_EndpointFromConfigurationOrEnvironment_IsHandedOver(string source)
    {
        await using var server = source == "config"
            ? await ServerProcess.StartAsync(urls: "", arguments: ["--Kestrel:Endpoints:Main:Url=http://127.0.0.1:0"])
            : await ServerProcess.StartAsync(urls: "", environment: new Dictionary<string, string> { ["ASPNETCORE_URLS"] = "http://127.0.0.1:0" });

        var (oldPid, newPid, exit) = await server.UpgradeAsync();

        Assert.Equal(0, exit);
        Assert.Equal(newPid, await server.GetPidAsync());
        await server.WaitForOutputAsync($"Adopted inherited listener {server.EndPoint}");
        Assert.NotEqual(oldPid, newPid);
    }

    private static int FreePort(IPAddress address)
    {
        using var probe = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(address, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    private static long GetInode(string path)
    {
        // The same inode proves the socket was handed over, not re-bound.
        var psi = new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%i", path]) { RedirectStandardOutput = true };
        using var stat = System.Diagnostics.Process.Start(psi)!;
        string text = stat.StandardOutput.ReadToEnd();
        stat.WaitForExit();
        return long.Parse(text.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
