using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Handoff.Testing;

namespace Handoff.Bench;

/// <summary>
/// The loads, each a real load generator that does not retry: every reset, refused connection
/// or lost request counts.
/// </summary>
internal static class LoadGenerator
{
    public const int Connections = 64;

    /// <summary>The idle load's connections.</summary>
    public const int IdleConnections = 10_000;

    /// <summary>The names of the loads, with what they are.</summary>
    public static readonly IReadOnlyDictionary<string, string> Descriptions = new Dictionary<string, string>
    {
        ["keepalive"] = $"HTTP/1.1 keep-alive, wrk -t2 -c{Connections}",
        ["close"] = $"a new connection per request, wrk -t2 -c{Connections} -H \"Connection: close\"",
        ["h1log"] = $"HTTP/1.1 keep-alive, {Connections} connections of the harness's own client (Handoff.Testing's LoadClient: the next request as soon as the last answered, a new connection after `Connection: close` or a failure, never a retry; a request sent on a connection the server closed counts, as with wrk), with a per-request log (latency after each action, timeline). h2load --h1, used before, reconnects after a response with `Connection: close` but not after a server closes a keep-alive connection without one, so its load collapsed at the first upgrade of nginx, grace and a Kestrel restart",
        ["h2c"] = $"HTTP/2 cleartext, {Connections} connections of the harness's own client (Handoff.Testing's Http2LoadClient: one stream at a time per connection, a new connection after GOAWAY, never a retry; every refused or reset stream, lost connection and failed connect counts), with a per-request log. h2load, used before, opens no new connection after GOAWAY, so its load collapsed at the first upgrade",
        ["longmix"] = $"wrk -t2 -c{Connections} keep-alive plus wrk -t1 -c8 on /?sleep=1 (requests in flight at every action)",
        ["https"] = $"HTTPS keep-alive (HTTP/1.1 over TLS, self-signed certificate), wrk -t2 -c{Connections}",
        ["h2tls"] = $"HTTP/2 over TLS (ALPN h2), {Connections} connections of the harness's HTTP/2 client, as h2c",
        ["h2c-node"] = $"HTTP/2 cleartext, {Connections} connections of Node.js's http2 client (nghttp2, the library under curl, h2load and nghttpx; Handoff.Testing's node/http2-load.js): the next request as soon as a response ends, a new connection after GOAWAY, never a retry; every stream refused (nghttp2 also refuses, without sending it, a request it had queued when a GOAWAY came) or reset counts. No per-request log",
        ["h2tls-node"] = $"HTTP/2 over TLS (ALPN h2), {Connections} connections of Node.js's http2 client, as h2c-node",
        ["ws"] = $"WebSockets, {Connections} connections of the harness's client (System.Net.WebSockets) on the test server's /ws, each sending a 5-byte message and waiting for its echo, again and again. A close frame with 1012 (Service Restart) or 1001 is answered and followed by a new connection (a reconnect, never a resend); every failed connect or handshake, connection lost without a close frame, other close status and echo timeout counts",
        ["ws-move"] = $"WebSockets, {Connections} connections of the same client on the test server's /ws-move, mapped with MapHandoffWebSocket: at an upgrade each moves to the new generation between two messages (its echo then comes from the new pid), so a close frame, reconnect or unanswered message is the move failing",
        ["nginx-get"] = $"the h1log load's client ({Connections} keep-alive connections, never a retry) through nginx 1.22 in front of the server, with an upstream keep-alive pool (keepalive 64, HTTP/1.1, no Connection header): GETs, which nginx sends again on another connection when one fails before any answer (proxy_next_upstream error, the default)",
        ["nginx-post"] = "the same through nginx with 1 KB POSTs, which nginx does not send again (a 502 counts as failed)",
        ["haproxy-get"] = $"the h1log load's client ({Connections} keep-alive connections) through HAProxy 2.6 in front of the server (http-reuse safe, retry-on by default for connect failures only): GETs",
        ["haproxy-post"] = "the same through HAProxy with 1 KB POSTs",
        ["idle"] = $"{IdleConnections:N0} idle keep-alive connections of the harness's client: each sends one request and waits; when the server closes it, the client opens a new connection and sends one request there, then waits again. Every failed connect, reset request and non-200 counts",
    };

