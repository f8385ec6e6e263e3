using Handoff.Bench;

namespace Handoff.Tests.Bench;

/// <summary>What the benchmark report says of the runs.</summary>
public sealed class ReportTests
{
    [Fact]
    public void Markdown_AnActionInWhichNoNewProcessTookOver_IsShownInTheTablesAndTheHeadline()
    {
        var at = DateTime.UtcNow;
        var runs = new[]
        {
            Run(new Scenario("handoff", "keepalive", "upgrade"), true, true),
            Run(new Scenario("handoff", "keepalive", "upgrade"), true, false),
            Run(new Scenario("grace", "keepalive", "upgrade"), true),
        };

        string report = Report.Markdown(runs, "machine", "bench/run", "timeline.svg");

        Assert.Equal("3/4", Report.Succeeded(runs.Take(2)));
        Assert.Contains("| handoff | upgrade | 2 | 4 | 3/4 |", report, StringComparison.Ordinal);
        Assert.Contains("| grace | upgrade | 1 | 1 | 1/1 |", report, StringComparison.Ordinal);
        Assert.Contains("| **0.00** | 3/4 |", report, StringComparison.Ordinal);

        RunResult Run(Scenario scenario, params bool[] succeeded) => new()
        {
            Scenario = scenario,
            Load = new LoadResult { Requests = 1000, DurationSeconds = 10 },
            Actions = [.. succeeded.Select(ok => new ActionTiming(at, 100, 50, ok))],
        };
    }

    [Theory]
    [InlineData(1000, 1000, false)] // a load that stays a load
    [InlineData(1000, 400, true)]   // below half its rate before the first action: collapsed
    [InlineData(1000, 0, true)]     // h2load after GOAWAY: nothing at all at the end
    public void Summarize_RateAtTheEndAgainstBeforeTheFirstAction_TellsACollapsedLoad(int perSecondBefore, int perSecondAfter, bool collapsed)
    {
        var origin = new DateTime(2026, 11, 22, 12, 0, 0, DateTimeKind.Utc);
        var samples = new List<(DateTime, double)>();
        for (int second = 0; second < 12; second++)
        {
            int count = second < 3 ? perSecondBefore : perSecondAfter;
            for (int i = 0; i < count; i++)
            {
                samples.Add((origin.AddSeconds(second + ((double)i / Math.Max(count, 1))), 1.0));
            }
        }

        var load = new LoadResult { Requests = samples.Count, DurationSeconds = 12, Samples = samples };
        var run = Runner.Summarize(new Scenario("handoff", "h2c", "upgrade"), 1, load, [new ActionTiming(origin.AddSeconds(2), 500, 100, true)]);
        string report = Report.Markdown([run], "machine", "bench/run", "timeline.svg");

        Assert.Equal(collapsed, run.LoadCollapsed);
        Assert.Equal(collapsed, report.Contains("load collapsed (1 of 1 runs)", StringComparison.Ordinal));
        Assert.Equal(collapsed, Report.Headline([run]).Contains("load collapsed", StringComparison.Ordinal));
    }

    [Fact]
    public void PerAction_NaiveRestart_RequestsLostAndDowntimeNotRefusedConnects()
    {
        var at = DateTime.UtcNow;
        var restart = new RunResult
        {
            Scenario = new Scenario("kestrel", "keepalive", "restart"),
            Load = new LoadResult { Requests = 100_000, DurationSeconds = 12, ConnectErrors = 58_130, WriteErrors = 97_037, ReadErrors = 10 },
            Actions = [new ActionTiming(at, 800, 0, true), new ActionTiming(at, 900, 0, true)],
        };
        var upgrade = restart with { Scenario = new Scenario("handoff", "keepalive", "upgrade") };

        Assert.Equal("5.00 lost, 850 ms down", Report.PerAction([restart]));
        Assert.Equal("77588.50", Report.PerAction([upgrade])); // an upgrade that refuses connects fails requests
        Assert.Contains("| keepalive | 5.00 lost, 850 ms down |", Report.Headline([restart, upgrade]), StringComparison.Ordinal);
    }
}
