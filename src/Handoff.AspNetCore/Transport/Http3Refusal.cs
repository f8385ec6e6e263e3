using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace Handoff.AspNetCore;

/// <summary>
/// HTTP/3 is refused, at start and by name. Kestrel serves it through QUIC, whose UDP sockets
/// the QUIC library opens itself: there is no descriptor to hand over, so a new generation
/// would bind the same UDP port beside the old one (or fail to), and the two would split the
/// traffic or every upgrade would fail. Neither is acceptable; so an endpoint that enables
/// HTTP/3 stops the server before it serves anything.
/// </summary>
internal static class Http3Refusal
{
    /// <summary>The configured endpoints that enable HTTP/3, as error messages: from
    /// <c>Kestrel:EndpointDefaults:Protocols</c> and <c>Kestrel:Endpoints:NAME:Protocols</c>.</summary>
    public static IEnumerable<string> Check(IConfiguration configuration)
    {
        var kestrel = configuration.GetSection("Kestrel");
        if (EnablesHttp3(kestrel["EndpointDefaults:Protocols"]))
        {
            yield return Message($"Kestrel:EndpointDefaults:Protocols is '{kestrel["EndpointDefaults:Protocols"]}', which enables");
        }

        foreach (var endpoint in kestrel.GetSection("Endpoints").GetChildren())
        {
            if (EnablesHttp3(endpoint["Protocols"]))
            {
                yield return Message($"Kestrel:Endpoints:{endpoint.Key}:Protocols ({endpoint["Url"]}) is '{endpoint["Protocols"]}', which enables");
            }
        }
    }

    /// <summary>The refusal, after <paramref name="what"/> ("... enables").</summary>
    public static string Message(string what) =>
        $"{what} HTTP/3. Handoff cannot hand HTTP/3 (QUIC over UDP) over to a new generation: " +
        "the QUIC library owns its UDP sockets, so two generations would split the port's traffic or every upgrade would fail. " +
        "Remove Http3 from the protocols (Http1AndHttp2 keeps HTTP/1.1 and HTTP/2 over TCP).";

    // As Kestrel reads the value (Enum.TryParse): names, combinations, numbers.
    private static bool EnablesHttp3(string? protocols) =>
        Enum.TryParse<HttpProtocols>(protocols, ignoreCase: true, out var parsed) && parsed.HasFlag(HttpProtocols.Http3);
}

/// <summary>Kestrel's transport for HTTP/3 under Handoff: refuses every endpoint, naming it,
/// for one configured in code (<c>listenOptions.Protocols</c>), which the start-up check of the
/// configuration cannot see. Registered after Kestrel's QUIC transport, so Kestrel asks it first.</summary>
internal sealed partial class RefusingMultiplexedListenerFactory(ILogger<RefusingMultiplexedListenerFactory> logger) : IMultiplexedConnectionListenerFactory
{
    public ValueTask<IMultiplexedConnectionListener> BindAsync(EndPoint endpoint, IFeatureCollection? features = null, CancellationToken cancellationToken = default)
    {
        string message = Http3Refusal.Message($"The endpoint {endpoint} (its Protocols, set in code,) enables");
        Log.Refused(logger, message);
        EarlyStart.Run().ReadyPipe?.ReportFailed(message);
        throw new NotSupportedException(message);
    }

    private static partial class Log
    {
        [LoggerMessage(46, LogLevel.Critical, "{Message}", EventName = "Http3Refused")]
        public static partial void Refused(ILogger logger, string message);
    }
}
