namespace Handoff.Bench;

/// <summary>One cell of the matrix: a server, a load, and the action repeated during it.</summary>
internal sealed record Scenario(string Server, string Load, string Action)
{
    public override string ToString() => $"{Server}/{Load}/{Action}";

    /// <summary>Every scenario of a full run.</summary>
    public static IReadOnlyList<Scenario> Full { get; } =
    [
        .. new[] { "keepalive", "close", "h1log", "h2c", "longmix" }.Select(l => new Scenario("kestrel", l, "none")),
        .. new[] { "keepalive", "close", "h1log" }.Select(l => new Scenario("kestrel", l, "restart")),
        .. new[] { "keepalive", "close", "h1log", "h2c", "longmix" }.SelectMany(l => new[] { new Scenario("handoff", l, "none"), new Scenario("handoff", l, "upgrade") }),
        .. new[] { "keepalive", "close", "h1log", "h2c" }.SelectMany(l => new[] { new Scenario("nginx", l, "none"), new Scenario("nginx", l, "upgrade") }),

        // The Go systems the project grew from, over HTTP/1.1 (their demos serve no h2c).
        .. GoBenchServer.Systems.SelectMany(system => new[] { "keepalive", "close", "h1log", "longmix" }.Select(l => new Scenario(system, l, "upgrade"))),
    ];

    /// <summary>The scenarios of a quick run (about two minutes).</summary>
    public static IReadOnlyList<Scenario> Quick { get; } =
    [
        new("kestrel", "keepalive", "none"),
        new("kestrel", "keepalive", "restart"),
        new("handoff", "keepalive", "none"),
        new("handoff", "keepalive", "upgrade"),
        new("handoff", "close", "upgrade"),
        new("handoff", "h1log", "upgrade"),
        new("handoff", "h2c", "upgrade"),
        new("nginx", "keepalive", "upgrade"),
        new("nginx", "h1log", "upgrade"),
        new("kestrel", "h1log", "restart"),
        new("grace", "keepalive", "upgrade"),
        new("tableflip", "keepalive", "upgrade"),
        new("shutdown", "keepalive", "upgrade"),
    ];
}
