using System.Globalization;
using System.Text.RegularExpressions;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// The Handoff meter the way users export it: samples/HelloSleep serves OpenTelemetry's
/// Prometheus exporter at /metrics. A scrape (a real HTTP GET of the exporter's text format)
/// across an upgrade, a failed upgrade (a broken release put in place) and a good one again
/// reads what each generation reports: the serving generation counts the outcome it serves after.
/// </summary>
public sealed partial class OpenTelemetryTests(ITestOutputHelper output)
{
    private const int SIGUSR2 = 12;

    [Fact]
    public async Task PrometheusScrape_AcrossUpgradesAndAFailedOne_CountersAndHistogramsAsDocumented()
    {
        using var release = new TempDirectory();
        string appHost = TestAssets.CopyHelloSleepTo(release.Path);
        await using var server = await ServerProcess.StartAsync(command: [appHost], arguments: ["--Handoff:RollbackWindow=0s"]);
        int first = server.CurrentPid;

        var scrape = await ScrapeAsync(server, s => s.Value("handoff_generation") == 1);
        Assert.Equal(0, scrape.Value("handoff_upgrades_total"));

        // An idle keep-alive connection moves at the upgrade: the new generation counts it.
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var idle = await HttpProbe.ConnectAsync(server.EndPoint, limit.Token);
        Assert.Equal(first, await ConnectionMoveTests.RequestAsync(idle, limit.Token));
        var (_, second, exit) = await server.UpgradeAsync();
        Assert.Equal(0, exit);
        scrape = await ScrapeAsync(server, s => s.Value("handoff_generation") == 2);
        Assert.Equal(1, scrape.Value("handoff_upgrades_total", ("handoff_upgrade_result", "succeeded")));
        Assert.Equal(1, scrape.Value("handoff_moved_connections_total", ("handoff_connection_kind", "http1"), ("handoff_connection_outcome", "adopted")));
        Assert.Equal(0, scrape.Value("handoff_draining_generations"));

        // A broken release in place of the good one (a deploy's atomic rename; the running
        // generation keeps its files): the upgrade fails, generation 2 serves on and counts it,
        // with the failed attempt's duration in the histogram.
        string assembly = Path.Combine(release.Path, "HelloSleep.dll");
        string good = assembly + ".good";
        File.Copy(assembly, good);
        string broken = assembly + ".broken";
        await File.WriteAllTextAsync(broken, "not an assembly");
        File.Move(broken, assembly, overwrite: true);
        ServerProcess.Signal(second, SIGUSR2);
        await server.WaitForOutputAsync($"(pid {second}): upgrade to pid ", timeout: TimeSpan.FromSeconds(60));
        scrape = await ScrapeAsync(server, s => s.Value("handoff_upgrades_total", ("handoff_upgrade_result", "failed")) == 1);
        Assert.Equal(second, server.CurrentPid);
        Assert.Equal(1, scrape.Value("handoff_upgrades_total", ("handoff_upgrade_result", "succeeded")));
        Assert.Equal(1, scrape.Value("handoff_upgrade_duration_seconds_count", ("handoff_upgrade_result", "failed")));
        double failedSeconds = scrape.Value("handoff_upgrade_duration_seconds_sum", ("handoff_upgrade_result", "failed"));
        Assert.InRange(failedSeconds, 0.001, 60);
        Assert.Equal(1, scrape.Value("handoff_upgrade_duration_seconds_bucket", ("handoff_upgrade_result", "failed"), ("le", "+Inf")));
        Assert.Equal(2, scrape.Value("handoff_generation"));

        // The good release again: generation 3 counts its own upgrade (a new process: the
        // counter starts over, which Prometheus's increase() and rate() take as a reset).
        File.Move(good, assembly, overwrite: true);
        var (_, third, _) = await server.UpgradeAsync();
        scrape = await ScrapeAsync(server, s => s.Value("handoff_generation") == 3);
        Assert.Equal(1, scrape.Value("handoff_upgrades_total", ("handoff_upgrade_result", "succeeded")));
        Assert.Equal(0, scrape.Value("handoff_upgrades_total", ("handoff_upgrade_result", "failed")));
        Assert.Equal(third, server.CurrentPid);
        output.WriteLine($"generations {first}, {second} (a failed upgrade: {failedSeconds:0.000} s), {third}");
    }

    /// <summary>Scrapes /metrics until <paramref name="until"/> holds (the exporter caches its
    /// answer briefly, and a generation starts to serve a moment before a scrape reaches it).</summary>
    private static async Task<Scrape> ScrapeAsync(ServerProcess server, Func<Scrape, bool> until)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var scrape = new Scrape(await client.GetStringAsync(new Uri($"http://127.0.0.1:{server.EndPoint.Port}/metrics")));
            if (until(scrape))
            {
                return scrape;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the scrape never showed what was expected:\n{scrape.Text}");
            }

            await Task.Delay(100);
        }
    }

    /// <summary>Prometheus's text format: "name{label="value",...} number" per line.</summary>
    private sealed partial class Scrape(string text)
    {
        public string Text => text;

        /// <summary>The sum of the series named <paramref name="name"/> that carry every one of
        /// <paramref name="labels"/> (the exporter adds labels of its own, such as the scope).</summary>
        public double Value(string name, params (string Key, string Value)[] labels)
        {
            double sum = 0;
            foreach (Match line in Line().Matches(text))
            {
                if (line.Groups["name"].Value != name)
                {
                    continue;
                }

                var found = Label().Matches(line.Groups["labels"].Value).ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
                if (labels.All(l => found.TryGetValue(l.Key, out string? value) && value == l.Value))
                {
                    sum += double.Parse(line.Groups["value"].Value, CultureInfo.InvariantCulture);
                }
            }

            return sum;
        }

        [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>[^ \n]+)( \d+)?$", RegexOptions.Multiline)]
        private static partial Regex Line();

        [GeneratedRegex("([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\\]|\\\\.)*)\"")]
        private static partial Regex Label();
    }
}
