using System.Globalization;
using System.Text.RegularExpressions;

namespace Handoff.Bench;

/// <summary>
/// Reads h2load's summary and its per-request log (<c>--log-file</c>: start time in
/// microseconds since the epoch, status code, microseconds to the end of the response, one
/// request a line). Percentiles come from the log, since h2load prints only min, max and mean.
/// </summary>
internal static partial class H2loadOutput
{
    /// <exception cref="FormatException">The summary lines are missing.</exception>
    public static LoadResult Parse(string output, IEnumerable<string> logLines)
    {
        var finished = FinishedRegex().Match(output);
        var requests = RequestsRegex().Match(output);
        var status = StatusRegex().Match(output);
        if (!finished.Success || !requests.Success || !status.Success)
        {
            throw new FormatException("h2load's summary is missing; its output was:\n" + output);
        }

        long Group(Match m, string name) => long.Parse(m.Groups[name].Value, CultureInfo.InvariantCulture);
        var samples = new List<(DateTime, double)>();
        long non2xx = Group(status, "s4") + Group(status, "s5");
        foreach (string line in logLines)
        {
            string[] fields = line.Split('\t');
            if (fields.Length < 3 || !long.TryParse(fields[0], out long startUs) || !int.TryParse(fields[1], out int code) || !long.TryParse(fields[2], out long elapsedUs))
            {
                continue;
            }

            if (code < 100)
            {
                continue; // A request that failed (no status): counted in the summary's "failed".
            }

            samples.Add((DateTime.UnixEpoch.AddTicks(startUs * 10), elapsedUs / 1000.0));
        }

        double[] sorted = [.. samples.Select(s => s.Item2).Order()];
        long done = Group(requests, "done");
        return new LoadResult
        {
            Requests = done,
            DurationSeconds = double.Parse(finished.Groups["seconds"].Value, CultureInfo.InvariantCulture),
            Timeouts = Group(requests, "timeout"),
            // Requests still in flight when the duration ends are "started" but neither done
            // nor failed.
            // h2load's "failed" counts every request that did not succeed: streams that failed,
            // responses with a 4xx or 5xx status, and timeouts. Split it so that Failed adds up to
            // it exactly (counting 4xx/5xx beside "failed" would count them twice).
            StreamErrors = Group(requests, "failed") - Group(requests, "timeout") - non2xx,
            Non2xx = non2xx,
            P50Ms = Percentile(sorted, 50),
            P99Ms = Percentile(sorted, 99),
            P999Ms = Percentile(sorted, 99.9),
            MaxMs = sorted.Length > 0 ? sorted[^1] : 0,
            Samples = samples,
        };
    }

    /// <summary>Nearest-rank percentile of ascending values; 0 for none.</summary>
    public static double Percentile(IReadOnlyList<double> ascending, double percentile)
    {
        if (ascending.Count == 0)
        {
            return 0;
        }

        int rank = (int)Math.Ceiling(percentile / 100 * ascending.Count);
        return ascending[Math.Clamp(rank - 1, 0, ascending.Count - 1)];
    }

    [GeneratedRegex(@"finished in (?<seconds>[\d.]+)s")]
    private static partial Regex FinishedRegex();

    [GeneratedRegex(@"requests: (?<total>\d+) total, (?<started>\d+) started, (?<done>\d+) done, (?<ok>\d+) succeeded, (?<failed>\d+) failed, (?<errored>\d+) errored, (?<timeout>\d+) timeout")]
    private static partial Regex RequestsRegex();

    [GeneratedRegex(@"status codes: (?<s2>\d+) 2xx, (?<s3>\d+) 3xx, (?<s4>\d+) 4xx, (?<s5>\d+) 5xx")]
    private static partial Regex StatusRegex();
}
