using System.Globalization;
using System.Net.WebSockets;
using System.Text;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// Faults while WebSockets of a moving endpoint (the test server's /ws-move) are on their way to
/// the new generation, with real processes and signals: afterwards each WebSocket is served by
/// exactly one generation, its count going on, or its client sees it end (a 1012 close frame or
/// the connection closed); none stays silently open.
/// </summary>
/// <remarks>
/// The moment is caught as in <see cref="ConnectionMoveFaultTests"/>: the new generation is
/// stopped (SIGSTOP) after its ready report, and the test acts once the old generation's frames
/// fill part of the channel and the rest wait.
/// </remarks>
public sealed class WebSocketMoveFaultTests(ITestOutputHelper output)
{
    private const int SIGKILL = 9;
    private const int SIGUSR2 = 12;
    private const int SIGTERM = 15;
    private const int SIGCONT = 18;

    // More than the move channel holds while its reader is stopped.
    private const int Many = 600;

    // A /ws-move WebSocket's frame: the header, then "HW" v1 with the name and an 8-byte count.
    private const int FrameBytes = MoveChannel.HeaderLength + 12 + 8 + 8;

    private static readonly string[] Options = ["--Handoff:RollbackWindow=1s", "--Handoff:DrainTimeout=30s"];

    [Fact]
    public async Task SigkillOld_WhileItHandsWebSocketsOver_EachIsTheNewGenerationsWithItsCount_OrEnds()
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        var sockets = await OpenAsync(server, Many);
        try
        {
            var (old, child) = await ConnectionMoveFaultTests.StopTheNewGenerationMidMoveAsync(server, Many, FrameBytes);
            ServerProcess.Signal(old, SIGKILL);
            await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30));
            ServerProcess.Signal(child, SIGCONT);

            var outcomes = await AskEachAsync(sockets, child);
            output.WriteLine(outcomes.ToString());

            // What the channel held is resumed by the new generation with its count; what the old
            // one still had died with it, as an end its client sees.
            Assert.True(outcomes.Answered > 0 && outcomes.Ended > 0, $"{outcomes}: the kill did not land mid-move. Server output:\n{server.Output}");
            await server.WaitForOutputAsync($"moved its connections: {outcomes.Answered} adopted, 0 closed", timeout: TimeSpan.FromSeconds(30));
            Assert.Equal(child, await server.GetPidAsync());
        }
        finally
        {
            Dispose(sockets);
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task SigkillNew_WhileItHoldsWebSocketsUnread_EachEnds_AndTheOldGenerationExits()
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        var sockets = await OpenAsync(server, Many);
        try
        {
            var (old, child) = await ConnectionMoveFaultTests.StopTheNewGenerationMidMoveAsync(server, Many, FrameBytes);
            ServerProcess.Signal(child, SIGKILL);
            await ProcessTable.WaitForExitAsync(child, TimeSpan.FromSeconds(30));

            // Past the commit there is nothing to roll back to: the WebSockets in the channel died
            // with the new generation (their clients see the connection end), the ones the old
            // generation could not send any more get its 1012 close frame.
            var outcomes = await AskEachAsync(sockets, child);
            output.WriteLine(outcomes.ToString());
            Assert.Equal(0, outcomes.Answered);
            Assert.Equal(Many, outcomes.Ended);
            Assert.True(outcomes.Closed1012 > 0, $"{outcomes}: no WebSocket the old generation still had got a 1012 close frame");
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
            await server.WaitForOutputAsync("(it did not confirm what it took)");
        }
        finally
        {
            Dispose(sockets);
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task SigtermOld_WhileItHandsWebSocketsOver_TheMoveGoesOn_AndTheOldGenerationExitsCleanly()
    {
        await using var server = await ServerProcess.StartAsync(arguments: Options);
        var sockets = await OpenAsync(server, Many);
        try
        {
            var (old, child) = await ConnectionMoveFaultTests.StopTheNewGenerationMidMoveAsync(server, Many, FrameBytes);
            ServerProcess.Signal(old, SIGTERM);
            ServerProcess.Signal(child, SIGCONT);

            var outcomes = await AskEachAsync(sockets, child);
            output.WriteLine(outcomes.ToString());
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
            Assert.True(outcomes.Answered >= 200, $"{outcomes}: the stop cut the move short");
            Assert.Equal(child, await server.GetPidAsync());
        }
        finally
        {
            Dispose(sockets);
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task SecondUpgrade_WhileAWebSocketWaitsForItsMessagesEnd_ItMovesOnToTheNewest_WithItsCount()
    {
        // The first generation moves its idle WebSockets at once; one is half way through a
        // message and moves when the message ends. Meanwhile the second generation hands over
        // to a third (and the first gets a second SIGUSR2, which changes nothing): the waiting
        // WebSocket passes through the second generation to the third, its count going on.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=0s", "--Handoff:DrainTimeout=30s"]);
        var idle = await OpenAsync(server, 8);
        var waiting = (await OpenAsync(server, 1))[0];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            int first = server.CurrentPid;
            await waiting.SendAsync("ha"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: false, timeout.Token);

            var started = System.Diagnostics.Stopwatch.StartNew();
            int second = await server.UpgradeWithoutWaitingForExitAsync();
            ServerProcess.Signal(first, SIGUSR2);
            int third = await server.UpgradeWithoutWaitingForExitAsync();
            output.WriteLine($"two upgrades in {started.ElapsedMilliseconds} ms");
            Assert.True(started.Elapsed < TimeSpan.FromSeconds(4), $"the two upgrades took {started.Elapsed}: the first generation may have given up waiting for the message's end (5 s), and nothing was tested");
            Assert.True(ProcessTable.IsRunning(first), "the first generation exited before the waiting WebSocket moved");

            await waiting.SendAsync("lf"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
            Assert.Equal($"pid:{first} #2 half", await WebSocketText.ReceiveAsync(waiting, timeout.Token));
            await waiting.SendAsync("after"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
            Assert.Equal($"pid:{third} #3 after", await WebSocketText.ReceiveAsync(waiting, timeout.Token));

            var outcomes = await AskEachAsync(idle, third);
            Assert.Equal((8, 0), (outcomes.Answered, outcomes.Ended));
            Assert.Equal(0, await server.WaitForExitAsync(first, ServerProcess.StartTimeout));
            Assert.True(await server.WaitForExitAsync(second, ServerProcess.StartTimeout) is 0 or null); // not this process's child: no exit code
            Assert.Matches(@"[1-9]\d* passed on to the next generation", server.Output);
            await server.WaitForOutputAsync($"Generation 1 (pid {first}) refused an upgrade: "); // superseded, or shutting down
            Assert.DoesNotContain("does not move and is closed with 1012", server.Output, StringComparison.Ordinal);
            await waiting.CloseAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token);
        }
        finally
        {
            Dispose([.. idle, waiting]);
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task NewGenerationNearItsDescriptorLimit_TheWebSocketsItCannotTake_Get1012()
    {
        // The new generation takes what fits above its reserve of 64 descriptors and closes the
        // rest: a WebSocket's client gets 1012 (and reconnects), not a silent end.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=2s", "--Handoff:DrainTimeout=30s"]);
        const int Count = 20;
        var sockets = await OpenAsync(server, Count);
        try
        {
            var (old, child) = await ConnectionMoveFaultTests.UpgradeWithTheNewGenerationNearItsLimitAsync(server, 5);
            Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));

            var outcomes = await AskEachAsync(sockets, child);
            output.WriteLine(outcomes.ToString());
            Assert.Equal((Count, 0), (outcomes.Answered + outcomes.Closed1012, outcomes.ConnectionEnded));
            Assert.InRange(outcomes.Answered, 1, 10);
            await server.WaitForOutputAsync($"(it took {outcomes.Answered} and closed {outcomes.Closed1012})");
        }
        finally
        {
            Dispose(sockets);
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task NewestGenerationKilled_WhileAWebSocketPassesThrough_ItGets1012()
    {
        // As in the second-upgrade case, but the third generation dies once the second has
        // handed over to it: the second cannot pass the WebSocket on, and closes it with 1012.
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=0s", "--Handoff:DrainTimeout=30s"]);
        var waiting = (await OpenAsync(server, 1))[0];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            int first = server.CurrentPid;
            await waiting.SendAsync("ha"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: false, timeout.Token);
            await server.UpgradeWithoutWaitingForExitAsync();
            int third = await server.UpgradeWithoutWaitingForExitAsync();
            ServerProcess.Signal(third, SIGKILL);
            await ProcessTable.WaitForExitAsync(third, TimeSpan.FromSeconds(30));
            Assert.True(ProcessTable.IsRunning(first), "the first generation exited before the waiting WebSocket moved");

            await waiting.SendAsync("lf"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
            Assert.Equal($"pid:{first} #2 half", await WebSocketText.ReceiveAsync(waiting, timeout.Token));
            var outcomes = await AskEachAsync([waiting], third, "#3");
            Assert.Equal(1, outcomes.Closed1012);
            await server.WaitForOutputAsync("0 adopted, 1 closed, 0 passed on");
        }
        finally
        {
            waiting.Dispose();
            output.WriteLine(server.Output);
        }
    }

    [Fact]
    public async Task AClientThatDoesNotRead_NoBoundary_TheResetIsLoggedAsSuch()
    {
        // The client sends and never reads: the answers fill the buffers toward it, a send waits
        // in the middle of a message, and no point between two messages comes. Nor can the 1012
        // frame be written: the connection is reset, and the log says so (not "closed with 1012").
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:RollbackWindow=0s", "--Handoff:DrainTimeout=30s"]);
        int old = server.CurrentPid;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await client.ConnectAsync(server.EndPoint, timeout.Token);
        await client.SendAsync(Encoding.ASCII.GetBytes($"GET /ws-move HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"), timeout.Token);
        byte[] payload = new byte[60_000];
        byte[] frame = [0x82, 0xFE, (byte)(payload.Length >> 8), (byte)payload.Length, 0, 0, 0, 0, .. payload];
        for (int i = 0; i < 200 && !timeout.IsCancellationRequested; i++)
        {
            using var once = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            try
            {
                await client.SendAsync(frame, System.Net.Sockets.SocketFlags.None, once.Token);
            }
            catch (OperationCanceledException)
            {
                break; // the server stopped reading: its answers have nowhere to go
            }
        }

        await server.UpgradeWithoutWaitingForExitAsync();
        await server.WaitForOutputAsync("no point between two messages came within 5 s", timeout: TimeSpan.FromSeconds(30));
        await server.WaitForOutputAsync($"Pid {old}: the 1012 close frame of a WebSocket of /ws-move could not be written within 1 s", timeout: TimeSpan.FromSeconds(30));
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
    }

    /// <summary>Opens <paramref name="count"/> WebSockets to /ws-move, each answered once ("#1")
    /// by the current generation.</summary>
    private static async Task<List<ClientWebSocket>> OpenAsync(ServerProcess server, int count)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var uri = new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws-move");
        int pid = server.CurrentPid;
        var sockets = new List<ClientWebSocket>();
        try
        {
            for (int i = 0; i < count; i += 50)
            {
                var batch = Enumerable.Range(0, Math.Min(50, count - i)).Select(_ => new ClientWebSocket()).ToList();
                sockets.AddRange(batch);
                await Task.WhenAll(batch.Select(async socket =>
                {
                    await socket.ConnectAsync(uri, limit.Token);
                    await socket.SendAsync("one"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, limit.Token);
                    Assert.Equal($"pid:{pid} #1 one", await WebSocketText.ReceiveAsync(socket, limit.Token));
                }));
            }

            return sockets;
        }
        catch
        {
            Dispose(sockets);
            throw;
        }
    }

    /// <summary>A second message on each WebSocket, all at once: how many were answered by
    /// <paramref name="pid"/> as "#2" (the count went on), and how many ended (a close frame, and
    /// of those how many 1012, or the connection closed). An answer from another pid or with
    /// another count, or no answer within the bound, fails the test.</summary>
    private static async Task<Outcomes> AskEachAsync(List<ClientWebSocket> sockets, int pid, string count = "#2")
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var outcomes = await Task.WhenAll(sockets.Select(async socket =>
        {
            try
            {
                await socket.SendAsync("two"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, limit.Token);
                var buffer = new byte[256];
                var result = await socket.ReceiveAsync(buffer.AsMemory(), limit.Token);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    return socket.CloseStatus == (WebSocketCloseStatus)1012 ? "1012" : $"close {socket.CloseStatus}";
                }

                string answer = Encoding.UTF8.GetString(buffer, 0, result.Count);
                return answer == $"pid:{pid} {count} two" && result.EndOfMessage ? "answered" : $"unexpected answer {answer}";
            }
            catch (WebSocketException)
            {
                return "ended";
            }
            catch (OperationCanceledException)
            {
                return "no answer";
            }
        }));
        var counts = outcomes.GroupBy(o => o).ToDictionary(g => g.Key, g => g.Count());
        Assert.True(counts.Keys.All(k => k is "answered" or "ended" or "1012"), string.Join(", ", counts.Select(c => $"{c.Value} {c.Key}")));
        return new Outcomes(counts.GetValueOrDefault("answered"), counts.GetValueOrDefault("ended"), counts.GetValueOrDefault("1012"));
    }

    private static void Dispose(List<ClientWebSocket> sockets) => sockets.ForEach(s => s.Dispose());

    private sealed record Outcomes(int Answered, int ConnectionEnded, int Closed1012)
    {
        public int Ended => ConnectionEnded + Closed1012;

        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"{Answered} answered by the new generation, {Closed1012} closed with 1012, {ConnectionEnded} saw the connection end");
    }
}
