using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
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
internal sealed class DrainMiddleware
{
    private readonly RequestDelegate _next;
    private readonly ConnectionDrainer _drainer;
    private readonly TimeProvider _time;

    public DrainMiddleware(RequestDelegate next, ConnectionDrainer drainer)
    {
        _next = next;
        _drainer = drainer;
        _time = TimeProvider.System;
    }

    public async Task InvokeAsync(HttpContext context)
    {
        var tracked = context.Features.Get<IConnectionItemsFeature>()?.Items.TryGetValue(ConnectionDrainer.ItemKey, out var item) == true
            ? item as TrackedConnection
            : null;
        bool http1 = HttpProtocol.IsHttp11(context.Request.Protocol) || HttpProtocol.IsHttp10(context.Request.Protocol);
        if (tracked is not null)
        {
            tracked.IsHttp2 = HttpProtocol.IsHttp2(context.Request.Protocol);
            tracked.RequestStarted();
        }

        if (http1)
        {
            context.Response.OnStarting(static state =>
            {
                var (drainer, tracked, response) = ((ConnectionDrainer, TrackedConnection?, HttpResponse))state;

                // Not on 101 Switching Protocols: the connection becomes a WebSocket (or another
                // protocol) and "close" would replace "Upgrade", failing the handshake.
                if ((drainer.IsDraining || tracked?.Draining == true) && response.StatusCode != StatusCodes.Status101SwitchingProtocols)
                {
                    response.Headers[HeaderNames.Connection] = "close";
                }

                return Task.CompletedTask;
            }, (_drainer, tracked, context.Response));
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

        try
        {
            await _next(context).ConfigureAwait(false);
        }
        finally
        {
            tracked?.RequestEnded(_time.GetTimestamp());
        }
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
