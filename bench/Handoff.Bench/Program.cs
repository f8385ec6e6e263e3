// The benchmark harness behind bench/run. Runs every scenario (server x load x action), each
// with a real load generator that never retries, and writes bench/results/<date>.json,
// docs/benchmarks.md and docs/benchmarks-timeline.svg.
//
//   Handoff.Bench [--quick] [--repeats N] [--duration SECONDS] [--pairs N] [--steady-duration SECONDS]
//                 [--rounds N] [--warmup SECONDS] [--burst SECONDS] [--only TEXT] [--root DIR] [--server-cpus LIST]
//                 [--merge bench/results/DATE.json]  (rerun some scenarios into an earlier run)
//   Handoff.Bench --report bench/results/DATE.json     (rewrite the report and its pictures from
//                 a results file, without running anything)
// Runs with an action (upgrade, restart) repeat --repeats times; runs without one (plain Kestrel
// against Kestrel with Handoff) come in --pairs pairs, back to back, the order alternating; and
// the warm comparison keeps both running: --warmup seconds of load each, then --rounds rounds of
// one --burst each, the order alternating (Runner.WarmAsync).
using System.Globalization;
using System.Text.Json;
using Handoff.Bench;
using Handoff.Testing;

bool quick = args.Contains("--quick");
int repeats = int.Parse(Option("--repeats") ?? (quick ? "1" : "2"), CultureInfo.InvariantCulture);
var duration = TimeSpan.FromSeconds(int.Parse(Option("--duration") ?? (quick ? "12" : "20"), CultureInfo.InvariantCulture));
int pairs = int.Parse(Option("--pairs") ?? (quick || Option("--only") is not null ? "1" : "4"), CultureInfo.InvariantCulture);
var steadyDuration = TimeSpan.FromSeconds(int.Parse(Option("--steady-duration") ?? "10", CultureInfo.InvariantCulture));
int rounds = int.Parse(Option("--rounds") ?? (quick ? "6" : "10"), CultureInfo.InvariantCulture);
var warmup = TimeSpan.FromSeconds(int.Parse(Option("--warmup") ?? (quick ? "15" : "30"), CultureInfo.InvariantCulture));
var burst = TimeSpan.FromSeconds(int.Parse(Option("--burst") ?? (quick ? "2" : "3"), CultureInfo.InvariantCulture));
// bench/run pins this process (and so the load generators it starts) to some cores and passes
// the others here: every server generation is started on those.
BenchProcess.ServerCpus = Option("--server-cpus");
string root = Path.GetFullPath(Option("--root") ?? Directory.GetCurrentDirectory());
string? only = Option("--only");

if (Option("--report") is { } reportFile)
{
    var stored = JsonSerializer.Deserialize<ResultsFile>(await File.ReadAllTextAsync(reportFile), ResultsFile.JsonOptions)!;
    string storedSuffix = Path.GetFileNameWithoutExtension(reportFile).EndsWith("-quick", StringComparison.Ordinal) ? "-quick" : "";
    await WriteReportAsync(stored.Runs, stored.Machine, stored.Command, storedSuffix);
    Console.WriteLine($"wrote docs/benchmarks{storedSuffix}.md and its pictures from {reportFile}");
    return 0;
}

// --only takes comma-separated parts of "server/load/action"; a scenario matching any runs.
bool Selected(Scenario s) => only is null || only.Split(',').Any(part => s.ToString().Contains(part, StringComparison.Ordinal));
var scenarios = (quick ? Scenario.Quick : Scenario.Full).Where(Selected).ToList();
// A warm load runs when either of its two scenarios is selected; the quick run measures keep-alive.
var warmLoads = (quick ? ["keepalive"] : Scenario.WarmLoads).Where(load => Scenario.Warm([load]).Any(Selected)).ToList();

_ = ProcessTable.State(Environment.ProcessId); // loads the helpers: this process reaps the servers' generations
string work = Directory.CreateTempSubdirectory("handoff-bench-").FullName;
string[] hidden = ["--root", "--server-cpus"]; // shown in the machine block instead
string shown = string.Join(' ', args.Where((a, i) => !hidden.Contains(a) && (i == 0 || !hidden.Contains(args[i - 1]))));
var acting = scenarios.Where(s => !s.Steady).ToList();
var steady = scenarios.Where(s => s.Steady).ToList();
var command = $"bench/run {shown}  ({acting.Count} scenarios with actions x {repeats} repeats x {duration.TotalSeconds:0} s; {steady.Count} steady scenarios x {pairs} pairs x {steadyDuration.TotalSeconds:0} s; warm: {warmLoads.Count} loads x ({warmup.TotalSeconds:0} s warm-up + {rounds} rounds of 2 x {burst.TotalSeconds:0} s))";
Console.WriteLine(command);

