using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Handoff.Tests.AspNetCore;

/// <summary>
/// The stream under a moving WebSocket (<see cref="WebSocketDrainStream"/>), over a real
/// loopback TCP connection with .NET's own server and client WebSockets on its ends: where the
/// boundary between two messages is, what a hold keeps, and what it counts as sent.
/// </summary>
public sealed class WebSocketDrainStreamTests : IAsyncLifetime
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(30));
    private Socket _serverSocket = null!;
    private Socket _clientSocket = null!;
    private WebSocketDrainStream _stream = null!;
    private WebSocket _server = null!;
    private WebSocket _client = null!;

    public async Task InitializeAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        _clientSocket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await _clientSocket.ConnectAsync(listener.LocalEndPoint!);
        _serverSocket = await listener.AcceptAsync();

        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var moves = new WebSocketMoves(drainer, Options.Create(new WebSocketOptions()), new Lifetime(), NullLoggerFactory.Instance);
        var endpoint = moves.Add("/ws", _ => Task.CompletedTask, accept: null);
        _stream = WebSocketDrainStream.Resumed(new NetworkStream(_serverSocket, ownsSocket: true), drainer, endpoint, default, () => { });
        _server = WebSocket.CreateFromStream(_stream, new WebSocketCreationOptions { IsServer = true, KeepAliveInterval = Timeout.InfiniteTimeSpan });
        _client = WebSocket.CreateFromStream(new NetworkStream(_clientSocket), new WebSocketCreationOptions { IsServer = false, KeepAliveInterval = Timeout.InfiniteTimeSpan });
    }

    public Task DisposeAsync()
    {
        _server.Dispose();
        _client.Dispose();
        _clientSocket.Dispose();
        _timeout.Dispose();
        return Task.CompletedTask;
    }

    [Fact]
    public async Task MessagesWritten_CountsWholeDataMessages_NotFramesOrTheClose()
    {
        var reading = ReceiveAllAsync(_client);

        await SendAsync(_server, "one", endOfMessage: true);
        Assert.Equal(1, _stream.MessagesWritten);
        await SendAsync(_server, "tw", endOfMessage: false);
        await SendAsync(_server, "o", endOfMessage: false);
        Assert.Equal(1, _stream.MessagesWritten); // half sent: not yet
        await SendAsync(_server, "", endOfMessage: true);
        Assert.Equal(2, _stream.MessagesWritten);
        await _server.SendAsync(new byte[70_000], WebSocketMessageType.Binary, endOfMessage: true, _timeout.Token);
        Assert.Equal(3, _stream.MessagesWritten);
        await _server.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, _timeout.Token);
        Assert.Equal(3, _stream.MessagesWritten);

        Assert.Equal(["one", "two", "70000 bytes"], await reading);
    }

    [Fact]
    public async Task Freeze_BetweenTwoMessages_HoldsTheNextOne_AsUnreadBytesWhole()
    {
        // The client sends two messages at once; the server's WebSocket reads the first. The
        // stream gave it nothing of the second frame (it would otherwise keep the second frame's
        // start to itself): the hold keeps all of it, and the move reads it out whole.
        await SendAsync(_client, "one", endOfMessage: true);
        await SendAsync(_client, "two", endOfMessage: true);
        Assert.Equal("one", await ReceiveAsync(_server));

        var freezing = _stream.FreezeAsync(Limit);
        var held = ReceiveAsync(_server);
        Assert.True(await freezing);
        _clientSocket.Shutdown(SocketShutdown.Send); // the end of file the detach would bring

        byte[] unread = await _stream.ReadUnreadAsync().WaitAsync(_timeout.Token);
        Assert.Equal(2 + 4 + 3, unread.Length); // FIN+text, masked length 3, the mask, "two" masked
        Assert.Equal(0x81, unread[0]);
        Assert.Equal(0x83, unread[1]);

        _stream.MarkMoved();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => held);
        Assert.True(_stream.IsMoved);
    }

    [Fact]
    public async Task Thaw_TheHeldReadGoesOn_WithTheMessageThatWaited()
    {
        var freezing = _stream.FreezeAsync(Limit);
        var held = ReceiveAsync(_server);
        Assert.True(await freezing);
        await SendAsync(_client, "meanwhile", endOfMessage: true);
        await Task.Delay(50, _timeout.Token);
        Assert.False(held.IsCompleted, "a held read got the message that came during the hold");

        _stream.Thaw();
        Assert.Equal("meanwhile", await held.WaitAsync(_timeout.Token));
        await SendAsync(_server, "answer", endOfMessage: true); // writes go on too
        Assert.Equal("answer", await ReceiveAsync(_client));
    }

    [Fact]
    public async Task Freeze_WhileAMessageIsHalfReceived_FindsNoBoundary_ThenTheMessageEndsWhole()
    {
        // The client's frames arrive a byte at a time (headers split anywhere): the first frame
        // of a fragmented message, with no FIN. The application has read it and waits for the
        // rest: not a point between two messages.
        await WriteSlowlyAsync(ClientFrame(0x01, "hel"));
        var first = await _server.ReceiveAsync(new byte[64], _timeout.Token);
        Assert.Equal((3, false), (first.Count, first.EndOfMessage));
        var rest = ReceiveAsync(_server);

        Assert.False(await _stream.FreezeAsync(TimeSpan.FromMilliseconds(300)));

        await WriteSlowlyAsync(ClientFrame(0x80, "lo"));
        Assert.Equal("lo", await rest.WaitAsync(_timeout.Token));

        // Now between two messages: a hold comes at the next read.
        var freezing = _stream.FreezeAsync(Limit);
        var held = ReceiveAsync(_server);
        Assert.True(await freezing);
        _stream.Thaw();
        await WriteSlowlyAsync(ClientFrame(0x81, "x"));
        Assert.Equal("x", await held.WaitAsync(_timeout.Token));
    }

    [Fact]
    public async Task Freeze_WhileAMessageIsHalfSent_WaitsForItsEnd()
    {
        var reading = ReceiveAllAsync(_client);
        await SendAsync(_server, "hal", endOfMessage: false);
        var held = ReceiveAsync(_server); // waiting for the client: the read side is at a boundary
        var freezing = _stream.FreezeAsync(Limit);
        await Task.Delay(100, _timeout.Token);
        Assert.False(freezing.IsCompleted, "held while a message was half sent");

        await SendAsync(_server, "f", endOfMessage: true);
        Assert.True(await freezing.WaitAsync(_timeout.Token));
        Assert.Equal(1, _stream.MessagesWritten);
        _stream.Thaw();
        await SendAsync(_client, "bye", endOfMessage: true);
        Assert.Equal("bye", await held.WaitAsync(_timeout.Token));
        await _server.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, _timeout.Token);
        Assert.Equal(["half"], await reading);
    }

    [Fact]
    public async Task Freeze_OnceTheCloseHandshakeBegan_Refuses_SoItIsFinishedHere()
    {
        await _client.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "bye", _timeout.Token);
        var received = await _server.ReceiveAsync(new byte[16], _timeout.Token);
        Assert.Equal(WebSocketMessageType.Close, received.MessageType);

        Assert.True(_stream.IsClosing);
        Assert.False(await _stream.FreezeAsync(Limit));
        await _server.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, _timeout.Token); // not held
        Assert.Equal(WebSocketMessageType.Close, (await _client.ReceiveAsync(new byte[16], _timeout.Token)).MessageType);
    }

    // A client-to-server frame: FIN and opcode in the first byte, a zero mask (valid, and the
    // payload stays readable), a payload under 126 bytes.
    private static byte[] ClientFrame(byte finAndOpcode, string text)
    {
        byte[] payload = Encoding.UTF8.GetBytes(text);
        return [finAndOpcode, (byte)(0x80 | payload.Length), 0, 0, 0, 0, .. payload];
    }

    private async Task WriteSlowlyAsync(byte[] frame)
    {
        foreach (byte b in frame)
        {
            await _clientSocket.SendAsync(new[] { b }, SocketFlags.None, _timeout.Token);
            await Task.Delay(2, _timeout.Token);
        }
    }

    private Task SendAsync(WebSocket socket, string text, bool endOfMessage) =>
        socket.SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text, endOfMessage, _timeout.Token);

    private async Task<string> ReceiveAsync(WebSocket socket)
    {
        var buffer = new byte[1024];
        int length = 0;
        ValueWebSocketReceiveResult result;
        do
        {
            result = await socket.ReceiveAsync(buffer.AsMemory(length), _timeout.Token);
            length += result.Count;
        }
        while (!result.EndOfMessage);

        return Encoding.UTF8.GetString(buffer, 0, length);
    }

    // Every message until the close, as text (a binary one as its length).
    private async Task<List<string>> ReceiveAllAsync(WebSocket socket)
    {
        var messages = new List<string>();
        var buffer = new byte[128 * 1024];
        while (true)
        {
            int length = 0;
            ValueWebSocketReceiveResult result;
            do
            {
                result = await socket.ReceiveAsync(buffer.AsMemory(length), _timeout.Token);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    return messages;
                }

                length += result.Count;
            }
            while (!result.EndOfMessage);

            messages.Add(result.MessageType == WebSocketMessageType.Binary ? $"{length} bytes" : Encoding.UTF8.GetString(buffer, 0, length));
        }
    }

    private sealed class Lifetime : IHostApplicationLifetime
    {
        public CancellationToken ApplicationStarted => CancellationToken.None;

        public CancellationToken ApplicationStopping => CancellationToken.None;

        public CancellationToken ApplicationStopped => CancellationToken.None;

        public void StopApplication()
        {
        }
    }
}
