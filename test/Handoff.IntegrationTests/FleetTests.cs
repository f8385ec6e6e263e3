using System.Diagnostics;
using System.Text;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// A fleet rolled by Ansible (samples/ansible/rollout.yml, as a user runs it): three servers on
/// this machine, each with its own port, control socket and release directories, behind HAProxy,
/// and a load through HAProxy that never retries. A good release rolls across every host with no
/// failed request; a broken one stops at the first host, which serves its old build on, and the
/// playbook fails naming the host and the reason, the other hosts untouched.
/// </summary>
public sealed class FleetTests(ITestOutputHelper output)
{
    private const int Hosts = 3;

    [Fact]
    public async Task AnsibleRollout_GoodReleaseEverywhere_BrokenReleaseStopsAtTheFirstHost_NoRequestFails()
    {
        using var root = new TempDirectory();
        string builds = Path.Combine(root.Path, "builds");
        TestAssets.CopyTestServerTo(Path.Combine(builds, "v1"));
        TestAssets.CopyTestServerTo(Path.Combine(builds, "v2"));
        string v2 = Path.Combine(builds, "v2", "TestServer.dll");
        File.WriteAllBytes(v2, TestAssets.WithBuildMarker(File.ReadAllBytes(v2), "testserver-build-0002"));
        TestAssets.CopyTestServerTo(Path.Combine(builds, "v3"));
        await File.WriteAllTextAsync(Path.Combine(builds, "v3", "TestServer.dll"), "a broken build");

        var servers = new List<ServerProcess>();
        var hosts = new List<string>();
        try
        {
            for (int i = 1; i <= Hosts; i++)
            {
                string host = Path.Combine(root.Path, $"host{i}");
                TestAssets.CopyTestServerTo(Path.Combine(host, "releases", "v1"));
                string current = Path.Combine(host, "current");
                File.CreateSymbolicLink(current, Path.Combine(host, "releases", "v1"));
                hosts.Add(host);

                // As a unit starts it: from `current`, with its control socket.
                servers.Add(await ServerProcess.StartAsync(
                    command: ["dotnet", "TestServer.dll"],
                    arguments: ["--Handoff:RollbackWindow=300ms", $"--Handoff:ControlSocket={host}/handoff.sock", $"--Handoff:WorkingDirectory={current}"],
                    directory: current,
                    pidFile: Path.Combine(host, "app.pid"),
                    environment: new Dictionary<string, string> { ["PWD"] = current }));
            }

            string inventory = Path.Combine(root.Path, "inventory.ini");
            await File.WriteAllTextAsync(inventory, Inventory(hosts));
            using var balancer = await ReverseProxy.StartAsync("haproxy", root.Path, [.. servers.Select(s => s.EndPoint)]);
            // Paced (a pause of about 10 ms per client): a load at full speed would take the two
            // cores from Ansible itself.
            var load = new LoadClient(balancer.EndPoint, 12, keepAlive: true, path: "/", pause: TimeSpan.FromMilliseconds(10));
            try
            {
                await load.WaitForProgressAsync(300, TimeSpan.FromSeconds(30));

                // The good release: every host, one at a time.
                var good = await RunPlaybookAsync(inventory, root.Path, "v2", Path.Combine(builds, "v2"));
                Assert.True(good.ExitCode == 0, good.Output);
                for (int i = 0; i < Hosts; i++)
                {
                    var response = await HttpProbe.GetAsync(servers[i].EndPoint, "/", TimeSpan.FromSeconds(30));
                    Assert.Contains("build:testserver-build-0002", response.Body, StringComparison.Ordinal);
                    Assert.Contains($"/host{i + 1}/releases/v2/", response.Body, StringComparison.Ordinal);
                }

                await load.WaitForProgressAsync(300, TimeSpan.FromSeconds(30));
                int[] before = [.. servers.Select(s => s.CurrentPid)];

                // Run again, it changes nothing: each host serves v2 already and is left alone.
                var again = await RunPlaybookAsync(inventory, root.Path, "v2", Path.Combine(builds, "v2"));
                Assert.True(again.ExitCode == 0, again.Output);
                Assert.Equal(before, servers.Select(s => s.CurrentPid));

                // The broken release: the first host's upgrade fails, it serves v2 on, the rollout stops.
                var broken = await RunPlaybookAsync(inventory, root.Path, "v3", Path.Combine(builds, "v3"));
                output.WriteLine(broken.Output);
                Assert.NotEqual(0, broken.ExitCode);
                Assert.Contains("host1: release v3 did not take over (handoff upgrade exited 1", broken.Output, StringComparison.Ordinal);
                Assert.Contains("it serves v2 as before", broken.Output, StringComparison.Ordinal);

                // The same name again: its directory exists and does not serve, so it is refused
                // before anything changes.
                var reused = await RunPlaybookAsync(inventory, root.Path, "v3", Path.Combine(builds, "v2"));
                Assert.NotEqual(0, reused.ExitCode);
                Assert.Contains("releases/v3 exists and does not serve: pick a new release name", reused.Output, StringComparison.Ordinal);
                Assert.Equal(before, servers.Select(s => s.CurrentPid));
                Assert.Equal(Path.Combine(hosts[0], "releases", "v2"), new DirectoryInfo(Path.Combine(hosts[0], "current")).LinkTarget);
                Assert.False(Directory.Exists(Path.Combine(hosts[1], "releases", "v3")), "the rollout went on past the failed host");
                Assert.False(Directory.Exists(Path.Combine(hosts[2], "releases", "v3")), "the rollout went on past the failed host");
                var first = await HttpProbe.GetAsync(servers[0].EndPoint, "/", TimeSpan.FromSeconds(30));
                Assert.Contains("build:testserver-build-0002", first.Body, StringComparison.Ordinal);
                await load.WaitForProgressAsync(300, TimeSpan.FromSeconds(30));
            }
            finally
            {
                var report = await load.StopAsync();
                output.WriteLine($"through HAProxy: {report}");
                Assert.True(report.Failures.Count == 0, report.ToString());
                Assert.True(report.Pids.Count >= 2 * Hosts, $"the load reached {report.Pids.Count} generations: {report}");
            }
        }
        finally
        {
            foreach (var server in servers)
            {
                await server.DisposeAsync();
            }
        }
    }

