using System.Globalization;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// Faults at the moment connections move (issue 23), with real processes and signals: whatever
/// dies or arrives while connections are on their way, each one is served by exactly one
/// generation afterwards or closed, and none hangs.
/// </summary>
/// <remarks>
/// To catch a generation in the middle of a move, the new generation is stopped (SIGSTOP) after
/// it reported ready: the old one commits and sends, the channel fills (a Unix socket holds
/// about 280 frames here) and the rest of its sends wait; the test acts once the old
/// generation's sockets show that part has gone and part has not.
/// </remarks>
public sealed class ConnectionMoveFaultTests(ITestOutputHelper output)
{
    private const int SIGKILL = 9;
    private const int SIGUSR2 = 12;
    private const int SIGTERM = 15;
    private const int SIGCONT = 18;
    private const int SIGSTOP = 19;

    // More than the move channel holds while its reader is stopped.
    private const int Many = 600;

    private static readonly string[] Moving = ["--Handoff:MoveConnections=true"];

    [Fact]
    public async Task SigkillOld_InTheMiddleOfTheMove_EachConnectionIsTheNewGenerationsOrClosed()
    {
        await using var server = await ServerProcess.StartAsync(arguments: [.. Moving, "--Handoff:RollbackWindow=1s"]);
        var probes = await OpenAsync(server, Many);
        try
        {
            var (old, child) = await StopTheNewGenerationMidMoveAsync(server, probes.Count);
            ServerProcess.Signal(old, SIGKILL);
            await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30));
            ServerProcess.Signal(child, SIGCONT);

            var (answered, closed) = await AskEachAsync(probes, child);
            output.WriteLine($"{answered} answered by the new generation, {closed} closed");
            await server.WaitForOutputAsync("moved its connections:", timeout: TimeSpan.FromSeconds(30));

