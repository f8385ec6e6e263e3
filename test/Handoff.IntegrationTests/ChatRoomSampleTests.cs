using System.Collections.Concurrent;
using System.Globalization;
using System.Net.WebSockets;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// samples/ChatRoom across upgrades, with real processes: its members stay connected, re-join
/// their room in the new generation, and the messages queued for a member when it moves (server
/// push) arrive once each, in order.
/// </summary>
public sealed partial class ChatRoomSampleTests(ITestOutputHelper output)
{
    private static readonly string ChatRoom = typeof(ChatRoomSampleTests).Assembly
        .GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "ChatRoom").Value!;

    private static readonly string[] Names = ["alice", "bob", "carol"];

    [Fact]
    public async Task Upgrades_MembersStayInTheirRoom_AndTalkOn()
    {
        await using var server = await ServerProcess.StartAsync(command: [ChatRoom], arguments: ["--Handoff:RollbackWindow=0s"]);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var members = new List<Member>();
        try
        {
            foreach (string name in Names)
            {
                members.Add(await Member.JoinAsync(server.EndPoint.Port, "lobby", name, timeout.Token));
                foreach (var earlier in members)
                {
                    await earlier.ExpectAsync($"* {name} joined", timeout.Token);
                }
            }

            for (int upgrade = 1; upgrade <= 3; upgrade++)
            {
                int old = server.CurrentPid;
                int next = await server.UpgradeWithoutWaitingForExitAsync();
                Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));

                // Each sees the room again, from the new process, with every member in it, and
                // what one says reaches all: no close, no "left" or "joined" in between.
                foreach (var member in members)
                {
                    await member.SendAsync("/who", timeout.Token);
                    Assert.Equal($"pid {next}: lobby: alice, bob, carol", Sorted(await member.NextAsync(timeout.Token)));
                }

                var speaker = members[upgrade % members.Count];
                await speaker.SendAsync($"hello {upgrade}", timeout.Token);
                foreach (var member in members)
                {
                    await member.ExpectAsync($"{speaker.Name}: hello {upgrade}", timeout.Token);
                }

                output.WriteLine($"upgrade {upgrade}: 3 members moved from pid {old} to pid {next}");
            }

            await members[0].CloseAsync(timeout.Token);
            await members[1].ExpectAsync("* alice left", timeout.Token);
        }
        finally
        {
            members.ForEach(m => m.Dispose());
        }
    }

    [Fact]
    public async Task Upgrade_InTheMiddleOfABurst_EveryQueuedMessageArrivesOnce_InOrder()
    {
        // "/burst N" asks for N numbered messages, which the sender's writer sends one by one.
        // An upgrade in the middle moves the connection with the burst's cursor (past a message
        // the WebSocket wrote while its send was returning), and the new generation sends on.
        const int Count = 400_000;
        await using var server = await ServerProcess.StartAsync(command: [ChatRoom], arguments: ["--Handoff:RollbackWindow=0s"]);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var member = await Member.JoinAsync(server.EndPoint.Port, "burst", "dave", timeout.Token);
        await member.ExpectAsync("* dave joined", timeout.Token);
        int old = server.CurrentPid;

        await member.SendAsync($"/burst {Count}", timeout.Token);
        await server.WaitUntilAsync(() => member.Received >= 1000, TimeSpan.FromSeconds(30), "the burst to begin");
        int next = await server.UpgradeWithoutWaitingForExitAsync();
        Assert.Equal(0, await server.WaitForExitAsync(old, TimeSpan.FromSeconds(30)));
        int beforeTheMove = member.Received;
        Assert.True(beforeTheMove < Count, "the burst ended before the move: nothing was tested");
        await server.WaitForOutputAsync($"(pid {old}) moved 1 connections to the new generation (it took 1 and closed 0)");

        // Each message once, in order: the first ones sent by the old generation, the rest by
        // the new one.
        var pids = new List<int>();
        int first = 0;
        for (int i = 1; i <= Count; i++)
        {
            string message = member.Next(timeout.Token);
            var match = Burst().Match(message);
            Assert.True(match.Success && int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) == i, $"expected burst {i}/{Count}, got \"{message}\"");
            int pid = int.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
            if (pids.Count == 0 || pids[^1] != pid)
            {
                pids.Add(pid);
                first = i;
            }
        }

        Assert.Equal([old, next], pids);
        output.WriteLine($"burst of {Count}: 1 to {first - 1} sent by pid {old}, {first} to {Count} by pid {next}");
        await member.SendAsync("/who", timeout.Token);
        Assert.Equal($"pid {next}: burst: dave", await member.NextAsync(timeout.Token));
        Assert.Equal(Count + 2, member.Received);
    }

    private static string Sorted(string who)
    {
        int colon = who.LastIndexOf(": ", StringComparison.Ordinal);
        return who[..(colon + 2)] + string.Join(", ", who[(colon + 2)..].Split(", ").Order(StringComparer.Ordinal));
    }

    [GeneratedRegex(@"^burst (\d+)/\d+ pid (\d+)$")]
    private static partial Regex Burst();

    /// <summary>A member's WebSocket (.NET's ClientWebSocket, which never reconnects), reading
    /// every message into a queue as it comes; a close or error ends the queue.</summary>
    private sealed class Member : IDisposable
    {
        private readonly ClientWebSocket _socket = new();
        private readonly BlockingCollection<string> _messages = [];
        private Task? _reading;
        private int _received;

        private Member(string name) => Name = name;

        public string Name { get; }

        public int Received => Volatile.Read(ref _received);

        public static async Task<Member> JoinAsync(int port, string room, string name, CancellationToken cancellationToken)
        {
            var member = new Member(name);
            await member._socket.ConnectAsync(new Uri($"ws://127.0.0.1:{port}/chat?room={room}&name={name}"), cancellationToken);
            member._reading = Task.Run(member.ReadAsync, CancellationToken.None);
            return member;
        }

        public Task SendAsync(string text, CancellationToken cancellationToken) =>
            _socket.SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text, endOfMessage: true, cancellationToken);

        /// <summary>The next message; blocks (the test's deadline bounds it).</summary>
        public string Next(CancellationToken cancellationToken) => _messages.Take(cancellationToken);

        public Task<string> NextAsync(CancellationToken cancellationToken) =>
            _messages.TryTake(out string? message) ? Task.FromResult(message) : Task.Run(() => Next(cancellationToken), CancellationToken.None);

        public async Task ExpectAsync(string text, CancellationToken cancellationToken) =>
            Assert.Equal(text, await NextAsync(cancellationToken));

        public async Task CloseAsync(CancellationToken cancellationToken)
        {
            await _socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken);
            await _reading!.WaitAsync(cancellationToken);
        }

        public void Dispose()
        {
            _socket.Dispose();
            _reading?.ContinueWith(_ => _messages.Dispose(), TaskScheduler.Default);
        }

        private async Task ReadAsync()
        {
            var buffer = new byte[64 * 1024];
            try
            {
                while (true)
                {
                    int length = 0;
                    ValueWebSocketReceiveResult result;
                    do
                    {
                        result = await _socket.ReceiveAsync(buffer.AsMemory(length), CancellationToken.None);
                        if (result.MessageType == WebSocketMessageType.Close)
                        {
                            return;
                        }

                        length += result.Count;
                    }
                    while (!result.EndOfMessage);

                    Interlocked.Increment(ref _received);
                    _messages.Add(Encoding.UTF8.GetString(buffer, 0, length));
                }
            }
            catch (Exception e) when (e is WebSocketException or ObjectDisposedException)
            {
                // Ended: the test's next take fails on the completed queue.
            }
            finally
            {
                _messages.CompleteAdding();
            }
        }
    }
}
