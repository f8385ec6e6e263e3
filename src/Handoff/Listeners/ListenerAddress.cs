using System.Net;
using System.Net.Sockets;

namespace Handoff;

/// <summary>How Handoff compares and prints listener addresses.</summary>
internal static class ListenerAddress
{
    /// <summary>
    /// True when a socket bound to <paramref name="bound"/> satisfies a request for
    /// <paramref name="requested"/>: the same address and port, or the same address when the
    /// request says port 0 ("any port"), or the same Unix socket path.
    /// </summary>
    public static bool Satisfies(EndPoint bound, EndPoint requested) => (bound, requested) switch
    {
        (IPEndPoint b, IPEndPoint r) => Normalize(b.Address).Equals(Normalize(r.Address)) && (r.Port == 0 || r.Port == b.Port),
        (UnixDomainSocketEndPoint b, UnixDomainSocketEndPoint r) => string.Equals(b.ToString(), r.ToString(), StringComparison.Ordinal),
        _ => false,
    };

    public static bool IsSupported(EndPoint endPoint) =>
        endPoint is IPEndPoint or UnixDomainSocketEndPoint;

    public static string Format(EndPoint endPoint) => endPoint switch
    {
        UnixDomainSocketEndPoint unix => "unix:" + unix,
        _ => endPoint.ToString() ?? "?",
    };

    // A dual-mode [::] socket reports IPv4-mapped addresses for nothing it is bound to, but
    // ::ffff:127.0.0.1 and 127.0.0.1 must still count as the same request.
    private static IPAddress Normalize(IPAddress address) =>
        address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}
