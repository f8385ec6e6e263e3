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
}
