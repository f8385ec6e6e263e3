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
        // The headline: one row per system, its time to ready and its actions' success.
        Assert.Contains("| **Handoff** (Kestrel, `kill -USR2`) | **0.00** | 100 [100–100] | 3/4 |", report, StringComparison.Ordinal);
        Assert.Contains("| facebookgo/grace | 0.00 | 100 | 1/1 |", report, StringComparison.Ordinal);

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
        Assert.Equal(collapsed, Report.Headline([run]).Contains("| load collapsed (0.00 failed per action) |", StringComparison.Ordinal));
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
        string headline = Report.Headline([restart, upgrade]);
        Assert.Contains("| Kestrel restart, naive | 5.00 lost, 850 ms down | 850 [800–900] | 2/2 |", headline, StringComparison.Ordinal);
        Assert.Contains("| **Handoff** (Kestrel, `kill -USR2`) | **77588.50** |", headline, StringComparison.Ordinal);
    }

    [Fact]
    public void SteadyTable_RatiosArePerPair_WithTheirRange()
    {
        // Pair 1: handoff 10 % slower; pair 2 (the order reversed): 10 % faster. Unpaired medians
        // would say -21 % (75 against 95); the pairs say the difference is noise.
        var runs = new[]
        {
            Steady("kestrel", 1, 100_000), Steady("handoff", 1, 90_000),
            Steady("handoff", 2, 55_000), Steady("kestrel", 2, 50_000),
        };

        string table = Report.SteadyTable(runs);

        // CPU per request, also per pair: 10 and 12 µs (+20 %), then 11 and 11 (0 %).
        Assert.Contains("| keepalive | 2 | 75000 [50000–100000] | 72500 [55000–90000] | +0 % [−10 … +10] | 10.5, 11.5 | +10 % [+0 … +20] |", table, StringComparison.Ordinal);
        Assert.Equal("−3 %", Report.Percent([-0.031]));

        RunResult Steady(string server, int pair, long requests) => new()
        {
            Scenario = new Scenario(server, "keepalive", "none"),
            Repeat = pair,
            Load = new LoadResult { Requests = requests, DurationSeconds = 1 },
            ServerCpuMicrosecondsPerRequest = (server, pair) switch { ("kestrel", 1) => 10, ("handoff", 1) => 12, _ => 11 },
        };
    }

    [Fact]
    public void WarmTable_DifferencesArePerRound_InTenthsOfAPercent()
    {
        // Round 1: 10.0 against 10.3 µs (+3.0 %); round 2: 12.0 against 12.0 (+0.0 %); round 3:
        // 10.5 against 10.29 (−2.0 %). Medians of each side alone would give 10.5 against 10.3,
        // −1.9 %: the per-round median is +0.0 %, its range −2.0 … +3.0.
        var runs = new[]
        {
            Warm("kestrel", 1, 10.0), Warm("handoff", 1, 10.3),
            Warm("handoff", 2, 12.0), Warm("kestrel", 2, 12.0),
            Warm("kestrel", 3, 10.5), Warm("handoff", 3, 10.29),
            Steady("kestrel", 1, 10.0), Steady("handoff", 1, 99.0),
        };

        string table = Report.WarmTable(runs);

        Assert.Contains("| keepalive | 3 | 10.50, 10.30 | **+0.0 % [−2.0 … +3.0]** | +0.00 [−0.21 … +0.30] |", table, StringComparison.Ordinal);
        Assert.DoesNotContain("99", table, StringComparison.Ordinal); // the steady pair is not a round
        Assert.Equal("", Report.WarmTable([Steady("kestrel", 1, 10.0), Steady("handoff", 1, 11.0)]));

        static RunResult Warm(string server, int round, double cpu) => new()
        {
            Scenario = new Scenario(server, "keepalive", "warm"),
            Repeat = round,
            Load = new LoadResult { Requests = 50_000, DurationSeconds = 2 },
            ServerCpuMicrosecondsPerRequest = cpu,
        };

        static RunResult Steady(string server, int pair, double cpu) => new()
        {
            Scenario = new Scenario(server, "keepalive", "none"),
            Repeat = pair,
            Load = new LoadResult { Requests = 50_000, DurationSeconds = 2 },
            ServerCpuMicrosecondsPerRequest = cpu,
        };
    }

    [Fact]
    public void SteadyTable_OnePair_GivesNoFigureButSaysItIsNoise()
    {
        // The quick run: one pair of fresh processes, 34,092 against 24,955 req/s once, which
        // must not read as "-27 % requests/s".
        var runs = new[]
        {
            new RunResult { Scenario = new Scenario("kestrel", "keepalive", "none"), Repeat = 1, Load = new LoadResult { Requests = 34_092, DurationSeconds = 1 }, ServerCpuMicrosecondsPerRequest = 29.2 },
            new RunResult { Scenario = new Scenario("handoff", "keepalive", "none"), Repeat = 1, Load = new LoadResult { Requests = 24_955, DurationSeconds = 1 }, ServerCpuMicrosecondsPerRequest = 39.8 },
        };

        string table = Report.SteadyTable(runs);

        Assert.Contains("| keepalive | 1 | 34092 | 24955 | one pair: noise, not a cost | 29.2, 39.8 | one pair: noise, not a cost |", table, StringComparison.Ordinal);
        Assert.DoesNotContain("−27 %", table, StringComparison.Ordinal);
    }

    [Fact]
    public void Summarize_IdleLoad_IsNeverCollapsed_AndTimesTheLastCloseAfterEachAction()
    {
        // The idle load sends only at (re)connects, so its rate says nothing of a collapse.
        var origin = new DateTime(2026, 11, 22, 12, 0, 0, DateTimeKind.Utc);
        var samples = Enumerable.Range(0, 1000).Select(i => (origin.AddMilliseconds(i), 1.0)).ToList();
        var actions = new[] { new ActionTiming(origin.AddSeconds(3), 500, 2000, true), new ActionTiming(origin.AddSeconds(7), 500, 2000, true) };
        var load = new LoadResult
        {
            Requests = 1000,
            DurationSeconds = 12,
            Samples = samples,
            Closes = [origin.AddSeconds(4), origin.AddSeconds(5.5), origin.AddSeconds(8), origin.AddSeconds(9.25)],
        };

        var run = Runner.Summarize(new Scenario("handoff", "idle", "upgrade"), 1, load, actions);

        Assert.Null(run.LoadCollapsed);
        Assert.Equal([2500.0, 2250.0], run.LastCloseAfterActionMs);
    }

    [Fact]
    public void Timeline_ACurveThatEndsEarly_SaysWhy()
    {
        var origin = new DateTime(2026, 11, 22, 12, 0, 0, DateTimeKind.Utc);
        var samples = Enumerable.Range(0, 3000).Select(i => (origin.AddMilliseconds(i), 1.0)).ToList();
        var load = new LoadResult { Requests = 3000, DurationSeconds = 12, Samples = samples };
        var run = Runner.Summarize(new Scenario("nginx", "h1log", "upgrade"), 1, load, [new ActionTiming(origin.AddSeconds(2), 10, 10, true)]);

        // Nothing after 3 s of 12: the load collapsed, and the picture says so where the curve ends.
        Assert.Equal(30, run.Timeline.Count);
        Assert.True(run.LoadCollapsed);
        Assert.Contains("requests stop at 2.9 s: the load generator stopped loading (load collapsed)", Timeline.Svg([run]), StringComparison.Ordinal);
        Assert.Equal("requests stop at 2.9 s of 12 s: no request started later completed", Timeline.EndsEarly(run with { LoadCollapsed = false }));
        Assert.Null(Timeline.EndsEarly(run with { LoadCollapsed = false, Load = load with { DurationSeconds = 3.5 } }));
    }

    [Fact]
    public void Markdown_WebSocketMessagesUnansweredAtClose_AreShownButNotFailures()
    {
        var run = new RunResult
        {
            Scenario = new Scenario("handoff", "ws", "upgrade"),
            Load = new LoadResult { Requests = 1000, DurationSeconds = 10, Reconnects = 128, UnansweredAtClose = 128 },
            Actions = [new ActionTiming(DateTime.UtcNow, 100, 50, true), new ActionTiming(DateTime.UtcNow, 100, 50, true)],
        };

        string report = Report.Markdown([run], "machine", "bench/run", "timeline.svg");

        // Not failures by the protocol, but in the headline beside them, not only in the details.
        Assert.Contains("| 0.00 | none (and 128 unanswered at close) | 128 (64.0 per action) |", report, StringComparison.Ordinal);
        Assert.Contains("| **0.00** (64.00 unanswered at close) |", Report.Headline([run]), StringComparison.Ordinal);
    }

    [Fact]
    public void CpuSeconds_ThisProcess_GrowsWithWork()
    {
        double before = BenchProcess.CpuSeconds(Environment.ProcessId);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        long spin = 0;
        while (BenchProcess.CpuSeconds(Environment.ProcessId) < before + 0.05 && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            spin++;
        }

        Assert.True(BenchProcess.CpuSeconds(Environment.ProcessId) >= before + 0.05, $"no CPU time counted after {spin} loops");
        Assert.Equal(0, BenchProcess.CpuSeconds(int.MaxValue));
        Assert.NotEqual("?", BenchProcess.CpusOf(Environment.ProcessId));
    }

    [Fact]
    public void ResultsFile_KeepsATimelineWithEmptySlices_SoTheReportCanDrawItAgain()
    {
        var run = new RunResult
        {
            Scenario = new Scenario("handoff", "idle", "upgrade"),
            Load = new LoadResult { Requests = 3, DurationSeconds = 12 },
            Timeline = [new TimelineBin(0, 2, 1.5), new TimelineBin(0.1, 0, double.NaN), new TimelineBin(0.2, 1, 3)],
        };

        string json = System.Text.Json.JsonSerializer.Serialize(new ResultsFile("bench/run", "machine", 12, 1, [run]), ResultsFile.JsonOptions);
        var back = System.Text.Json.JsonSerializer.Deserialize<ResultsFile>(json, ResultsFile.JsonOptions)!;

        Assert.Equal(3, back.Runs[0].Timeline.Count);
        Assert.True(double.IsNaN(back.Runs[0].Timeline[1].P99Ms));
        // An idle load is quiet between reconnects: its curve ending is no news.
        Assert.Null(Timeline.EndsEarly(back.Runs[0]));
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Count(Timeline.Svg([back.Runs[0]]), "stroke=\"#36c\""));
    }

    [Fact]
    public void Markdown_KeepsTheHandWrittenSectionOfTheReportItReplaces()
    {
        var run = new RunResult { Scenario = new Scenario("handoff", "keepalive", "upgrade"), Load = new LoadResult { Requests = 3, DurationSeconds = 12 } };
        string notes = $"{Report.NotesStart}\n## What the figures show\n\nRead by hand.\n{Report.NotesEnd}";
        string first = Report.Markdown([run], "machine", "bench/run", "timeline.svg", notes: notes);

        string second = Report.Markdown([run], "machine", "bench/run", "timeline.svg", notes: Report.Notes(first));

        Assert.Equal(first, second);
        Assert.Contains(notes + "\n\n## Timeline", second.ReplaceLineEndings("\n"), StringComparison.Ordinal);
        Assert.Contains("except the section *What the figures show*", second, StringComparison.Ordinal);
        Assert.Null(Report.Notes(Report.Markdown([run], "machine", "bench/run", "timeline.svg")));
        Assert.Null(Report.Notes(Report.NotesStart + " no end"));
    }
}
