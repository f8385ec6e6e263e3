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

    /// <summary>h2load's "errored": streams that ended with an error (reset, refused, closed).</summary>
    public long StreamErrors { get; init; }

    public double P50Ms { get; init; }

    public double P99Ms { get; init; }

    public double P999Ms { get; init; }

    public double MaxMs { get; init; }

    /// <summary>Per-request (start, latency) samples, when the generator logs them (h2load).
    /// Summarized into <see cref="RunResult"/> and not written to the results file.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<(DateTime Start, double LatencyMs)> Samples { get; init; } = [];

    [System.Text.Json.Serialization.JsonInclude]
    public long Failed => ConnectErrors + ReadErrors + WriteErrors + Timeouts + Non2xx + StreamErrors;

    public double RequestsPerSecond => DurationSeconds > 0 ? (Requests - Non2xx) / DurationSeconds : 0;
}
