// Shows Handoff's main job in one command: starts the sample HelloSleep (samples/HelloSleep), puts
// a constant load on it from clients that never retry, upgrades it with SIGUSR2 several times, and
// prints what happened.
//
//   dotnet run --project samples/UpgradeDemo [-- --upgrades 5 --connections 32 --new-connections]
//
// Exit code 0 when every request succeeded and every upgrade replaced the process.
using System.Diagnostics;
using System.Globalization;
using Handoff.Testing;

int upgrades = Option("--upgrades", 5);
int connections = Option("--connections", 32);
bool keepAlive = !args.Contains("--new-connections");

await using var server = await ServerProcess.StartAsync(command: [TestAssets.HelloSleepAppHost]);
Console.WriteLine($"HelloSleep generation 1 is pid {server.CurrentPid}, serving on http://{server.EndPoint}");
Console.WriteLine($"Load: {connections} {(keepAlive ? "keep-alive connections" : "clients opening a new connection per request")}, no retries.");
var load = new LoadClient(server.EndPoint, connections, keepAlive);
await load.WaitForProgressAsync(500, TimeSpan.FromSeconds(30));

bool ok = true;
for (int i = 1; i <= upgrades; i++)
{
    await Task.Delay(1000);
    long before = load.Succeeded;
    var clock = Stopwatch.StartNew();
    var (oldPid, newPid, exitCode) = await server.UpgradeAsync();
    ok &= newPid != oldPid && exitCode is 0 or null;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"upgrade {i}: SIGUSR2 to pid {oldPid} -> pid {newPid} serving, old pid exited (code {exitCode?.ToString(CultureInfo.InvariantCulture) ?? "reaped"}) after {clock.ElapsedMilliseconds} ms; {load.Succeeded - before} requests meanwhile, {load.FailureCount} failed so far"));
}

await Task.Delay(1000);
var report = await load.StopAsync();
ok &= report.Failures.Count == 0;
Console.WriteLine();
Console.WriteLine($"Total: {report.Succeeded} requests succeeded, {report.Failures.Count} failed, across {upgrades} upgrades.");
Console.WriteLine($"Pids that answered: {string.Join(", ", report.Pids.Order())}");
foreach (string failure in report.Failures.Take(10))
{
    Console.WriteLine("  failure: " + failure);
}

Console.WriteLine(ok ? "OK: zero failed requests." : "FAILED: see above.");
return ok ? 0 : 1;

int Option(string name, int fallback)
{
    int index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? int.Parse(args[index + 1], CultureInfo.InvariantCulture) : fallback;
}
