using Handoff.Bench;

namespace Handoff.Tests.Bench;

/// <summary>The benchmark harness reads wrk's and h2load's output right.</summary>
public sealed class LoadOutputTests
{
    // Real output of wrk 4.1.0 with WrkOutput.ReportScript, nginx binary upgrades under load.
    private const string Wrk = """
        Running 12s test @ http://127.0.0.1:40123/
          2 threads and 64 connections
          Thread Stats   Avg      Stdev     Max   +/- Stdev
            Latency   512.31us    1.02ms  31.20ms   97.12%
            Req/Sec    79.51k     6.21k   90.12k    70.00%
          1898133 requests in 12.00s, 300.21MB read
          Socket errors: connect 0, read 192, write 0, timeout 0
        Requests/sec: 158174.00
        Transfer/sec:     25.02MB
        WRKJSON {"requests":1898133,"duration_us":12000431,"connect":0,"read":192,"write":0,"status":0,"timeout":0,"p50":402,"p99":3741,"p999":9120,"max":31200}

        """;

    // Real output of h2load 1.52.0 (--h1 -c16 -D 9) against HelloSleep during upgrades.
    private const string H2load = """
        starting benchmark...
        spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 9s of main duration for measurements.
        Warm-up started for thread #0.
        progress: 10% of clients started
        Warm-up phase is over for thread #0.
        Main benchmark duration is started for thread #0.
        Main benchmark duration is over for thread #0. Stopping all clients.
        Stopped all clients for thread #0

        finished in 9.00s, 33841.33 req/s, 5.52MB/s
        requests: 304572 total, 304588 started, 304572 done, 304572 succeeded, 0 failed, 0 errored, 0 timeout
        status codes: 304572 2xx, 0 3xx, 0 4xx, 0 5xx
        traffic: 49.66MB (52070212) total, 28.76MB (30153228) headers (space savings 0.00%), 15.97MB (16750240) data
                             min         max         mean         sd        +/- sd
        time for request:       33us    109.20ms       471us      1.47ms    99.66%
        time for connect:       93us       344us       204us        79us    62.50%
        time to 1st byte:      391us      1.65ms       858us       417us    68.75%
        req/s           :    2110.29     2142.58     2115.11        7.85    93.75%
        """;

    [Fact]
    public void Wrk_ReportLine_GivesCountersAndPercentiles()
    {
        var result = WrkOutput.Parse(Wrk);

        Assert.Equal(1898133, result.Requests);
        Assert.Equal(12.000431, result.DurationSeconds, 6);
        Assert.Equal(192, result.ReadErrors);
        Assert.Equal(192, result.Failed);
        Assert.Equal(0.402, result.P50Ms, 6);
        Assert.Equal(3.741, result.P99Ms, 6);
        Assert.Equal(9.12, result.P999Ms, 6);
        Assert.Equal(31.2, result.MaxMs, 6);
        Assert.Equal(1898133 / 12.000431, result.RequestsPerSecond, 3);
    }

    [Fact]
    public void Wrk_NoReportLine_ThrowsWithTheOutput()
    {
        var e = Assert.Throws<FormatException>(() => WrkOutput.Parse("unable to connect to 127.0.0.1:1 Connection refused"));

        Assert.Contains("Connection refused", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void H2load_SummaryAndLog_GiveCountsAndPercentilesFromTheLog()
    {
        string[] log =
        [
            "1795305725924169\t200\t1000",
            "1795305725924170\t200\t2000",
            "1795305725924171\t200\t3000",
            "1795305725924172\t503\t4000",
            "1795305725924173\t-1\t5000",
            "garbage line",
        ];

        // As h2load reports a 503 and a failed stream: both are in "failed", the 503 also in 5xx.
        string output = H2load
            .Replace("304572 succeeded, 0 failed, 0 errored", "304570 succeeded, 2 failed, 1 errored", StringComparison.Ordinal)
            .Replace("304572 2xx, 0 3xx, 0 4xx, 0 5xx", "304570 2xx, 0 3xx, 0 4xx, 1 5xx", StringComparison.Ordinal);

        var result = H2loadOutput.Parse(output, log);

        Assert.Equal(304572, result.Requests);
        Assert.Equal(9.0, result.DurationSeconds);
        Assert.Equal(1, result.StreamErrors);
        Assert.Equal(1, result.Non2xx);
        Assert.Equal(2, result.Failed);
        // The failed request (no status) is counted by the summary's "failed", not again here.
        Assert.Equal(4, result.Samples.Count);
        Assert.Equal(2.0, result.P50Ms);
        Assert.Equal(4.0, result.MaxMs);
        Assert.Equal(DateTime.UnixEpoch.AddTicks(17953057259241690), result.Samples[0].Start);
    }

    [Fact]
    public void H2load_FailedAndErrored_CountAsStreamErrorsAndTimeouts()
    {
        string output = H2load.Replace("304572 succeeded, 0 failed, 0 errored, 0 timeout", "304560 succeeded, 12 failed, 10 errored, 2 timeout", StringComparison.Ordinal);

        var result = H2loadOutput.Parse(output, []);

        Assert.Equal(10, result.StreamErrors);
        Assert.Equal(2, result.Timeouts);
        Assert.Equal(12, result.Failed);
    }

    [Fact]
    public void Percentile_NearestRank()
    {
        double[] values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

        Assert.Equal(5, H2loadOutput.Percentile(values, 50));
        Assert.Equal(10, H2loadOutput.Percentile(values, 99));
        Assert.Equal(1, H2loadOutput.Percentile(values, 0));
        Assert.Equal(0, H2loadOutput.Percentile([], 99));
    }
}