// --merge FILE: keep the runs of an earlier results file except those of the scenarios run now.
string? merge = Option("--merge");
var runs = new List<RunResult>();
if (merge is not null)
{
    var earlier = JsonSerializer.Deserialize<ResultsFile>(await File.ReadAllTextAsync(merge), ResultsFile.JsonOptions)!;
    runs.AddRange(earlier.Runs.Where(r => !scenarios.Contains(r.Scenario) && !(r.Scenario.IsWarm && warmLoads.Contains(r.Scenario.Load))));
    command = earlier.Command + $"; then {command} merged";
    duration = TimeSpan.FromSeconds(earlier.DurationSeconds);
    repeats = earlier.Repeats;
}

// Only a full run (or a merge into one) writes the full report: a quick or partial run writes
// its own files and never overwrites the report people read first.
bool partial = merge is null && (quick || only is not null);
string suffix = partial ? "-quick" : "";
string machine = await MachineAsync();
string date = merge is not null ? Path.GetFileNameWithoutExtension(merge) : DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture) + suffix;
string results = Path.Combine(root, "bench", "results");
Directory.CreateDirectory(results);
var broken = new List<string>();

for (int repeat = 1; repeat <= repeats; repeat++)
{
    foreach (var scenario in acting)
    {
        await RunAsync(scenario, repeat, duration);
    }
}

// The steady comparison in pairs: the two servers back to back under the same load, the one
// that goes first alternating, so that drift (thermal, other tenants) falls on both.
for (int pair = 1; pair <= pairs; pair++)
{
    foreach (var group in steady.GroupBy(s => s.Load))
    {
        var ordered = group.OrderBy(s => s.Server == "kestrel" ? 0 : 1).ToList();
        if (pair % 2 == 0)
        {
            ordered.Reverse();
        }

        foreach (var scenario in ordered)
        {
            await RunAsync(scenario, pair, steadyDuration);
        }
    }
}

// The warm comparison: what Handoff costs once both processes have warmed up.
foreach (string load in warmLoads)
{
    try
    {
        await Runner.WarmAsync(load, rounds, warmup, burst, work, async run =>
        {
            runs.Add(run);
            await SaveAsync();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{run.Scenario,-32} #{run.Repeat}: {run.Load.RequestsPerSecond,8:0} req/s, {run.Load.Failed,5} failed, {run.ServerCpuMicrosecondsPerRequest ?? double.NaN,6:0.00} µs/request"));
        });
    }
    catch (Exception e) when (e is InvalidOperationException or IOException or TimeoutException or System.Net.Sockets.SocketException or FormatException or OperationCanceledException)
    {
        Console.Error.WriteLine($"warm {load} could not run: {e.Message}");
        broken.Add($"warm {load}: {e.Message}");
    }
}

await SaveAsync();
await WriteReportAsync(runs, machine, command, suffix);
Console.WriteLine($"wrote bench/results/{date}.json, docs/benchmarks{suffix}.md, docs/benchmarks{suffix}-timeline.svg, docs/benchmarks{suffix}-failed.svg");
Directory.Delete(work, recursive: true);

// An upgrade or restart in which no new process took over fails the run (it is in the report),
// and so does a scenario that could not run.
var failedActions = runs.Where(r => r.Actions.Any(a => !a.Succeeded)).Select(r => $"{r.Scenario} #{r.Repeat}: {r.Actions.Count(a => !a.Succeeded)} of {r.Actions.Count}").ToList();
if (failedActions.Count > 0)
{
    Console.Error.WriteLine("actions in which no new process took over: " + string.Join("; ", failedActions));
}

if (broken.Count > 0)
{
    Console.Error.WriteLine("scenarios that could not run: " + string.Join("; ", broken));
}

return failedActions.Count > 0 || broken.Count > 0 ? 1 : 0;

