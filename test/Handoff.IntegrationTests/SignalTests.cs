using System.Net.Sockets;
using System.Text;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>Signals that must never kill or fork a server by accident.</summary>
public sealed class SignalTests
{
    [Fact]
    public async Task Sigusr2_WithUpgradeSignalsOff_IsLoggedAndIgnored()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:UpgradeSignals="]);

        ServerProcess.Signal(server.FirstPid, 12);
        await server.WaitForOutputAsync("ignored SIGUSR2: it is not an upgrade signal");

        Assert.True(ProcessTable.IsRunning(server.FirstPid));
        Assert.Equal(server.FirstPid, await server.GetPidAsync());
        Assert.DoesNotContain("started generation 2", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sighup_ByDefault_EndsTheServerGracefullyWithoutStartingAnother()
    {
        // What a closing terminal sends: a server started by hand ends with it, drains, leaves
        // no pid file, and no new generation is left running detached.
        await using var server = await ServerProcess.StartAsync();
        var slow = await server.StartSlowRequestAsync(2);

        ServerProcess.Signal(server.FirstPid, 1);

        Assert.Equal(server.FirstPid, await slow);
        Assert.Equal(0, await server.WaitForExitAsync(server.FirstPid, TimeSpan.FromSeconds(30)));
        await server.WaitForOutputAsync("received SIGHUP (hang-up): stopping gracefully"); // its last lines may follow the exit
        Assert.False(File.Exists(server.PidFile));
        Assert.Empty(ProcessTable.Descendants(server.FirstPid));
        Assert.DoesNotContain("started generation 2", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sighup_ConfiguredAsUpgradeSignal_Upgrades()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:UpgradeSignals=SIGUSR2,SIGHUP"]);
        int old = server.CurrentPid;

        ServerProcess.Signal(old, 1);
        int next = await server.WaitForSpawnAsync(2);

        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(60)));
        Assert.Equal(next, await server.GetPidAsync());
    }

    [Fact]
    public async Task Response_HasContentLength_SoKeepAliveClientsKeepTheirConnection()
    {
        // ab -k, the original article's test, only reuses connections whose responses say
        // how long they are. README says so of the sample.
        await using var server = await ServerProcess.StartAsync(command: [TestAssets.HelloSleepAppHost]);
        using var connection = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await connection.ConnectAsync(server.EndPoint);
        await connection.SendAsync(Encoding.ASCII.GetBytes("GET /?sleep=0 HTTP/1.0\r\nConnection: keep-alive\r\nHost: x\r\n\r\n"));
        var buffer = new byte[4096];
        int n = await connection.ReceiveAsync(buffer);
        string head = Encoding.ASCII.GetString(buffer, 0, n);

        Assert.Matches(@"(?i)Content-Length: \d+", head);
        Assert.DoesNotContain("chunked", head, StringComparison.OrdinalIgnoreCase);
    }
}
