using System.Net.WebSockets;
using System.Text;

namespace Handoff.Testing;

/// <summary>Text messages from a WebSocket, for the tests of the test server's /ws.</summary>
public static class WebSocketText
{
    /// <summary>Reads one whole message (all its frames) as UTF-8.</summary>
    public static async Task<string> ReceiveAsync(WebSocket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[4096];
        var text = new StringBuilder();
        ValueWebSocketReceiveResult result;
        do
        {
            result = await socket.ReceiveAsync(buffer.AsMemory(), cancellationToken);
            text.Append(Encoding.UTF8.GetString(buffer, 0, result.Count));
        }
        while (!result.EndOfMessage);

        return text.ToString();
    }

    /// <summary>Reads and drops messages until the server's close frame arrives.</summary>
    public static async Task ReceiveCloseAsync(WebSocket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[256];
        while ((await socket.ReceiveAsync(buffer.AsMemory(), cancellationToken)).MessageType != WebSocketMessageType.Close)
        {
        }
    }
}