    public static bool IsHttp2(string load) => load is "h2c" or "h2c-node";

    /// <summary>Whether the load is one of the harness's own clients, which log each request
    /// (latency after actions, timeline, collapse detection); wrk's loads do not.</summary>
    public static bool LogsEachRequest(string load) => load is "h1log" or "h2c" or "h2tls" or "ws" or "ws-move" or "idle" or "nginx-get" or "nginx-post" or "haproxy-get" or "haproxy-post";

    /// <summary>Whether the load reports latencies (Node's client counts outcomes only).</summary>
    public static bool MeasuresLatency(string load) => load is not ("h2c-node" or "h2tls-node");

    public static bool IsTls(string load) => load is "https" or "h2tls" or "h2tls-node";

    /// <summary>Starts the load and returns once it is under way (the idle load: once every
    /// connection is open and idle); the task it returns ends with the load, after the duration.</summary>
    public static async Task<Task<LoadResult>> StartAsync(string load, int port, TimeSpan duration, string directory)
    {
        if (load == "idle")
        {
            return await IdleLoad.StartAsync(port, IdleConnections, duration);
        }

        return RunAsync(load, port, duration, directory);
    }

    private static async Task<LoadResult> RunAsync(string load, int port, TimeSpan duration, string directory)
    {
        string url = $"{(IsTls(load) ? "https" : "http")}://127.0.0.1:{port}/";
        string seconds = ((int)duration.TotalSeconds).ToString(CultureInfo.InvariantCulture);
        string script = Path.Combine(directory, "report.lua");
        File.WriteAllText(script, WrkOutput.ReportScript);
        string[] wrk = ["-t2", $"-c{Connections}", $"-d{seconds}s", "--timeout", "10s", "-s", script];
        var limit = duration + TimeSpan.FromSeconds(60);
        switch (load)
        {
            case "keepalive" or "https":
                return WrkOutput.Parse((await BenchProcess.RunAsync("wrk", [.. wrk, url], limit)).Output);
            case "close":
                return WrkOutput.Parse((await BenchProcess.RunAsync("wrk", [.. wrk, "-H", "Connection: close", url], limit)).Output);
            case "longmix":
                var main = BenchProcess.RunAsync("wrk", [.. wrk, url], limit);
                var slow = BenchProcess.RunAsync("wrk", ["-t1", "-c8", $"-d{seconds}s", "--timeout", "10s", "-s", script, url + "?sleep=1"], limit);
                return Combine(WrkOutput.Parse((await main).Output), WrkOutput.Parse((await slow).Output));
            case "h2c" or "h2tls":
                return await Http2LoadAsync(port, duration, tls: load == "h2tls");
            case "h2c-node" or "h2tls-node":
                return await NodeHttp2LoadAsync(port, duration, tls: load == "h2tls-node");
            case "ws" or "ws-move":
                return await WebSocketLoad.RunAsync(port, Connections, duration, moving: load == "ws-move");
            case "h1log":
                return await Http1LoadAsync(port, duration);
            case "nginx-get" or "nginx-post" or "haproxy-get" or "haproxy-post":
                using (var proxy = await ReverseProxy.StartAsync(load[..load.IndexOf('-', StringComparison.Ordinal)], directory, new IPEndPoint(IPAddress.Loopback, port)))
                {
                    return await Http1LoadAsync(proxy.EndPoint.Port, duration, postBytes: load.EndsWith("-post", StringComparison.Ordinal) ? 1024 : 0);
                }

            default:
                throw new ArgumentException($"unknown load '{load}'; known: {string.Join(", ", Descriptions.Keys)}", nameof(load));
        }
    }

    private static async Task<LoadResult> Http1LoadAsync(int port, TimeSpan duration, int postBytes = 0)
    {
        var (report, seconds, samples) = await RunSampledAsync(sampled => new LoadClient(new IPEndPoint(IPAddress.Loopback, port), Connections, keepAlive: true, path: "/", sampled: sampled, postBytes: postBytes), duration);

        // Failures read "HTTP 503" or "HH:mm:ss.fff SocketException: Connection refused" and the
        // like: a refused connect, else an error or timeout on a request sent.
        long status = report.Failures.Count(f => f.StartsWith("HTTP ", StringComparison.Ordinal));
        long connect = report.Failures.Count(f => f.Contains("Connection refused", StringComparison.Ordinal));
        long timeouts = report.Failures.Count(f => f.Contains("OperationCanceledException", StringComparison.Ordinal));
        return new LoadResult
        {
            Requests = report.Succeeded + status,
            DurationSeconds = seconds,
            ConnectErrors = connect,
            Non2xx = status,
            Timeouts = timeouts,
            ReadErrors = report.Failures.Count - status - connect - timeouts,
        }.WithSamples(samples);
    }

