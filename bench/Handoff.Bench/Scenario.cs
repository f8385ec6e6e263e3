namespace Handoff.Bench;

/// <summary>One cell of the matrix: a server, a load, and the action repeated during it.</summary>
internal sealed record Scenario(string Server, string Load, string Action)
{
    public override string ToString() => $"{Server}/{Load}/{Action}";

    /// <summary>The systems of the headline, in its order, with their action and what they are
    /// called there.</summary>
    public static IReadOnlyList<(string Server, string Action, string Title)> Systems { get; } =
    [
        ("handoff", "upgrade", "**Handoff** (Kestrel, `kill -USR2`)"),
        ("handoff-aot", "upgrade", "**Handoff**, NativeAOT (samples/HelloAot, `kill -USR2`)"),
        ("nginx", "upgrade", "nginx binary upgrade"),
        ("tableflip", "upgrade", "cloudflare/tableflip"),
        ("grace", "upgrade", "facebookgo/grace"),
        ("shutdown", "upgrade", "net/http Shutdown demo"),
        ("kestrel-socket", "restart", "Kestrel restart, socket-activated"),
        ("kestrel", "restart", "Kestrel restart, naive"),
    ];

    /// <summary>The loads each system serves (the NativeAOT sample serves plain HTTP/1.1 only and
    /// has no WebSocket endpoint; the Go demos and nginx's `return 200` have no
    /// WebSocket endpoint; the Go demos serve no TLS or h2c; a plain Kestrel restart waits up to
    /// its ShutdownTimeout for open WebSockets, so it is not measured with them).</summary>
    public static IReadOnlyDictionary<string, string[]> LoadsOf { get; } = new Dictionary<string, string[]>
    {
        ["handoff"] = ["keepalive", "close", "h1log", "h2c", "h2tls", "h2c-node", "h2tls-node", "https", "longmix", "ws", "ws-move", "idle", "nginx-get", "nginx-post", "haproxy-get", "haproxy-post"],
        ["handoff-aot"] = ["keepalive", "close", "h1log", "idle"],
        ["nginx"] = ["keepalive", "close", "h1log", "h2c", "h2tls", "h2c-node", "h2tls-node", "https", "idle"],
        ["tableflip"] = ["keepalive", "close", "h1log", "longmix", "idle"],
        ["grace"] = ["keepalive", "close", "h1log", "longmix", "idle"],
        ["shutdown"] = ["keepalive", "close", "h1log", "longmix", "idle"],
        ["kestrel-socket"] = ["keepalive", "close", "h1log", "h2c", "idle", "nginx-get", "nginx-post", "haproxy-get", "haproxy-post"],
        ["kestrel"] = ["keepalive", "close", "h1log", "h2c", "nginx-get", "nginx-post", "haproxy-get", "haproxy-post"],
    };

    /// <summary>The loads of the steady comparison: plain Kestrel and Kestrel with Handoff, no
    /// action, in pairs.</summary>
    public static IReadOnlyList<string> SteadyLoads { get; } = ["keepalive", "close", "h1log", "h2c", "h2tls", "https", "longmix"];

    /// <summary>The loads of the warm comparison (<see cref="Runner.WarmAsync"/>): plain Kestrel
    /// and Kestrel with Handoff kept running, warmed up, then measured in alternating bursts.
    /// The loads whose server CPU per request is the cost users pay on every request: keep-alive,
    /// a connection per request, TLS, HTTP/2.</summary>
    public static IReadOnlyList<string> WarmLoads { get; } = ["keepalive", "close", "https", "h2c"];

    /// <summary>The warm scenarios of a run: "kestrel/LOAD/warm" and "handoff/LOAD/warm" (so
    /// <c>--only warm</c> or <c>--only keepalive/warm</c> picks them).</summary>
    public static IEnumerable<Scenario> Warm(IEnumerable<string> loads) =>
        loads.SelectMany(load => new[] { new Scenario("kestrel", load, "warm"), new Scenario("handoff", load, "warm") });

    /// <summary>Every scenario of a full run: each system under each load it serves, with its
    /// action; then the steady pairs.</summary>
    public static IReadOnlyList<Scenario> Full { get; } =
    [
        .. Systems.SelectMany(s => LoadsOf[s.Server].Select(load => new Scenario(s.Server, load, s.Action))),
        .. SteadyLoads.SelectMany(load => new[] { new Scenario("kestrel", load, "none"), new Scenario("handoff", load, "none") }),
    ];

    /// <summary>The scenarios of a quick run (a few minutes).</summary>
    public static IReadOnlyList<Scenario> Quick { get; } =
    [
        new("handoff", "keepalive", "upgrade"),
        new("handoff", "h2tls", "upgrade"),
        new("handoff", "h2c-node", "upgrade"),
        new("handoff", "ws", "upgrade"),
        new("handoff", "ws-move", "upgrade"),
        new("handoff", "idle", "upgrade"),
        new("handoff-aot", "keepalive", "upgrade"),
        new("nginx", "keepalive", "upgrade"),
        new("grace", "keepalive", "upgrade"),
        new("kestrel-socket", "keepalive", "restart"),
        new("kestrel", "keepalive", "restart"),
        new("kestrel", "keepalive", "none"),
        new("handoff", "keepalive", "none"),
    ];

    /// <summary>A run without an action, measured in pairs.</summary>
    public bool Steady => Action == "none";

    /// <summary>A burst of the warm comparison: no action, a process that had already served
    /// the same load for the warm-up.</summary>
    public bool IsWarm => Action == "warm";
}
