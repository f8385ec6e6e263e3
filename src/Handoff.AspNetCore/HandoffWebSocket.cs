using System.Net.WebSockets;
using Microsoft.AspNetCore.Http;

namespace Handoff;

/// <summary>
/// A WebSocket session of an endpoint mapped with
/// <see cref="Microsoft.AspNetCore.Builder.HandoffWebSocketEndpointRouteBuilderExtensions.MapHandoffWebSocket"/>: at an
/// upgrade the connection moves to the new generation between two messages, with the state
/// <see cref="SaveState"/> returns, and the same session function carries on there with the
/// rebuilt <see cref="WebSocket"/> and that state. The client sees nothing: no close, no lost
/// or repeated message.
/// </summary>
/// <remarks>
/// <para>When the connection moves, the application's pending
/// <see cref="System.Net.WebSockets.WebSocket.ReceiveAsync(Memory{byte}, CancellationToken)"/>
/// (and any later call on the socket) throws <see cref="OperationCanceledException"/> and
/// <see cref="Moved"/> is true: the session function returns without closing the socket, which
/// is the new generation's now. A WebSocket that cannot move (TLS, HTTP/2, no
/// <see cref="SaveState"/>, a new generation without this endpoint, see docs/connections.md) is
/// closed with 1012 (Service Restart) as any other, and its client reconnects.</para>
/// </remarks>
/// <example>
/// <code>
/// app.UseWebSockets();
/// app.MapHandoffWebSocket("/echo", async session =>
/// {
///     // A new connection has no state; a moved one has what SaveState returned.
///     long count = session.State.IsEmpty ? 0 : BitConverter.ToInt64(session.State.Span);
///     session.SaveState = () => BitConverter.GetBytes(count);
///     var buffer = new byte[4096];
///     try
///     {
///         while (true)
///         {
///             var received = await session.WebSocket.ReceiveAsync(buffer, session.Aborted);
///             if (received.MessageType == WebSocketMessageType.Close)
///             {
///                 await session.WebSocket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, session.Aborted);
///                 return;
///             }
///
///             count++;
///             await session.WebSocket.SendAsync(buffer.AsMemory(0, received.Count), received.MessageType, received.EndOfMessage, session.Aborted);
///         }
///     }
///     catch (OperationCanceledException) when (session.Moved)
///     {
///         // The new generation goes on with this connection and count.
///     }
/// });
/// </code>
/// </example>
public sealed class HandoffWebSocket
{
    private volatile bool _moved;

    internal HandoffWebSocket(WebSocket webSocket, ReadOnlyMemory<byte> state, HttpContext? httpContext, CancellationToken aborted)
    {
        WebSocket = webSocket;
        State = state;
        HttpContext = httpContext;
        Aborted = aborted;
    }

    /// <summary>The server WebSocket: accepted here, or rebuilt here for a connection that moved
    /// from the previous generation.</summary>
    public WebSocket WebSocket { get; }

    /// <summary>What <see cref="SaveState"/> returned in the previous generation when the
    /// connection moved here; empty for a connection accepted by this generation.</summary>
    public ReadOnlyMemory<byte> State { get; }

    /// <summary>True when the connection moved here from the previous generation.</summary>
    public bool IsResumed => HttpContext is null;

    /// <summary>The request that opened the WebSocket, in the generation that accepted it;
    /// null when the connection moved here (keep what later generations need in the state).</summary>
    public HttpContext? HttpContext { get; }

    /// <summary>Cancelled when the connection ends without moving: the client went away, or the
    /// server stops and its drain timeout has passed. Use it rather than the request's
    /// <c>RequestAborted</c>, which a move also fires in the old generation.</summary>
    public CancellationToken Aborted { get; }

    /// <summary>
    /// Returns the session's state as bytes (at most 1 MiB) when the connection moves. Handoff
    /// calls it between two messages, with the WebSocket's reads and writes held, so the state
    /// matches what the client has seen; it must return at once (within a second). While it is
    /// null the connection does not move: it is closed with 1012 at an upgrade, as any WebSocket
    /// not mapped with Handoff. Return an empty array for a session with no state.
    /// </summary>
    public Func<ReadOnlyMemory<byte>>? SaveState { get; set; }

    /// <summary>
    /// The whole messages this generation's <see cref="WebSocket"/> has handed to the connection
    /// (their last frame written), counted from 0 in each generation; 0 for a WebSocket that
    /// cannot move. Read it in <see cref="SaveState"/> to tell a message that went from one that
    /// did not: a send that was writing when the move came counts here once written, even if its
    /// <c>SendAsync</c> has not returned yet; a send that waited for the move does not count, and
    /// throws <see cref="OperationCanceledException"/>. A session that sends from a queue (server
    /// push) saves the queued messages past this count, and the new generation sends them: none
    /// lost, none twice (the sample samples/ChatRoom does).
    /// </summary>
    public long MessagesSent => Stream?.MessagesWritten ?? 0;

    /// <summary>The stream under the WebSocket, when it can move.</summary>
    internal Handoff.AspNetCore.WebSocketDrainStream? Stream { get; set; }

    /// <summary>True once the connection moved to the new generation: the session must end
    /// without using or closing <see cref="WebSocket"/>.</summary>
    public bool Moved
    {
        get => _moved;
        internal set => _moved = value;
    }
}
