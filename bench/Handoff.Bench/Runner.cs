using System.Globalization;

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
        bool tls = LoadGenerator.IsTls(scenario.Load);
        await using BenchServer server = scenario.Server switch
        {
            "nginx" => new NginxBenchServer(directory, port, http2, tls),
            "grace" or "tableflip" or "shutdown" => new GoBenchServer(scenario.Server, directory, port),
            "handoff" => new KestrelBenchServer(KestrelMode.Handoff, directory, port, http2, tls),
            "handoff-aot" => new KestrelBenchServer(KestrelMode.HandoffAot, directory, port, http2, tls),
            "kestrel-socket" => new KestrelBenchServer(KestrelMode.SocketActivated, directory, port, http2, tls),
            _ => new KestrelBenchServer(KestrelMode.Plain, directory, port, http2, tls),
        };
        await server.StartAsync();
        if (scenario.Load == "close" && !await LoadGenerator.ServerClosesOnRequestAsync(port))
        {
            throw new InvalidOperationException($"{server.Name} does not answer 'Connection: close' with close: the close load would measure keep-alive.");
        }

        int pidAtStart = server.ServingPid;
        var load = await LoadGenerator.StartAsync(scenario.Load, port, duration, directory);
        double cpuStart = BenchProcess.CpuSeconds(pidAtStart);
        var started = DateTime.UtcNow;
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
        string serverCpus = BenchProcess.CpusOf(pidAtEnd);
        var result = await load;

        // The server's CPU time per request over the run: beside requests/s, which on this
        // machine may be bounded by the load generator rather than the server (steady runs
        // only: one process serves from start to end).
        double? cpu = scenario.Steady && pidAtStart == pidAtEnd && result.Requests > 0
            ? (BenchProcess.CpuSeconds(pidAtEnd) - cpuStart) * 1e6 / result.Requests
            : null;

        // Deterministic, unlike throughput: what the server allocates per keep-alive HTTP/1.1
        // request on one connection, once the load is over (a steady run; an upgrade run's
        // process is new). Measured after the loads that are such requests, with or without TLS.
        double? allocated = scenario.Steady && scenario.Load is ("keepalive" or "https") ? await server.AllocatedBytesPerRequestAsync() : null;
        return Summarize(scenario, repeat, result, actions) with
        {
            ServerCpuMicrosecondsPerRequest = cpu,
            ServerCpus = serverCpus,
            AllocatedBytesPerRequest = allocated,
            RssPeakStartMiB = rssStart == 0 ? rssEnd : rssStart,
            RssPeakEndMiB = rssEnd,
            FdsStart = fdsStart,
            FdsEnd = fdsEnd,
        };
    }

    /// <summary>
    /// The warm comparison for one load: plain Kestrel and Kestrel with Handoff, each started once
    /// and kept running on the server cpus. Each serves the load alone for
    /// <paramref name="warmup"/> (the runtime recompiles the hot code, optimized, in the
    /// background: a fresh process of a few seconds measures the compiler as much as the server),
    /// then both are measured in <paramref name="rounds"/> rounds of one burst each, back to back,
    /// the one going first alternating, so that the machine's drift falls on both.
    /// <paramref name="measured"/> gets each burst (its round as the repeat) with the server's CPU
    /// time per request.
    /// </summary>
    public static async Task WarmAsync(string load, int rounds, TimeSpan warmup, TimeSpan burst, string workDirectory, Func<RunResult, Task> measured)
    {
        bool http2 = LoadGenerator.IsHttp2(load);
        bool tls = LoadGenerator.IsTls(load);
        var scenarios = Scenario.Warm([load]).ToList();
        var servers = new List<KestrelBenchServer>();
        try
        {
            foreach (var scenario in scenarios)
            {
                string directory = Path.Combine(workDirectory, $"{scenario.Server}-{load}-warm");
                Directory.CreateDirectory(directory);
                var server = new KestrelBenchServer(scenario.Server == "handoff" ? KestrelMode.Handoff : KestrelMode.Plain, directory, BenchProcess.FreePort(), http2, tls);
                servers.Add(server);
                await server.StartAsync();
                if (load == "close" && !await LoadGenerator.ServerClosesOnRequestAsync(server.Port))
                {
                    throw new InvalidOperationException($"{server.Name} does not answer 'Connection: close' with close: the close load would measure keep-alive.");
                }
            }

            for (int i = 0; i < servers.Count; i++)
            {
                var warm = await BurstAsync(scenarios[i], servers[i], 0, warmup);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{scenarios[i],-32} warm-up: {warm.Load.RequestsPerSecond,8:0} req/s, {warm.ServerCpuMicrosecondsPerRequest ?? double.NaN,6:0.00} µs/request over its first {warmup.TotalSeconds:0} s"));
            }

            for (int round = 1; round <= rounds; round++)
            {
                foreach (int i in round % 2 == 1 ? [0, 1] : new[] { 1, 0 })
                {
                    await measured(await BurstAsync(scenarios[i], servers[i], round, burst));
                }
            }
        }
        finally
        {
            foreach (var server in servers)
            {
                await server.DisposeAsync();
            }
        }

        async Task<RunResult> BurstAsync(Scenario scenario, KestrelBenchServer server, int round, TimeSpan length)
        {
            int pid = server.ServingPid;
            double cpuStart = BenchProcess.CpuSeconds(pid);
            var result = await await LoadGenerator.StartAsync(load, server.Port, length, server.Directory);
            double cpu = BenchProcess.CpuSeconds(pid) - cpuStart;
            if (server.ServingPid != pid)
            {
                throw new InvalidOperationException($"{scenario}: the serving process changed during a burst ({pid} -> {server.ServingPid}); a warm comparison has no actions.");
            }

            return Summarize(scenario, round, result, []) with
            {
                ServerCpuMicrosecondsPerRequest = result.Requests > 0 ? cpu * 1e6 / result.Requests : null,
                ServerCpus = BenchProcess.CpusOf(pid),
            };
        }
    }

    /// <summary>Derives the per-request figures: p99 after actions, steady p99, timeline.</summary>
    internal static RunResult Summarize(Scenario scenario, int repeat, LoadResult load, IReadOnlyList<ActionTiming> actions)
    {
        double? after = null, steady = null;
        bool? collapsed = null;
        int slow = 0;
        var timeline = new List<TimelineBin>();
        if (load.Samples.Count > 0)
        {
            // Before the first action (Lead, less a ramp-up) against the run's last 2 s, which
            // come after the last action's settling (Tail).
            var start = load.Samples.Min(s => s.Start);
            var end = start + TimeSpan.FromSeconds(load.DurationSeconds);
            double Rate(DateTime from, DateTime to) => load.Samples.Count(s => s.Start >= from && s.Start < to) / (to - from).TotalSeconds;
            double before = Rate(start + TimeSpan.FromSeconds(0.5), start + Lead);
            // The idle load has no rate to keep: its requests come only at (re)connects.
            collapsed = scenario.Load == "idle" ? null : before > 0 && Rate(end - TimeSpan.FromSeconds(2), end) < before / 2;

            bool AfterAction(DateTime t) => actions.Any(a => t >= a.At && t < a.At + TimeSpan.FromSeconds(1));
            var inside = load.Samples.Where(s => AfterAction(s.Start)).Select(s => s.LatencyMs).Order().ToList();
            var outside = load.Samples.Where(s => !AfterAction(s.Start)).Select(s => s.LatencyMs).Order().ToList();
            slow = load.Samples.Count(s => s.LatencyMs >= 1000);
            after = actions.Count > 0 ? LoadResult.Percentile(inside, 99) : null;
            steady = LoadResult.Percentile(outside, 99);

            var origin = load.Samples.Min(s => s.Start);
            // Every 100 ms slice, also the empty ones (a sparse load's quiet, an outage): a slice
            // without requests has no p99 (NaN, not drawn).
            var bins = load.Samples.GroupBy(s => (int)((s.Start - origin).TotalMilliseconds / 100)).ToDictionary(g => g.Key, g => g.Select(s => s.LatencyMs).Order().ToList());
            for (int key = 0; key <= bins.Keys.Max(); key++)
            {
                timeline.Add(bins.TryGetValue(key, out var latencies)
                    ? new TimelineBin(key / 10.0, latencies.Count, LoadResult.Percentile(latencies, 99))
                    : new TimelineBin(key / 10.0, 0, double.NaN));
            }
        }

        // Idle load: when the last connection the server closed after each action was let go.
        var lastClose = new List<double>();
        for (int i = 0; i < actions.Count && load.Closes.Count > 0; i++)
        {
            var from = actions[i].At;
            var to = i + 1 < actions.Count ? actions[i + 1].At : DateTime.MaxValue;
            var closes = load.Closes.Where(c => c >= from && c < to).ToList();
            if (closes.Count > 0)
            {
                lastClose.Add((closes.Max() - from).TotalMilliseconds);
            }
        }

        return new RunResult
        {
            LastCloseAfterActionMs = lastClose,
            SlowRequests = slow,
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
