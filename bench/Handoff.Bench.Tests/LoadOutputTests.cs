using Handoff.Bench;

namespace Handoff.Tests.Bench;

/// <summary>The benchmark harness reads wrk's output right.</summary>
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
    public void Percentile_NearestRank()
    {
        double[] values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

        Assert.Equal(5, LoadResult.Percentile(values, 50));
        Assert.Equal(10, LoadResult.Percentile(values, 99));
        Assert.Equal(1, LoadResult.Percentile(values, 0));
        Assert.Equal(0, LoadResult.Percentile([], 99));
    }
}
