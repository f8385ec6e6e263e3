using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace Handoff.AspNetCore;

/// <summary>
/// The first middleware of the pipeline: counts requests per connection for the drain, and
/// while draining adds <c>Connection: close</c> to every HTTP/1.x response, so the client
/// learns the connection ends before it sends another request on it.
/// </summary>
/// <remarks>
/// Nothing here allocates per request (a test counts the bytes): the callbacks are created once,
/// their state is an object the request already has, and the middleware does not await the rest
/// of the pipeline (an async method that did would box its state machine whenever the
/// application completes asynchronously). The request's end is seen through
/// <c>OnCompleted</c>, which Kestrel runs once the response is done, whatever happened, and
/// whose list it reuses from request to request, like <c>OnStarting</c>'s.
/// </remarks>
internal sealed class DrainMiddleware
{
    private readonly RequestDelegate _next;
    private readonly ConnectionDrainer _drainer;
    private readonly Func<object, Task> _onStarting;
    private readonly Func<object, Task> _onCompleted;

    public DrainMiddleware(RequestDelegate next, ConnectionDrainer drainer)
    {
        _next = next;
        _drainer = drainer;
        _onStarting = OnStarting;
        _onCompleted = static state =>
        {
            ((DrainableConnection)state).RequestEnded(Environment.TickCount64);
            return Task.CompletedTask;
        };
    }

    public Task InvokeAsync(HttpContext context)
    {
        var tracked = DrainableConnection.Find(context);
        string protocol = context.Request.Protocol;
        bool http1 = HttpProtocol.IsHttp11(protocol) || HttpProtocol.IsHttp10(protocol);
        if (tracked is not null)
        {
            if (!http1 && !tracked.IsHttp2 && HttpProtocol.IsHttp2(protocol))
            {
                tracked.IsHttp2 = true;
            }

            // A coarse clock (milliseconds, a few nanoseconds to read; Stopwatch takes 25): the
            // drain reads the same one to tell how long a connection has been idle.
            tracked.RequestStarted(Environment.TickCount64);
            context.Response.OnCompleted(_onCompleted, tracked);
        }

        if (http1)
        {
            context.Response.OnStarting(_onStarting, context);
        }

        // Only requests that ask to switch protocols pay for this: the WebSocket middleware,
        // later in the pipeline, upgrades through these features.
        if (context.Features.Get<IHttpUpgradeFeature>() is { IsUpgradableRequest: true } upgrade)
        {
            context.Features.Set<IHttpUpgradeFeature>(new DrainingUpgradeFeature(upgrade, _drainer, context));
        }
        else if (!http1 && context.Features.Get<IHttpExtendedConnectFeature>() is { IsExtendedConnect: true } connect)
        {
            context.Features.Set<IHttpExtendedConnectFeature>(new DrainingExtendedConnectFeature(connect, _drainer, context));
        }

        return _next(context);
    }

    private Task OnStarting(object state)
    {
        var context = (HttpContext)state;
        var response = context.Response;

        // Not on 101 Switching Protocols: the connection becomes a WebSocket (or another
        // protocol) and "close" would replace "Upgrade", failing the handshake.
        // The connection's own flag is looked up only while a reload drains some connections.
        // The hold is read before the moves: the commit marks the connections that move, then
        // ends the hold, so one of the two reads sees a connection that moves.
        if ((_drainer.IsDraining || (_drainer.AnyConnectionDraining && DrainableConnection.Find(context)?.Draining == true)) && response.StatusCode != StatusCodes.Status101SwitchingProtocols &&
            !(_drainer.HoldingForMove && DrainableConnection.Find(context)?.CanMove == true) &&
            !(_drainer.Moves is not null && DrainableConnection.Find(context)?.IsMoving == true))
        {
            response.Headers[HeaderNames.Connection] = "close";
        }

        return Task.CompletedTask;
    }
}

/// <summary>Puts <see cref="DrainMiddleware"/> in front of the application's pipeline.</summary>
internal sealed class DrainStartupFilter : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        app.UseMiddleware<DrainMiddleware>();
        next(app);
    };
}
