using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.Draining;

public sealed class ConnectionDrainTests : IAsyncDisposable
{
    private readonly ListenerRegistry _registry;
    private readonly Listener _listener;

    public ConnectionDrainTests()
    {
        var gate = new AcceptGate();
        gate.Open();
        _registry = new ListenerRegistry([], gate, NullLogger.Instance);
        _listener = _registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));
    }

    public ValueTask DisposeAsync() => _registry.DisposeAsync();

    [Fact]
    public async Task DrainAsync_FiresTheTokenAndWaitsForTheConnectionsToFinish()
    {
        using var drain = new ConnectionDrain();
        using var client1 = await ConnectAsync();
        using var client2 = await ConnectAsync();
        var first = (await drain.AcceptAsync(_listener))!;
        var second = (await drain.AcceptAsync(_listener))!;
        Assert.Equal(2, drain.Count);
        first.Dispose();
        Assert.Equal(1, drain.Count);

        // The server finishes its exchange when told to drain.
        second.Draining.Register(second.Dispose);
        var result = await drain.DrainAsync(TimeSpan.FromSeconds(30));

        Assert.True(drain.Draining.IsCancellationRequested);
        Assert.Equal(new DrainResult(1, 0), result);
        Assert.Equal(0, drain.Count);
    }

    [Fact]
    public async Task DrainAsync_ConnectionNeverFinishes_IsResetAtTheTimeout()
    {
        using var drain = new ConnectionDrain();
        using var client = await ConnectAsync();
        var connection = (await drain.AcceptAsync(_listener))!;
        var serving = ServeUntilClosedAsync(connection);

        var result = await drain.DrainAsync(TimeSpan.FromMilliseconds(200));

        Assert.Equal(new DrainResult(0, 1), result);
        Assert.Equal(0, drain.Count);
        await serving; // the server's read failed and it let go
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var error = await Assert.ThrowsAsync<SocketException>(async () => await client.ReceiveAsync(new byte[16], timeout.Token));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    [Fact]
    public async Task DrainAsync_NothingOpen_ReturnsAtOnce()
    {
        using var drain = new ConnectionDrain();
        Assert.Equal(new DrainResult(0, 0), await drain.DrainAsync(TimeSpan.FromMinutes(5)));
    }

    [Fact]
    public async Task AcceptAsync_ListenerClosed_ReturnsNull()
    {
        using var drain = new ConnectionDrain();
        var accept = drain.AcceptAsync(_listener);
        await _listener.CloseAsync();
        Assert.Null(await accept);
    }

    private async Task<Socket> ConnectAsync()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(_listener.EndPoint);
        return socket;
    }

    private static async Task ServeUntilClosedAsync(CountedConnection connection)
    {
        using (connection)
        {
            try
            {
                while (await connection.Socket.ReceiveAsync(new byte[16]) > 0)
                {
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        }
    }
}
