// The benchmark harness behind bench/run. Runs every scenario (server x load x action), each
// with a real load generator that never retries, and writes bench/results/<date>.json,
// docs/benchmarks.md and docs/benchmarks-timeline.svg.
//
//   Handoff.Bench [--quick] [--repeats N] [--duration SECONDS] [--only TEXT] [--root DIR]
using System.Globalization;
using System.Text.Json;
using Handoff.Bench;
using Handoff.Testing;

bool quick = args.Contains("--quick");
int repeats = int.Parse(Option("--repeats") ?? (quick ? "1" : "3"), CultureInfo.InvariantCulture);
var duration = TimeSpan.FromSeconds(int.Parse(Option("--duration") ?? (quick ? "12" : "40"), CultureInfo.InvariantCulture));
string root = Path.GetFullPath(Option("--root") ?? Directory.GetCurrentDirectory());
string? only = Option("--only");
var scenarios = (quick ? Scenario.Quick : Scenario.Full).Where(s => only is null || s.ToString().Contains(only, StringComparison.Ordinal)).ToList();

_ = ProcessTable.State(Environment.ProcessId); // loads the helpers: this process reaps the servers' generations
string work = Directory.CreateTempSubdirectory("handoff-bench-").FullName;
string shown = string.Join(' ', args.Where((a, i) => a != "--root" && (i == 0 || args[i - 1] != "--root")));
string command = $"bench/run {shown}  ({scenarios.Count} scenarios x {repeats} repeats x {duration.TotalSeconds:0} s)";
Console.WriteLine(command);

var runs = new List<RunResult>();
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

string machine = await MachineAsync();
string date = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture) + (quick ? "-quick" : "");
string results = Path.Combine(root, "bench", "results");
Directory.CreateDirectory(results);
await File.WriteAllTextAsync(Path.Combine(results, date + ".json"), JsonSerializer.Serialize(
    new { command, machine, duration_seconds = duration.TotalSeconds, repeats, runs = runs.Select(r => r with { Timeline = [] }) },
    new JsonSerializerOptions { WriteIndented = true }));

string docs = Path.Combine(root, "docs");
Directory.CreateDirectory(docs);
var pictured = new[] { new Scenario("handoff", "h1log", "upgrade"), new Scenario("nginx", "h1log", "upgrade"), new Scenario("kestrel", "h1log", "restart") }
    .Select(s => runs.FirstOrDefault(r => r.Scenario == s)).OfType<RunResult>().ToList();
await File.WriteAllTextAsync(Path.Combine(docs, "benchmarks-timeline.svg"), Timeline.Svg(pictured));
await File.WriteAllTextAsync(Path.Combine(docs, "benchmarks.md"), Report.Markdown(runs, machine, command, "benchmarks-timeline.svg"));
Console.WriteLine($"wrote bench/results/{date}.json, docs/benchmarks.md, docs/benchmarks-timeline.svg");
Directory.Delete(work, recursive: true);
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
        $"h2load: {await Version("h2load", "--version")}");
}
