using System.Diagnostics.CodeAnalysis;
using Handoff;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps WebSocket endpoints whose connections move to the new generation at an
/// upgrade instead of being closed.</summary>
public static class HandoffWebSocketEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps a WebSocket endpoint at <paramref name="pattern"/> whose connections survive an
    /// upgrade: each runs <paramref name="session"/>, in the generation that accepts it and
    /// again, with the state it saved, in each generation it moves to (see
    /// <see cref="HandoffWebSocket"/> for a complete example). The new generation must map the
    /// same pattern; otherwise, as for TLS, HTTP/2 and compressed WebSockets, the connection is
    /// closed with 1012 (Service Restart) at the upgrade and its client reconnects.
    /// </summary>
    /// <remarks>Needs <c>UseHandoff()</c> and <c>app.UseWebSockets()</c>. A request that is not
    /// a WebSocket handshake gets 400. The session's exceptions are logged; the session ends the
    /// connection by returning (the socket is then closed).</remarks>
    /// <param name="endpoints">The application's routes.</param>
    /// <param name="pattern">The route; it also names the endpoint to the next generation.</param>
    /// <param name="session">Runs one connection, new or moved here.</param>
    /// <param name="accept">Chooses the sub-protocol and options of a new connection from its
    /// request (for example among <c>HttpContext.WebSockets.WebSocketRequestedProtocols</c>);
    /// a connection that moves keeps what was chosen.</param>
    /// <exception cref="InvalidOperationException">Handoff is not set up, or the pattern is
    /// mapped twice.</exception>
    public static IEndpointConventionBuilder MapHandoffWebSocket(this IEndpointRouteBuilder endpoints, [StringSyntax("Route")] string pattern, Func<HandoffWebSocket, Task> session, Func<HttpContext, WebSocketAcceptContext>? accept = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(pattern);
        ArgumentNullException.ThrowIfNull(session);
        var moves = endpoints.ServiceProvider.GetService<WebSocketMoves>()
            ?? throw new InvalidOperationException("MapHandoffWebSocket needs Handoff: call builder.WebHost.UseHandoff() before building the application.");
        var endpoint = moves.Add(pattern, session, accept);
        return endpoints.Map(pattern, endpoint.AcceptAsync).WithMetadata(endpoint);
    }
}
