using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Handoff.AspNetCore;

/// <summary>
/// An endpoint mapped with <c>MapHandoffWebSocket</c>: its request handler, the session function
/// it runs for each connection, new or moved here, and the endpoint metadata that tells the drain
/// its WebSockets may move (<see cref="WebSocketDrainStream"/>).
/// </summary>
internal sealed partial class HandoffWebSocketEndpoint(string name, Func<HandoffWebSocket, Task> session, Func<HttpContext, WebSocketAcceptContext>? accept, WebSocketMoves moves, ConnectionDrainer drainer, ILogger logger)
{
    /// <summary>The route pattern: the name under which the next generation resumes it.</summary>
    public string Name => name;

    /// <summary>The request handler: accepts the WebSocket and runs the session on it.</summary>
    public async Task AcceptAsync(HttpContext context)
    {
        if (!context.WebSockets.IsWebSocketRequest)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return;
        }

        var options = accept?.Invoke(context) ?? new WebSocketAcceptContext();
        using var webSocket = await context.WebSockets.AcceptWebSocketAsync(options).ConfigureAwait(false);

        // The stream the drain made for it (none when the connection is not Handoff's, say a
        // test server): the session can move only with it.
        var stream = context.Features.Get<WebSocketDrainStream>();

        // The request's abort, unless the connection is being moved: Kestrel aborts the request
        // when the socket it had reads end of file, which is what taking the socket away does.
        using var aborted = new CancellationTokenSource();
        using var abortedRegistration = context.RequestAborted.UnsafeRegister(static state =>
        {
            var (stream, aborted) = ((WebSocketDrainStream?, CancellationTokenSource))state!;
            if (stream?.IsHeldOrMoved != true)
            {
                aborted.Cancel();
            }
        }, (stream, aborted));
        var handoffSession = new HandoffWebSocket(webSocket, ReadOnlyMemory<byte>.Empty, context, aborted.Token);
        if (stream is not null)
        {
            stream.Session = handoffSession;
            handoffSession.Stream = stream;
            stream.SubProtocol = webSocket.SubProtocol;
            // Compression keeps its context from message to message, in both processes' deflate
            // streams: none of it can move.
            if (context.Response.Headers.SecWebSocketExtensions.ToString().Contains("permessage-deflate", StringComparison.OrdinalIgnoreCase))
            {
                stream.MoveRefusal ??= WebSocketRefusal.Compression;
            }

            // With a keep-alive timeout the WebSocket reads by itself while a ping waits for its
            // pong, also while the application handles a message: such a read is no boundary.
            if ((options.KeepAliveTimeout ?? moves.WebSocketOptions.KeepAliveTimeout) is var keepAlive && keepAlive > TimeSpan.Zero && keepAlive != Timeout.InfiniteTimeSpan)
            {
                stream.MoveRefusal ??= WebSocketRefusal.KeepAliveTimeout;
            }

            drainer.SessionStarted(stream);
        }

        try
        {
            await session(handoffSession).ConfigureAwait(false);
        }
        catch (Exception) when (handoffSession.Moved)
        {
            // Its loop ended because the connection moved: nothing went wrong.
        }
    }

    /// <summary>Runs the session of a WebSocket moved here until it returns (or moves again),
    /// then closes the connection if it is still this process's.</summary>
    public async Task RunResumedAsync(HandoffWebSocket handoffSession, WebSocketDrainStream stream, CancellationTokenSource aborted)
    {
        try
        {
            await session(handoffSession).ConfigureAwait(false);
        }
        catch (Exception) when (handoffSession.Moved)
        {
        }
#pragma warning disable CA1031 // The session's failure ends its connection, logged as Kestrel would log a request's.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.SessionFailed(logger, e, name);
        }
        finally
        {
            stream.End();
            handoffSession.WebSocket.Dispose();
            await stream.DisposeAsync().ConfigureAwait(false);
            aborted.Dispose();
        }
    }

    private static partial class Log
    {
        [LoggerMessage(97, LogLevel.Error, "The WebSocket session of {Endpoint}, moved here from the previous generation, failed; its connection is closed.", EventName = "ResumedSessionFailed")]
        public static partial void SessionFailed(ILogger logger, Exception exception, string endpoint);
    }
}
