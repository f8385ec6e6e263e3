// The benchmark harness behind bench/run. Runs every scenario (server x load x action), each
// with a real load generator that never retries, and writes bench/results/<date>.json,
// docs/benchmarks.md and docs/benchmarks-timeline.svg.
//
//   Handoff.Bench [--quick] [--repeats N] [--duration SECONDS] [--only TEXT] [--root DIR]
//                 [--merge bench/results/DATE.json]  (rerun some scenarios into an earlier run)
using System.Globalization;
using System.Text.Json;
using Handoff.Bench;
using Handoff.Testing;

bool quick = args.Contains("--quick");
int repeats = int.Parse(Option("--repeats") ?? (quick ? "1" : "3"), CultureInfo.InvariantCulture);
var duration = TimeSpan.FromSeconds(int.Parse(Option("--duration") ?? (quick ? "12" : "40"), CultureInfo.InvariantCulture));
string root = Path.GetFullPath(Option("--root") ?? Directory.GetCurrentDirectory());
string? only = Option("--only");
// --only takes comma-separated parts of "server/load/action"; a scenario matching any runs.
var scenarios = (quick ? Scenario.Quick : Scenario.Full)
    .Where(s => only is null || only.Split(',').Any(part => s.ToString().Contains(part, StringComparison.Ordinal)))
    .ToList();

_ = ProcessTable.State(Environment.ProcessId); // loads the helpers: this process reaps the servers' generations
string work = Directory.CreateTempSubdirectory("handoff-bench-").FullName;
string shown = string.Join(' ', args.Where((a, i) => a != "--root" && (i == 0 || args[i - 1] != "--root")));
var command = $"bench/run {shown}  ({scenarios.Count} scenarios x {repeats} repeats x {duration.TotalSeconds:0} s)";
Console.WriteLine(command);

// --merge FILE: keep the runs of an earlier results file except those of the scenarios run now.
string? merge = Option("--merge");
var runs = new List<RunResult>();
if (merge is not null)
{
    var earlier = JsonSerializer.Deserialize<ResultsFile>(await File.ReadAllTextAsync(merge))!;
    runs.AddRange(earlier.Runs.Where(r => !scenarios.Contains(r.Scenario)));
    command = earlier.Command + $"; then {command} merged";
    duration = TimeSpan.FromSeconds(earlier.DurationSeconds);
    repeats = earlier.Repeats;
}

for (int repeat = 1; repeat <= repeats; repeat++)
{
    foreach (var scenario in scenarios)
    {
        var run = await Runner.RunAsync(scenario, repeat, duration, work);
        runs.Add(run);
        string ready = run.Actions.Count > 0 ? string.Create(CultureInfo.InvariantCulture, $", signal to ready {Report.Median(run.Actions.Select(a => a.ToReadyMs)):0} ms") : "";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{scenario,-28} #{repeat}: {run.Load.RequestsPerSecond,8:0} req/s, {run.Load.Failed,5} failed, {run.Actions.Count,2} actions, p99 {run.Load.P99Ms,7:0.00} ms{ready}"));
    }
}

// Only a full run (or a merge into one) writes the full report: a quick or partial run writes
// its own files and never overwrites the report people read first.
bool partial = merge is null && (quick || only is not null);
string suffix = partial ? "-quick" : "";
string machine = await MachineAsync();
string date = merge is not null ? Path.GetFileNameWithoutExtension(merge) : DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture) + suffix;
string results = Path.Combine(root, "bench", "results");
Directory.CreateDirectory(results);
await File.WriteAllTextAsync(Path.Combine(results, date + ".json"), JsonSerializer.Serialize(
    new ResultsFile(command, machine, duration.TotalSeconds, repeats, [.. runs.Select(r => r with { Timeline = [] })]),
    new JsonSerializerOptions { WriteIndented = true }));

string docs = Path.Combine(root, "docs");
Directory.CreateDirectory(docs);
var pictured = new[] { new Scenario("handoff", "h1log", "upgrade"), new Scenario("nginx", "h1log", "upgrade"), new Scenario("kestrel", "h1log", "restart") }
    .Select(s => runs.FirstOrDefault(r => r.Scenario == s)).OfType<RunResult>().ToList();
await File.WriteAllTextAsync(Path.Combine(docs, $"benchmarks{suffix}-timeline.svg"), Timeline.Svg(pictured));
await File.WriteAllTextAsync(Path.Combine(docs, $"benchmarks{suffix}.md"), Report.Markdown(runs, machine, command, $"benchmarks{suffix}-timeline.svg"));
Console.WriteLine($"wrote bench/results/{date}.json, docs/benchmarks{suffix}.md, docs/benchmarks{suffix}-timeline.svg");
Directory.Delete(work, recursive: true);

// An upgrade or restart in which no new process took over fails the run (it is in the report).
var failedActions = runs.Where(r => r.Actions.Any(a => !a.Succeeded)).Select(r => $"{r.Scenario} #{r.Repeat}: {r.Actions.Count(a => !a.Succeeded)} of {r.Actions.Count}").ToList();
if (failedActions.Count > 0)
{
    Console.Error.WriteLine("actions in which no new process took over: " + string.Join("; ", failedActions));
    return 1;
}

return 0;

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

    return string.Join('\n',
        $"machine: {Environment.ProcessorCount} cores ({cpu}), {memory} memory, kernel {Environment.OSVersion.Version}",
        $"dotnet: {Environment.Version} runtime; {await Version("dotnet", "--version")} SDK",
        $"nginx: {await Version("nginx", "-v")}",
        $"wrk: {await Version("wrk", "-v")}",
        $"h2load: {await Version("h2load", "--version")}",
        $"go: {await Version("go", "version")}");
}