    private static async Task<LoadResult> Http2LoadAsync(int port, TimeSpan duration, bool tls)
    {
        var (report, seconds, samples) = await RunSampledAsync(sampled => new Http2LoadClient(new IPEndPoint(IPAddress.Loopback, port), Connections, tls, sampled: sampled), duration);

        // Failures read "HH:mm:ss.fff connect: ...", "HH:mm:ss.fff stream N: status 503" or
        // "HH:mm:ss.fff stream N: <refused, reset, connection lost>".
        long connect = report.Failures.Count(f => f.Contains(" connect: ", StringComparison.Ordinal));
        long status = report.Failures.Count(f => f.Contains(": status ", StringComparison.Ordinal));
        return new LoadResult
        {
            Requests = report.Succeeded + status,
            DurationSeconds = seconds,
            ConnectErrors = connect,
            Non2xx = status,
            StreamErrors = report.Failures.Count - connect - status,
        }.WithSamples(samples);
    }

    private static async Task<LoadResult> NodeHttp2LoadAsync(int port, TimeSpan duration, bool tls)
    {
        var clock = Stopwatch.StartNew();
        await using var node = NodeHttp2Load.Start(new IPEndPoint(IPAddress.Loopback, port), Connections, tls);
        await Task.Delay(duration);
        var report = await node.StopAsync();

        // Failures read "<time> stream N: status 503", "<time> stream N: <code> <message>" (a
        // refused or reset stream) or "<time> session: <code> ..." (see node/http2-load.js).
        long status = report.Failures.Count(f => f.Contains(" status ", StringComparison.Ordinal));
        long connect = report.Failures.Count(f => f.Contains("ECONNREFUSED", StringComparison.Ordinal));
        return new LoadResult
        {
            Requests = report.Succeeded + status,
            DurationSeconds = clock.Elapsed.TotalSeconds,
            ConnectErrors = connect,
            Non2xx = status,
            StreamErrors = report.Failures.Count - connect - status,
        };
    }

    /// <summary>Runs one of Handoff.Testing's load clients for the duration with a per-request
    /// log, and returns its report, how long it ran (stopping included) and the log.</summary>
    private static async Task<(LoadReport Report, double Seconds, ConcurrentQueue<(DateTime Start, double LatencyMs)> Samples)> RunSampledAsync(
        Func<Action<DateTime, TimeSpan>, ILoad> start, TimeSpan duration)
    {
        var samples = new ConcurrentQueue<(DateTime Start, double LatencyMs)>();
        var clock = Stopwatch.StartNew();
        var client = start((at, elapsed) => samples.Enqueue((at, elapsed.TotalMilliseconds)));
        await Task.Delay(duration);
        var report = await client.StopAsync();
        return (report, clock.Elapsed.TotalSeconds, samples);
    }

    /// <summary>Checks that "Connection: close" really closes: the response must say so.</summary>
    public static async Task<bool> ServerClosesOnRequestAsync(int port)
    {
        var (_, output) = await BenchProcess.RunAsync("curl", ["-s", "-D", "-", "-o", "/dev/null", "-H", "Connection: close", $"http://127.0.0.1:{port}/"], TimeSpan.FromSeconds(30));
        return output.Contains("Connection: close", StringComparison.OrdinalIgnoreCase);
    }

    private static LoadResult Combine(LoadResult main, LoadResult slow) => main with
    {
        Requests = main.Requests + slow.Requests,
        ConnectErrors = main.ConnectErrors + slow.ConnectErrors,
        ReadErrors = main.ReadErrors + slow.ReadErrors,
        WriteErrors = main.WriteErrors + slow.WriteErrors,
        Timeouts = main.Timeouts + slow.Timeouts,
        Non2xx = main.Non2xx + slow.Non2xx,
    };
}
