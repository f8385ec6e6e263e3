namespace Handoff.Bench;

/// <summary>What one load generator run measured.</summary>
internal sealed record LoadResult
{
    public long Requests { get; init; }

    public double DurationSeconds { get; init; }

    public long ConnectErrors { get; init; }

    public long ReadErrors { get; init; }

    public long WriteErrors { get; init; }

    public long Timeouts { get; init; }

    public long Non2xx { get; init; }

    /// <summary>HTTP/2 streams that ended with an error (refused, reset, lost with their connection).</summary>
    public long StreamErrors { get; init; }

    /// <summary>New connections after the server closed one between requests (idle and
    /// WebSocket loads): the expected way across an action, not failures.</summary>
    public long Reconnects { get; init; }

    /// <summary>WebSocket load: messages in flight when the server's 1012/1001 close frame came,
    /// which RFC 6455 lets the server leave unanswered. Not failures; reported beside them.</summary>
    public long UnansweredAtClose { get; init; }

    public double P50Ms { get; init; }

    public double P99Ms { get; init; }

    public double P999Ms { get; init; }

    public double MaxMs { get; init; }

    /// <summary>Per-request (start, latency) samples, when the load logs them (the harness's own clients).
    /// Summarized into <see cref="RunResult"/> and not written to the results file.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<(DateTime Start, double LatencyMs)> Samples { get; init; } = [];

    /// <summary>Idle load: when the server closed each idle connection.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<DateTime> Closes { get; init; } = [];

    [System.Text.Json.Serialization.JsonInclude]
    public long Failed => ConnectErrors + ReadErrors + WriteErrors + Timeouts + Non2xx + StreamErrors;

    /// <summary>This result with the per-request samples and the percentiles taken from them.</summary>
    public LoadResult WithSamples(IReadOnlyCollection<(DateTime Start, double LatencyMs)> samples)
    {
        double[] sorted = [.. samples.Select(s => s.LatencyMs).Order()];
        return this with
        {
            P50Ms = Percentile(sorted, 50),
            P99Ms = Percentile(sorted, 99),
            P999Ms = Percentile(sorted, 99.9),
            MaxMs = sorted.Length > 0 ? sorted[^1] : 0,
            Samples = [.. samples],
        };
    }

    /// <summary>After a failed connect, 10 ms before the next (in-process loads), so that a
    /// refusing server does not turn the load into a connect loop, as wrk's does.</summary>
    public static async Task PauseAfterFailedConnectAsync(CancellationToken stop)
    {
        try
        {
            await Task.Delay(10, stop);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>The nearest-rank percentile of values sorted in ascending order (0 when none).</summary>
    public static double Percentile(IReadOnlyList<double> ascending, double percentile)
    {
        if (ascending.Count == 0)
        {
            return 0;
        }

        int rank = (int)Math.Ceiling(percentile / 100 * ascending.Count);
        return ascending[Math.Clamp(rank - 1, 0, ascending.Count - 1)];
    }

    public double RequestsPerSecond => DurationSeconds > 0 ? (Requests - Non2xx) / DurationSeconds : 0;
}
