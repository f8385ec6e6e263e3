namespace Handoff.Bench;

/// <summary>Runs one scenario once: starts the server, puts the load on it, repeats the
/// action every 2 s, and collects what the load generator, the clock and /proc saw.</summary>
internal static class Runner
{
    public static readonly TimeSpan ActionInterval = TimeSpan.FromSeconds(2);

    // No action in the first and last seconds: the load ramps up first, and the last old
    // generation must finish draining before the load stops.
    private static readonly TimeSpan Lead = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Tail = TimeSpan.FromSeconds(4);

    public static async Task<RunResult> RunAsync(Scenario scenario, int repeat, TimeSpan duration, string workDirectory)
    {
        string directory = Path.Combine(workDirectory, $"{scenario.Server}-{scenario.Load}-{scenario.Action}-{repeat}");
        Directory.CreateDirectory(directory);
        int port = BenchProcess.FreePort();
        bool http2 = LoadGenerator.IsHttp2(scenario.Load);
        await using BenchServer server = scenario.Server switch
        {
            "nginx" => new NginxBenchServer(directory, port, http2),
            "grace" or "tableflip" or "shutdown" => new GoBenchServer(scenario.Server, directory, port),
            "handoff" => new HelloSleepBenchServer(handoff: true, directory, port, http2),
            _ => new HelloSleepBenchServer(handoff: false, directory, port, http2),
        };
        await server.StartAsync();
        if (scenario.Load == "close" && !await LoadGenerator.ServerClosesOnRequestAsync(port))
        {
            throw new InvalidOperationException($"{server.Name} does not answer 'Connection: close' with close: the close load would measure keep-alive.");
        }

        int pidAtStart = server.ServingPid;
        var started = DateTime.UtcNow;
        var load = LoadGenerator.RunAsync(scenario.Load, port, duration, directory);
        var actions = new List<ActionTiming>();

        // Open fds are read under load at both ends (so both count the load's connections).
        await Task.Delay(Lead);
        int fdsStart = BenchProcess.OpenFds(pidAtStart);
        if (scenario.Action != "none")
        {
            while (DateTime.UtcNow - started < duration - Tail)
            {
                var next = DateTime.UtcNow + ActionInterval;
                actions.Add(await server.ActAsync());
                var wait = next - DateTime.UtcNow;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait);
                }
            }
        }

        var untilLastSecond = duration - TimeSpan.FromSeconds(1) - (DateTime.UtcNow - started);
        if (untilLastSecond > TimeSpan.Zero)
        {
            await Task.Delay(untilLastSecond);
        }

        // Peak memory and fds of the serving process, read before the load ends.
        int pidAtEnd = server.ServingPid;
        double rssStart = pidAtStart == pidAtEnd ? 0 : BenchProcess.Memory(pidAtStart).PeakMiB;
        double rssEnd = BenchProcess.Memory(pidAtEnd).PeakMiB;
        int fdsEnd = BenchProcess.OpenFds(pidAtEnd);
        var result = await load;

        // Deterministic, unlike throughput: what the server allocates per request, once the
        // load is over (a steady run only; an upgrade run's process is new).
        double? allocated = scenario.Action == "none" && !http2 ? await server.AllocatedBytesPerRequestAsync() : null;
        return Summarize(scenario, repeat, result, actions) with
        {
            AllocatedBytesPerRequest = allocated,
            RssPeakStartMiB = rssStart == 0 ? rssEnd : rssStart,
            RssPeakEndMiB = rssEnd,
            FdsStart = fdsStart,
            FdsEnd = fdsEnd,
        };
    }

    /// <summary>Derives the per-request figures: p99 after actions, steady p99, timeline.</summary>
    internal static RunResult Summarize(Scenario scenario, int repeat, LoadResult load, IReadOnlyList<ActionTiming> actions)
    {
        double? after = null, steady = null;
        bool? collapsed = null;
        var timeline = new List<TimelineBin>();
        if (load.Samples.Count > 0)
        {
            // Before the first action (Lead, less a ramp-up) against the run's last 2 s, which
            // come after the last action's settling (Tail).
            var start = load.Samples.Min(s => s.Start);
            var end = start + TimeSpan.FromSeconds(load.DurationSeconds);
            double Rate(DateTime from, DateTime to) => load.Samples.Count(s => s.Start >= from && s.Start < to) / (to - from).TotalSeconds;
            double before = Rate(start + TimeSpan.FromSeconds(0.5), start + Lead);
            collapsed = before > 0 && Rate(end - TimeSpan.FromSeconds(2), end) < before / 2;

            bool AfterAction(DateTime t) => actions.Any(a => t >= a.At && t < a.At + TimeSpan.FromSeconds(1));
            var inside = load.Samples.Where(s => AfterAction(s.Start)).Select(s => s.LatencyMs).Order().ToList();
            var outside = load.Samples.Where(s => !AfterAction(s.Start)).Select(s => s.LatencyMs).Order().ToList();
            after = actions.Count > 0 ? H2loadOutput.Percentile(inside, 99) : null;
            steady = H2loadOutput.Percentile(outside, 99);

            var origin = load.Samples.Min(s => s.Start);
            foreach (var bin in load.Samples.GroupBy(s => (int)((s.Start - origin).TotalMilliseconds / 100)).OrderBy(g => g.Key))
            {
                var latencies = bin.Select(s => s.LatencyMs).Order().ToList();
                timeline.Add(new TimelineBin(bin.Key / 10.0, latencies.Count, H2loadOutput.Percentile(latencies, 99)));
            }
        }

        return new RunResult
        {
            Scenario = scenario,
            Repeat = repeat,
            Load = load with { Samples = [] },
            Actions = actions,
            LoadCollapsed = collapsed,
            P99AfterActionMs = after,
            P99SteadyMs = steady,
            Timeline = timeline,
            TimelineOrigin = load.Samples.Count > 0 ? load.Samples.Min(s => s.Start) : null,
        };
    }
}
