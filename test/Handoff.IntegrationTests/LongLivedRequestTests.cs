using System.Net.WebSockets;
using System.Text;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>TestServer's long-lived endpoints, which the drain of WebSockets and streaming
/// responses (issue 9) is measured on: each names the generation that serves it.</summary>
public sealed class LongLivedRequestTests
{
    [Fact]
    public async Task WebSocket_FirstMessageNamesThePid_ThenEveryMessageIsEchoed()
    {
        await using var server = await ServerProcess.StartAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.EndPoint.Port}/ws"), timeout.Token);

        Assert.Equal($"pid:{server.CurrentPid}", await WebSocketText.ReceiveAsync(socket, timeout.Token));
        await socket.SendAsync(Encoding.UTF8.GetBytes("hello"), WebSocketMessageType.Text, endOfMessage: true, timeout.Token);
        Assert.Equal("hello", await WebSocketText.ReceiveAsync(socket, timeout.Token));

        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
    }

    [Fact]
    public async Task ServerSentEvents_NameThePid_OnceASecond()
    {
        await using var server = await ServerProcess.StartAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var client = new HttpClient();
        using var response = await client.GetAsync($"http://127.0.0.1:{server.EndPoint.Port}/sse", HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token));

        // First "retry: 0" (reconnect at once when the stream ends), then the events.
        Assert.Equal("retry: 0", await reader.ReadLineAsync(timeout.Token));
        Assert.Equal("", await reader.ReadLineAsync(timeout.Token));
        Assert.Equal($"data: pid:{server.CurrentPid}", await reader.ReadLineAsync(timeout.Token));
        Assert.Equal("", await reader.ReadLineAsync(timeout.Token));
        Assert.Equal($"data: pid:{server.CurrentPid}", await reader.ReadLineAsync(timeout.Token));
    }
}