// The report and its pictures. The timeline is drawn from the runs that kept theirs (a results
// file keeps only the pictured runs'); without any, the picture is left as it was. The report's
// hand-written section is carried over from the file it replaces.
async Task WriteReportAsync(IReadOnlyList<RunResult> all, string machineText, string commandText, string fileSuffix)
{
    string docs = Path.Combine(root, "docs");
    Directory.CreateDirectory(docs);
    var pictured = Timeline.Pictured.Select(s => all.Where(r => r.Scenario == s).MaxBy(r => r.Timeline.Count)).OfType<RunResult>().ToList();
    if (pictured.Any(r => r.Timeline.Count > 0))
    {
        await File.WriteAllTextAsync(Path.Combine(docs, $"benchmarks{fileSuffix}-timeline.svg"), Timeline.Svg(pictured));
    }

    await File.WriteAllTextAsync(Path.Combine(docs, $"benchmarks{fileSuffix}-failed.svg"), FailureChart.Svg(all));
    string report = Path.Combine(docs, $"benchmarks{fileSuffix}.md");
    string? notes = Report.Notes(File.Exists(report) ? await File.ReadAllTextAsync(report) : null);
    await File.WriteAllTextAsync(report, Report.Markdown(all, machineText, commandText, $"benchmarks{fileSuffix}-timeline.svg", $"benchmarks{fileSuffix}-failed.svg", notes));
}

// The results so far, after every run: a run cut short keeps what it measured.
// The file keeps the timelines of the runs the picture shows (so --report and --merge can draw it
// again), not those of every run.
async Task SaveAsync() => await File.WriteAllTextAsync(Path.Combine(results, date + ".json"), JsonSerializer.Serialize(
    new ResultsFile(command, machine, duration.TotalSeconds, repeats, [.. runs.Select(r => Timeline.Pictured.Contains(r.Scenario) && r.Repeat == 1 ? r : r with { Timeline = [] })]),
    ResultsFile.JsonOptions));

async Task RunAsync(Scenario scenario, int repeat, TimeSpan length)
{
    RunResult run;
    try
    {
        run = await Runner.RunAsync(scenario, repeat, length, work);
    }
    catch (Exception e) when (e is InvalidOperationException or IOException or TimeoutException or System.Net.Sockets.SocketException or FormatException or OperationCanceledException)
    {
        // Said, not hidden: the run goes on with the next scenario and exits 1 at the end.
        Console.Error.WriteLine($"{scenario} #{repeat} could not run: {e.Message}");
        broken.Add($"{scenario} #{repeat}: {e.Message}");
        return;
    }

    runs.Add(run);
    await SaveAsync();
    string ready = run.Actions.Count > 0 ? string.Create(CultureInfo.InvariantCulture, $", signal to ready {Report.Median(run.Actions.Select(a => a.ToReadyMs)):0} ms") : "";
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{scenario,-32} #{repeat}: {run.Load.RequestsPerSecond,8:0} req/s, {run.Load.Failed,5} failed, {run.Actions.Count,2} actions{(run.Actions.Any(a => !a.Succeeded) ? " (some failed)" : "")}, p99 {run.Load.P99Ms,7:0.00} ms{ready}{(run.LoadCollapsed == true ? ", load collapsed" : "")}"));
}

string? Option(string name)
{
    int index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? args[index + 1] : null;
}

static async Task<string> MachineAsync()
{
    string cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
    string memory = File.ReadLines("/proc/meminfo").First().Split(':', 2)[1].Trim();
    async Task<string> Version(string program, params string[] arguments)
    {
        try
        {
            var (_, output) = await BenchProcess.RunAsync(program, arguments, TimeSpan.FromSeconds(30));
            return output.Split('\n').FirstOrDefault(l => l.Trim().Length > 0)?.Trim() ?? "?";
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or TimeoutException)
        {
            return "not found";
        }
    }

    string pinning = BenchProcess.ServerCpus is { } serverCpus
        ? $"pinning: load generators and harness on cpu {string.Join(',', BenchProcess.OwnCpus())}, servers on cpu {serverCpus} (taskset)"
        : "pinning: none";
    return string.Join('\n',
        $"machine: {File.ReadLines("/proc/cpuinfo").Count(l => l.StartsWith("processor", StringComparison.Ordinal))} cores ({cpu}), {memory} memory, kernel {Environment.OSVersion.Version}",
        pinning,
        $"dotnet: {Environment.Version} runtime; {await Version("dotnet", "--version")} SDK",
        $"nginx: {await Version("nginx", "-v")}",
        $"wrk: {await Version("wrk", "-v")}",
        $"go: {await Version("go", "version")}");
}
