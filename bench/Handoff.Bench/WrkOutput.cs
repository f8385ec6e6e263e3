using System.Text.Json;

namespace Handoff.Bench;

/// <summary>
/// Reads wrk's result. wrk prints percentiles only for a few fixed points, so the harness runs
/// it with <see cref="ReportScript"/>, whose <c>done</c> hook prints one line starting with
/// <c>WRKJSON</c> with every counter and the percentiles needed (in microseconds).
/// </summary>
internal static class WrkOutput
{
    public const string Marker = "WRKJSON ";

    public const string ReportScript = """
        done = function(summary, latency, requests)
          local e = summary.errors
          io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p99":%d,"p999":%d,"max":%d}\n',
            summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
            latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
        end
        """;

    /// <exception cref="FormatException">No report line, e.g. wrk failed to start.</exception>
    public static LoadResult Parse(string output)
    {
        string line = output.Split('\n').FirstOrDefault(l => l.StartsWith(Marker, StringComparison.Ordinal))
            ?? throw new FormatException("wrk printed no " + Marker.Trim() + " line; its output was:\n" + output);
        using var json = JsonDocument.Parse(line[Marker.Length..]);
        var root = json.RootElement;
        long Get(string name) => root.GetProperty(name).GetInt64();
        return new LoadResult
        {
            Requests = Get("requests"),
            DurationSeconds = Get("duration_us") / 1e6,
            ConnectErrors = Get("connect"),
            ReadErrors = Get("read"),
            WriteErrors = Get("write"),
            Timeouts = Get("timeout"),
            Non2xx = Get("status"),
            P50Ms = Get("p50") / 1000.0,
            P99Ms = Get("p99") / 1000.0,
            P999Ms = Get("p999") / 1000.0,
            MaxMs = Get("max") / 1000.0,
        };
    }
}
