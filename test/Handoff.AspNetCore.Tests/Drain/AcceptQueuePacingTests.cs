using System.Net;
using System.Net.Sockets;
using Handoff.AspNetCore;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.AspNetCore;

/// <summary>The drain's pacing by a real listener's accept queue.</summary>
public sealed class AcceptQueuePacingTests
{
    [Fact]
    public async Task TryTake_AllowsClosesUntilTheQueueWouldBeHalfFull_AndNamesAQueueHalfFullByItself()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        var clients = new List<Socket>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                await client.ConnectAsync(listener.EndPoint);
            }

            using var pacing = new AcceptQueuePacing();
            object owner = new();
            Assert.True(pacing.Refresh(), pacing.Error);

            // A backlog of 512: room for 256 - 3 closes this tick.
            int taken = 0;
            while (pacing.TryTake(owner, listener))
            {
                Assert.True(++taken <= 512, "no limit");
            }

            Assert.Equal(253, taken);
            Assert.False(pacing.TryTake(owner, listener));

            // Another owner of the same socket (a configuration reload) shares its room.
            Assert.False(pacing.TryTake(new object(), listener));

            // Held back by this tick's own closes: the new generation is not behind.
            Assert.Null(pacing.FirstHeldBack);

            // The next tick reads the queue again; now it is more than half full by itself.
            while (clients.Count < 260)
            {
                var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                await client.ConnectAsync(listener.EndPoint);
            }

            Assert.True(pacing.Refresh(), pacing.Error);
            Assert.False(pacing.TryTake(owner, listener));
            Assert.Equal((ListenerAddress.Format(listener.EndPoint), new AcceptQueue(260, 512)), pacing.FirstHeldBack);

            // Connections of something that is not a Handoff listener are never held back.
            Assert.True(pacing.TryTake(new object()));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }
}