            // Both kinds: the kill came in the middle. What the channel held is served; what the
            // old generation still had died with it, as a close its client sees.
            Assert.True(answered > 0 && closed > 0, $"{answered} answered, {closed} closed: the kill did not land mid-move. Server output:\n{server.Output}");
            Assert.Contains($"moved its connections: {answered} adopted, 0 closed", server.Output, StringComparison.Ordinal);
            Assert.Equal(child, await server.GetPidAsync());
        }
        finally
        {
            probes.ForEach(p => p.Dispose());
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task SigkillNew_WhileItAdopts_EveryConnectionClosesAndTheOldGenerationStillExits()
    {
        await using var server = await ServerProcess.StartAsync(arguments: [.. Moving, "--Handoff:RollbackWindow=1s"]);
        var probes = await OpenAsync(server, Many);
        try
        {
            var (old, child) = await StopTheNewGenerationMidMoveAsync(server, probes.Count);
            ServerProcess.Signal(child, SIGKILL);
            await ProcessTable.WaitForExitAsync(child, TimeSpan.FromSeconds(30));

            // Past the commit there is nothing to roll back to: the connections in the channel
            // died with the new generation, the rest are closed by the old one, which ends its
            // drain as always.
            var (answered, closed) = await AskEachAsync(probes, child);
            Assert.Equal((0, Many), (answered, closed));
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
            await server.WaitForOutputAsync("(it did not confirm what it took)"); // through the console logger's queue
        }
        finally
        {
            probes.ForEach(p => p.Dispose());
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task SigtermOld_InTheMiddleOfTheMove_TheMoveGoesOnAndTheOldGenerationExitsCleanly()
    {
        await using var server = await ServerProcess.StartAsync(arguments: [.. Moving, "--Handoff:RollbackWindow=1s"]);
        var probes = await OpenAsync(server, Many);
        try
        {
            var (old, child) = await StopTheNewGenerationMidMoveAsync(server, probes.Count);
            ServerProcess.Signal(old, SIGTERM);
            ServerProcess.Signal(child, SIGCONT);

            var (answered, closed) = await AskEachAsync(probes, child);
            output.WriteLine($"{answered} answered by the new generation, {closed} closed");
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
            Assert.Equal(Many, answered + closed);
            Assert.True(answered >= 200, $"only {answered} moved: the stop cut the move short");
            Assert.Equal(child, await server.GetPidAsync());
        }
        finally
        {
            probes.ForEach(p => p.Dispose());
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task SigkillNew_InTheRollbackWindow_TheOldGenerationKeepsEveryConnection()
    {
        await using var server = await ServerProcess.StartAsync(arguments: [.. Moving, "--Handoff:RollbackWindow=20s"]);
        var probes = await OpenAsync(server, 16);
        try
        {
            int old = server.CurrentPid;
            ServerProcess.Signal(old, SIGUSR2);
            int child = await server.WaitForSpawnAsync(2);
            await server.WaitForOutputAsync("This generation stopped accepting and drains");
            ServerProcess.Signal(child, SIGKILL);
            await server.WaitForOutputAsync("this generation accepts again");

            // Nothing moves before the commit: the same connections go on with the old pid.
            var (answered, closed) = await AskEachAsync(probes, old);
            Assert.Equal((16, 0), (answered, closed));
            Assert.DoesNotContain("moved its connections", server.Output, StringComparison.Ordinal);
        }
        finally
        {
            probes.ForEach(p => p.Dispose());
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task SecondUpgrade_WhileTheFirstStillMoves_ABusyConnectionMovesOnToTheNewest()
    {
        await using var server = await ServerProcess.StartAsync(arguments: [.. Moving, "--Handoff:RollbackWindow=0s"]);
        var idle = await OpenAsync(server, 8);
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var busy = await HttpProbe.ConnectAsync(server.EndPoint, limit.Token);
        try
        {
            int first = server.CurrentPid;
            int before = server.CountOf("received a request sleeping 8 s");
            var slow = busy.GetAsync("/?sleep=8", keepAlive: true, limit.Token);
            await server.WaitForOutputAsync("received a request sleeping 8 s", before + 1);

            // The first generation moves its idle connections at once and the busy one when its
            // response ends; by then the second has handed over to a third.
            int second = await server.UpgradeWithoutWaitingForExitAsync();
            int third = await server.UpgradeWithoutWaitingForExitAsync();
            Assert.False(slow.IsCompleted, "the slow response ended before the second upgrade: nothing was tested");

            var response = await slow;
            Assert.Equal((first, false), (response.Pid, response.ConnectionClose));
            Assert.Equal(third, await ConnectionMoveTests.RequestAsync(busy, limit.Token));
            Assert.Equal(0, await server.WaitForExitAsync(first, ServerProcess.StartTimeout));
            Assert.True(await server.WaitForExitAsync(second, ServerProcess.StartTimeout) is 0 or null); // not this process's child: no exit code
            var (answered, closed) = await AskEachAsync(idle, third);
            Assert.Equal((8, 0), (answered, closed));
            // The second generation's count and the third's, in whichever order their loggers wrote them.
            await server.WaitForOutputAsync("moved its connections:", count: 2);
            var passedOn = System.Text.RegularExpressions.Regex.Matches(server.Output, @"(\d+) passed on to the next generation");
            Assert.True(passedOn.Any(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) >= 1), "the busy connection did not pass through the second generation");
        }
        finally
        {
            idle.ForEach(p => p.Dispose());
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task NewGenerationNearItsDescriptorLimit_TakesWhatFits_ClosesTheRest_AndLivesOn()
    {
        await using var server = await ServerProcess.StartAsync(arguments: [.. Moving, "--Handoff:RollbackWindow=2s"]);
        const int Count = 300;
        var probes = await OpenAsync(server, Count);
        try
        {
            // Room for 40 connections above the reserve the runtime keeps, before the commit.
            // (Without the reserve the runtime aborted with "Out of memory" at the limit, and
            // with it the whole service.)
            var (old, child) = await UpgradeWithTheNewGenerationNearItsLimitAsync(server, 40);
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
            await server.WaitForOutputAsync("moved its connections:");

            var (answered, closed) = await AskEachAsync(probes, child);
            output.WriteLine($"{answered} answered by the new generation, {closed} closed");
            Assert.Equal(Count, answered + closed);
            Assert.InRange(answered, 1, 60);
            Assert.Contains("within 64 of this process's limit", server.Output, StringComparison.Ordinal);
            await server.WaitForOutputAsync($"(it took {answered} and closed {closed})");
            Assert.Equal(1, server.CountOf("within 64 of this process's limit"));

            // Its clients reconnect as after a drain, and the new generation serves them.
            probes.ForEach(p => p.Dispose());
            Assert.True(ProcessTable.IsRunning(child));
            Assert.Equal(child, await server.GetPidAsync());
        }
        finally
        {
            probes.ForEach(p => p.Dispose());
            output.WriteLine(server.Output);
        }
    }

    /// <summary>Upgrades, stops the new generation once it is ready, and returns when the old
    /// one has sent part of its connections and waits to send the rest (each connection's frame
    /// <paramref name="frameBytes"/> long: a header, and for a WebSocket its saved state).</summary>
    internal static async Task<(int Old, int Child)> StopTheNewGenerationMidMoveAsync(ServerProcess server, int connections, int frameBytes = MoveChannel.HeaderLength)
    {
        int old = server.CurrentPid;
        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync("This generation stopped accepting and drains");
        ServerProcess.Signal(child, SIGSTOP);
        await server.WaitForOutputAsync($"(pid {old}) is superseded");

        // The frames wait in the stopped generation's end of the channel (its inode is in the
        // variable it started with); it holds about 280. Well before that, and well before all
        // of them, is the middle.
        ulong channel = ChannelInode(child);
        await server.WaitUntilAsync(() => QueuedFrames(channel, frameBytes) >= 150, TimeSpan.FromSeconds(30), $"the old generation to send connections (channel inode {channel})");
        Assert.True(QueuedFrames(channel, frameBytes) < connections - 100, "the old generation sent nearly every connection although the new one reads nothing");
        return (old, child);
    }

    private static ulong ChannelInode(int pid)
    {
        string environment = File.ReadAllText($"/proc/{pid}/environ");
        string value = environment.Split('\0').Single(v => v.StartsWith("HANDOFF_MOVES=", StringComparison.Ordinal))["HANDOFF_MOVES=".Length..];
        return ulong.Parse(value[(value.IndexOf(':', StringComparison.Ordinal) + 1)..], CultureInfo.InvariantCulture);
    }

    // ss -x: "u_str ESTAB RECV-Q SEND-Q * INODE * PEER"; a frame without unread bytes is a
    // header (24 bytes) and its state.
    private static int QueuedFrames(ulong inode, int frameBytes)
    {
        var info = new System.Diagnostics.ProcessStartInfo("ss", ["-xn"]) { RedirectStandardOutput = true };
        using var ss = System.Diagnostics.Process.Start(info)!;
        string text = ss.StandardOutput.ReadToEnd();
        ss.WaitForExit();
        foreach (string line in text.Split('\n'))
        {
            string[] columns = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (columns.Length >= 6 && columns[5] == inode.ToString(CultureInfo.InvariantCulture))
            {
                return int.Parse(columns[2], CultureInfo.InvariantCulture) / frameBytes;
            }
        }

        return 0;
    }

    private static async Task<List<HttpProbe>> OpenAsync(ServerProcess server, int count)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var probes = new List<HttpProbe>();
        try
        {
            for (int i = 0; i < count; i += 50)
            {
                var batch = await Task.WhenAll(Enumerable.Range(0, Math.Min(50, count - i)).Select(async _ =>
                {
                    var probe = await HttpProbe.ConnectAsync(server.EndPoint, limit.Token);
                    Assert.Equal(server.CurrentPid, await ConnectionMoveTests.RequestAsync(probe, limit.Token));
                    return probe;
                }));
                probes.AddRange(batch);
            }

            return probes;
        }
        catch
        {
            probes.ForEach(p => p.Dispose());
            throw;
        }
    }

    /// <summary>One keep-alive request on each connection, all at once: how many were answered
    /// by <paramref name="pid"/> on the same connection, and how many found it closed. A request
    /// that gets no answer within the bound, or an answer from another pid, fails the test.</summary>
    private static async Task<(int Answered, int Closed)> AskEachAsync(List<HttpProbe> probes, int pid)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var outcomes = await Task.WhenAll(probes.Select(async probe =>
        {
            try
            {
                return await ConnectionMoveTests.RequestAsync(probe, limit.Token) == pid ? "answered" : "another pid";
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException)
            {
                return "closed";
            }
            catch (OperationCanceledException)
            {
                return "no answer";
            }
        }));
        var counts = outcomes.GroupBy(o => o).ToDictionary(g => g.Key, g => g.Count());
        Assert.True(counts.Keys.All(k => k is "answered" or "closed"), string.Join(", ", counts.Select(c => $"{c.Value} {c.Key}")));
        return (counts.GetValueOrDefault("answered"), counts.GetValueOrDefault("closed"));
    }

    /// <summary>Upgrades, and in the rollback window lowers the new generation's descriptor
    /// limit to leave room for <paramref name="room"/> connections above its reserve of 64.</summary>
    internal static async Task<(int Old, int Child)> UpgradeWithTheNewGenerationNearItsLimitAsync(ServerProcess server, int room)
    {
        int old = server.CurrentPid;
        ServerProcess.Signal(old, SIGUSR2);
        int child = await server.WaitForSpawnAsync(2);
        await server.WaitForOutputAsync("This generation stopped accepting and drains");
        int highest = ProcessTable.OpenFds(child).Max(f => int.Parse(f[..f.IndexOf(' ', StringComparison.Ordinal)], CultureInfo.InvariantCulture));
        await PrlimitAsync(child, highest + MoveReceiver.DescriptorReserve + room);
        return (old, child);
    }

    private static async Task PrlimitAsync(int pid, int descriptors)
    {
        using var process = System.Diagnostics.Process.Start("prlimit", ["--pid", pid.ToString(CultureInfo.InvariantCulture), $"--nofile={descriptors.ToString(CultureInfo.InvariantCulture)}:"])!;
        await process.WaitForExitAsync();
        Assert.Equal(0, process.ExitCode);
    }
}