    private static string Inventory(List<string> hosts)
    {
        var text = new StringBuilder("[app]\n");
        for (int i = 0; i < hosts.Count; i++)
        {
            text.Append(System.Globalization.CultureInfo.InvariantCulture, $"host{i + 1} ansible_connection=local app_root={hosts[i]} control={hosts[i]}/handoff.sock\n");
        }

        text.Append(System.Globalization.CultureInfo.InvariantCulture, $"\n[app:vars]\nhandoff={TestAssets.HandoffTool}\nansible_python_interpreter=/usr/bin/python3\n");
        return text.ToString();
    }

    private static async Task<(int ExitCode, string Output)> RunPlaybookAsync(string inventory, string directory, string release, string build)
    {
        // The artifact a build pipeline makes: the build as a tarball.
        string artifact = Path.Combine(directory, release + ".tar.gz");
        using (var tar = Process.Start("tar", ["-C", build, "-czf", artifact, "."]))
        {
            await tar.WaitForExitAsync();
            Assert.Equal(0, tar.ExitCode);
        }

        string playbook = Path.Combine(TestAssets.RepositoryRoot, "samples", "ansible", "rollout.yml");
        var info = new ProcessStartInfo("ansible-playbook", ["-i", inventory, playbook, "-e", $"release={release}", "-e", $"artifact={artifact}"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.Environment["ANSIBLE_NOCOLOR"] = "1";
        info.Environment["ANSIBLE_PIPELINING"] = "True";
        info.Environment["ANSIBLE_LOCAL_TEMP"] = Path.Combine(directory, "ansible-local");
        info.Environment["ANSIBLE_REMOTE_TEMP"] = Path.Combine(directory, "ansible-remote");
        info.Environment["ANSIBLE_HOME"] = Path.Combine(directory, "ansible-home");
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await stdout + await stderr);
    }
}
