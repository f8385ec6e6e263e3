using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>A fact that runs only where a real systemd can boot in a namespace, and says why
/// it skips otherwise.</summary>
public sealed class SystemdFactAttribute : FactAttribute
{
    public SystemdFactAttribute()
    {
        if (SystemdNamespace.Unavailable() is { } why)
        {
            Skip = "needs a real systemd: " + why;
        }
    }
}

/// <summary>
/// TestServer as a systemd service, under a real systemd 252 booted for each test (see
/// <see cref="SystemdNamespace"/>): Type=notify readiness, <c>systemctl reload</c> as the
/// upgrade with the main pid handed to each new generation, a broken build, a stop, and socket
/// activation. Loads never retry; pids are the namespace's, as systemd and the server see them.
/// </summary>
public sealed class SystemdTests : IAsyncLifetime
{
    private readonly string _id = Guid.NewGuid().ToString("N")[..10];
    private SystemdNamespace? _systemd;

    // Outside /tmp and /run, which are private to the namespace: the test and the unit see it.
    private string AppDirectory => $"/var/lib/handoff-test-{_id}";

    private string Service => $"handoff-test-{_id}.service";

    private string ToolDirectory => $"/var/lib/handoff-test-{_id}-tool";

    private string Socket => $"handoff-test-{_id}.socket";

    private string BreakMarker => Path.Combine(AppDirectory, "broken");

    private SystemdNamespace Systemd => _systemd!;

    public async Task InitializeAsync()
    {
        TestAssets.CopyTestServerTo(AppDirectory);

        // The unit runs the tool from here: the checkout may be under /tmp or /var/tmp, which
        // are private to the namespace.
        TestAssets.CopyHandoffToolTo(ToolDirectory);
        _systemd = await SystemdNamespace.BootAsync();
    }

    public async Task DisposeAsync()
    {
        if (_systemd is not null)
        {
            await _systemd.DisposeAsync();
        }

        Directory.Delete(AppDirectory, recursive: true);
        Directory.Delete(ToolDirectory, recursive: true);
    }

    [SystemdFact]
    public async Task NotifyService_ActiveOnlyAfterReady_FiveReloadsUnderLoad_ZeroFailed_MainPidFollows()
    {
        int port = FreePort();
        string hold = Path.Combine(AppDirectory, "hold");
        File.WriteAllText(hold, "");
        await Systemd.InstallUnitAsync(Service, SampleUnit("myapp.service", port, $"TESTSERVER_HOLD_START={hold}"));

        // Type=notify: the unit stays "activating" until the generation reports READY=1.
        await Systemd.SystemctlAsync("start", "--no-block", Service);
        await Systemd.WaitForAsync(Service, "MainPID", pid => pid is not ("" or "0"), TimeSpan.FromSeconds(30), "the process to start");
        await WaitForJournalAsync("holds while");
        Assert.Equal("activating", await Systemd.ShowAsync(Service, "ActiveState"));
        File.Delete(hold);
        await Systemd.WaitForAsync(Service, "ActiveState", s => s == "active", TimeSpan.FromSeconds(60), "READY=1 to make the unit active");

        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        int mainPid = await MainPidAsync();
        Assert.Equal(mainPid, (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid);
        Assert.Contains($"Generation 1 (pid {mainPid}) serving", await Systemd.ShowAsync(Service, "StatusText"), StringComparison.Ordinal);

        var load = new LoadClient(endPoint, connections: 16, keepAlive: true);
        var pids = new List<int> { mainPid };
        try
        {
            for (int i = 0; i < 5; i++)
            {
                await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
                pids.Add(await ReloadAsync(pids[^1]));
                Assert.Equal("active", await Systemd.ShowAsync(Service, "ActiveState"));
                Assert.Contains($"Generation {i + 2} (pid {pids[^1]}) serving", await Systemd.ShowAsync(Service, "StatusText"), StringComparison.Ordinal);
            }

            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
        }
        finally
        {
            var report = await load.StopAsync();
            Assert.True(report.Failures.Count == 0, report.ToString());
        }

        Assert.Equal(pids[^1], (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid);
        await WaitForProcessesAsync([pids[^1]]);
        Assert.Equal("0", await Systemd.ShowAsync(Service, "NRestarts"));

        // Every generation was systemd's own child: started detached, none "alien".
        string journal = await Systemd.JournalAsync(Service);
        Assert.DoesNotContain("which is not our child", journal, StringComparison.Ordinal);
        Assert.DoesNotContain("reception only permitted for main PID", journal, StringComparison.Ordinal);

        var (code, output) = await Systemd.SystemctlAsync("stop", Service);
        Assert.True(code == 0, output);
        Assert.Equal("inactive", await Systemd.ShowAsync(Service, "ActiveState"));
        Assert.Equal("success", await Systemd.ShowAsync(Service, "Result"));
        await WaitForProcessesAsync([]);
    }

    [SystemdFact]
    public async Task NotifyService_BrokenBuild_ReloadFailsWithTheReasonInTheJournal_NothingChanges()
    {
        int port = FreePort();
        await Systemd.InstallUnitAsync(Service, SampleUnit("myapp.service", port, $"TESTSERVER_BREAK_FAILSTART={BreakMarker}"));
        await StartAsync(Service);
        int mainPid = await MainPidAsync();
        File.WriteAllText(BreakMarker, "");

        var (code, output) = await Systemd.SystemctlAsync("reload", Service);

        // ExecReload=handoff upgrade: the reload fails, and the journal says why.
        Assert.True(code != 0, output);
        string journal = await WaitForJournalAsync("handoff: upgrade failed: new generation 2 (pid");
        Assert.Contains("TestServer:FailStart is set: this build is broken on purpose", journal, StringComparison.Ordinal);
        Assert.Contains($"handoff: the server is unchanged: generation 1 (pid {mainPid}) serves.", journal, StringComparison.Ordinal);
        string status = await Systemd.WaitForAsync(Service, "StatusText", s => s.Contains("last upgrade: failed", StringComparison.Ordinal), TimeSpan.FromSeconds(60), "the failed upgrade in the status");
        Assert.Contains("new generation 2 (pid", status, StringComparison.Ordinal);
        Assert.Contains("TestServer:FailStart is set: this build is broken on purpose", status, StringComparison.Ordinal);
        Assert.Contains($"Generation 1 (pid {mainPid}) serving", status, StringComparison.Ordinal);
        Assert.Equal(mainPid, await MainPidAsync());
        await Systemd.WaitForAsync(Service, "SubState", s => s == "running", TimeSpan.FromSeconds(30), "the reload to end");
        Assert.Equal("active", await Systemd.ShowAsync(Service, "ActiveState"));
        Assert.Equal(mainPid, (await HttpProbe.GetAsync(new IPEndPoint(IPAddress.Loopback, port), "/", TimeSpan.FromSeconds(10))).Pid);
        await WaitForProcessesAsync([mainPid]);

        // Fixed: the next reload succeeds.
        File.Delete(BreakMarker);
        await ReloadAsync(mainPid);
    }

    [SystemdFact]
    public async Task NotifyService_StopWithRequestsInFlight_TheyComplete_UnitInactive_NothingLeft()
    {
        int port = FreePort();
        await Systemd.InstallUnitAsync(Service, SampleUnit("myapp.service", port));
        await StartAsync(Service);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        int first = await MainPidAsync();

        // Generation 1 still drains a long request when the stop comes; generation 2, which
        // systemd did not start, serves four.
        // It outlasts generation 2, whose clean exit must not end generation 1's drain.
        var draining = HttpProbe.GetAsync(endPoint, "/?sleep=8", TimeSpan.FromSeconds(30));
        await WaitForJournalAsync("sleeping 8");
        int mainPid = await ReloadAsync(first);
        var slow = Enumerable.Range(0, 4).Select(_ => HttpProbe.GetAsync(endPoint, "/?sleep=3", TimeSpan.FromSeconds(30))).ToList();
        await WaitForJournalAsync("sleeping 3", count: 4);

        var (code, output) = await Systemd.SystemctlAsync("stop", Service);

        Assert.True(code == 0, output);
        foreach (var request in slow)
        {
            var response = await request;
            Assert.Equal(200, response.Status);
            Assert.Equal(mainPid, response.Pid);
        }

        var drained = await draining;
        Assert.Equal(200, drained.Status);
        Assert.Equal(first, drained.Pid);

        Assert.Equal("inactive", await Systemd.ShowAsync(Service, "ActiveState"));
        Assert.Equal("success", await Systemd.ShowAsync(Service, "Result"));
        await WaitForProcessesAsync([]);
    }

    [SystemdFact]
    public async Task Watchdog_KeptAliveByEachMainGenerationAcrossReloads()
    {
        // WatchdogSec=2: systemd kills the service if the main process is silent for 2 s. Each
        // generation must take over the keep-alives once it is the main process.
        int port = FreePort();
        await Systemd.InstallUnitAsync(Service, SampleUnit("myapp.service", port).Replace("#WatchdogSec=10", "WatchdogSec=2", StringComparison.Ordinal));
        await StartAsync(Service);
        int mainPid = await MainPidAsync();
        var started = DateTime.UtcNow;

        for (int i = 0; i < 3; i++)
        {
            mainPid = await ReloadAsync(mainPid);
        }

        // Past three watchdog intervals after the last handover, within bounded polls.
        var quietUntil = DateTime.UtcNow + TimeSpan.FromSeconds(6);
        while (DateTime.UtcNow < quietUntil)
        {
            Assert.Equal("active", await Systemd.ShowAsync(Service, "ActiveState"));
            Assert.Equal(mainPid, await MainPidAsync());
            await Task.Delay(200);
        }

        Assert.True(DateTime.UtcNow - started > TimeSpan.FromSeconds(8), "the run must outlast the watchdog several times");
        string journal = await Systemd.JournalAsync(Service);
        Assert.DoesNotContain("Watchdog timeout", journal, StringComparison.Ordinal);
        Assert.DoesNotContain("reception only permitted for main PID", journal, StringComparison.Ordinal);
        Assert.Equal(mainPid, (await HttpProbe.GetAsync(new IPEndPoint(IPAddress.Loopback, port), "/", TimeSpan.FromSeconds(10))).Pid);
    }

    [SystemdFact]
    public async Task ServingGenerationCrashesAfterAnUpgrade_SystemdNoticesAndRestartsIt()
    {
        // After the old generation exited, the serving one's parent is systemd: its death is a
        // main-process exit that Restart=on-failure acts on.
        int port = FreePort();
        await Systemd.InstallUnitAsync(Service, RestartingOnFailure(SampleUnit("myapp.service", port)));
        await StartAsync(Service);
        int first = await MainPidAsync();
        int second = await ReloadAsync(first);
        await WaitForProcessesAsync([second]);

        await Systemd.RunInsideAsync("kill", "-KILL", second.ToString(CultureInfo.InvariantCulture));

        await Systemd.WaitForAsync(Service, "NRestarts", n => n == "1", TimeSpan.FromSeconds(60), "systemd to restart the service");
        await Systemd.WaitForAsync(Service, "ActiveState", s => s == "active", TimeSpan.FromSeconds(60), "the restarted service to be ready");
        int third = await MainPidAsync();
        Assert.NotEqual(second, third);
        Assert.Equal(third, (await HttpProbe.GetAsync(new IPEndPoint(IPAddress.Loopback, port), "/", TimeSpan.FromSeconds(10))).Pid);
        Assert.Contains("Generation 1", await Systemd.ShowAsync(Service, "StatusText"), StringComparison.Ordinal);
    }

    [SystemdFact]
    public async Task ServingGenerationCrashesWhileTheOldOneDrains_SystemdSeesItAtOnce_OldFinishes_ThenRestart()
    {
        // Each new generation is started detached, so its parent is systemd: systemd sees it die
        // even while the old generation (which started it) still drains. systemd then stops the
        // unit as after any crash of a main process: the old generation gets SIGTERM and
        // finishes its request, and the service is restarted.
        int port = FreePort();
        await Systemd.InstallUnitAsync(Service, RestartingOnFailure(SampleUnit("myapp.service", port)));
        await StartAsync(Service);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        int first = await MainPidAsync();
        var draining = HttpProbe.GetAsync(endPoint, "/?sleep=6", TimeSpan.FromSeconds(60));
        await WaitForJournalAsync("sleeping 6");
        int second = await ReloadAsync(first);
        var (_, parent) = await Systemd.RunInsideAsync("sh", "-c", $"grep PPid /proc/{second}/status");
        Assert.Equal("PPid:\t1", parent.Trim());

        await Systemd.RunInsideAsync("kill", "-KILL", second.ToString(CultureInfo.InvariantCulture));

        await Systemd.WaitForAsync(Service, "ActiveState", s => s != "active", TimeSpan.FromSeconds(10), "systemd to notice its main process died");
        var drained = await draining;
        Assert.Equal(200, drained.Status);
        Assert.Equal(first, drained.Pid);
        await Systemd.WaitForAsync(Service, "NRestarts", n => n == "1", TimeSpan.FromSeconds(60), "systemd to restart the service");
        await Systemd.WaitForAsync(Service, "ActiveState", s => s == "active", TimeSpan.FromSeconds(60), "the restarted service to be ready");
        int third = await MainPidAsync();
        Assert.Equal(third, (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid);
        await WaitForProcessesAsync([third]);
    }

    [SystemdFact]
    public async Task SocketActivated_ReloadsAndStopStartUnderLoad_ZeroFailed()
    {
        int port = FreePort();
        await Systemd.InstallUnitAsync(Socket, SampleUnit("myapp-activated.socket", port));

        // No --urls: the server serves the socket systemd passes, as UseSystemd() would.
        await Systemd.InstallUnitAsync(Service, SampleUnit("myapp-activated.service", port));
        var (code, output) = await Systemd.SystemctlAsync("start", Socket);
        Assert.True(code == 0, output);
        await StartAsync(Service);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        int mainPid = await MainPidAsync();
        Assert.Equal(mainPid, (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid);
        string journal = await Systemd.JournalAsync(Service);
        Assert.Contains("1 activated sockets", journal, StringComparison.Ordinal);

        // A new connection for every request: a refused or reset connect counts as a failure.
        var load = new LoadClient(endPoint, connections: 8, keepAlive: false);
        try
        {
            for (int i = 0; i < 3; i++)
            {
                await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
                mainPid = await ReloadAsync(mainPid);
            }

            await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));

            // A full stop and start: no process listens for a moment, and connections wait in
            // the queue of the socket systemd holds.
            (code, output) = await Systemd.SystemctlAsync("stop", Service);
            Assert.True(code == 0, output);
            (code, output) = await Systemd.SystemctlAsync("start", Service);
            Assert.True(code == 0, output);
            await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
        }
        finally
        {
            var report = await load.StopAsync();
            Assert.True(report.Failures.Count == 0, report.ToString());
        }

        int restarted = await MainPidAsync();
        Assert.NotEqual(mainPid, restarted);
        Assert.Equal(restarted, (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid);
        await WaitForProcessesAsync([restarted]);
    }

    [SystemdFact]
    public async Task SocketActivated_ConfiguredAddress_UsesTheActivatedSocket()
    {
        // systemd holds the port: a generation that bound the address itself would fail with
        // "address in use". It must serve systemd's socket for its configured address.
        int port = FreePort();
        await Systemd.InstallUnitAsync(Socket, SampleUnit("myapp-activated.socket", port));
        await Systemd.InstallUnitAsync(Service, SampleUnit("myapp-activated.service", port, "TESTSERVER_SPAWN_AT_START=1").Replace("TestServer.dll\n", $"TestServer.dll --urls http://127.0.0.1:{port}\n", StringComparison.Ordinal));
        var (code, output) = await Systemd.SystemctlAsync("start", Socket);
        Assert.True(code == 0, output);
        await StartAsync(Service);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        int first = await MainPidAsync();
        Assert.Equal(first, (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid);

        int second = await ReloadAsync(first);

        Assert.Equal(second, (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid);
        string journal = await Systemd.JournalAsync(Service);
        Assert.Contains($"Adopted inherited listener 127.0.0.1:{port} (fd 3)", journal, StringComparison.Ordinal);
        Assert.DoesNotContain("Bound new listener", journal, StringComparison.Ordinal);
        Assert.Contains("--urls", await Systemd.ShowAsync(Service, "ExecStart"), StringComparison.Ordinal);

        // A helper process that generation 1 started first thing in Main inherited neither the
        // activated socket nor systemd's variables (the unit's startup hook took them before).
        var helper = System.Text.RegularExpressions.Regex.Match(journal, @"TestServer started helper pid (\d+)");
        Assert.True(helper.Success, journal);
        var (_, environment) = await Systemd.RunInsideAsync("cat", $"/proc/{helper.Groups[1].Value}/environ");
        Assert.DoesNotContain("LISTEN_", environment, StringComparison.Ordinal);
        Assert.DoesNotContain("NOTIFY_SOCKET", environment, StringComparison.Ordinal);
        Assert.DoesNotContain("DOTNET_STARTUP_HOOKS", environment, StringComparison.Ordinal);
        var (_, fds) = await Systemd.RunInsideAsync("ls", $"/proc/{helper.Groups[1].Value}/fd");
        Assert.Equal(["0", "1", "2"], fds.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order());
    }

    private static int FreePort()
    {
        using var probe = new System.Net.Sockets.Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    [SystemdFact]
    public async Task Supervised_MainPidStaysTheSupervisor_ReloadsUnderLoad_ZeroFailed_StopDrainsAll()
    {
        int port = FreePort();
        await Systemd.InstallUnitAsync(Service, SampleUnit("myapp-supervised.service", port));
        await StartAsync(Service);
        Assert.Equal("active", await Systemd.ShowAsync(Service, "ActiveState"));
        int supervisor = await MainPidAsync();
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        int first = (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid;
        Assert.NotEqual(supervisor, first);

        var load = new LoadClient(endPoint, connections: 16, keepAlive: true);
        LoadReport report;
        var served = new HashSet<int> { first };
        try
        {
            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
            for (int i = 0; i < 3; i++)
            {
                var (code, output) = await Systemd.SystemctlAsync("reload", Service);
                Assert.True(code == 0, output + await Systemd.JournalAsync(Service));
                Assert.Equal(supervisor, await MainPidAsync());
                int pid = (await HttpProbe.GetAsync(endPoint, "/", TimeSpan.FromSeconds(10))).Pid;
                Assert.True(served.Add(pid), $"reload {i + 1} left pid {pid} serving");
                await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
            }

            Assert.Contains("Status: \"Generation 4 (pid", (await Systemd.SystemctlAsync("status", Service)).Output, StringComparison.Ordinal);
        }
        finally
        {
            report = await load.StopAsync();
        }

        Assert.True(report.Failures.Count == 0, report.ToString());
        var (stopCode, stopOutput) = await Systemd.SystemctlAsync("stop", Service);
        Assert.True(stopCode == 0, stopOutput);
        Assert.Equal("inactive", await Systemd.ShowAsync(Service, "ActiveState"));
        Assert.Equal("success", await Systemd.ShowAsync(Service, "Result"));
        Assert.Contains("Every generation is gone; exiting with code 0", await Systemd.JournalAsync(Service), StringComparison.Ordinal);
        await WaitForProcessesAsync([]);
    }

    /// <summary>A unit file of samples/systemd as documented, pointed at this test's copy of
    /// TestServer and port, with test-only environment variables added.</summary>
    private string SampleUnit(string file, int port, params string[] environment)
    {
        string text = File.ReadAllText(Path.Combine(TestAssets.SystemdSamplesDirectory, file))
            .Replace("/srv/myapp/current", AppDirectory, StringComparison.Ordinal)
            .Replace("MyApp.dll", "TestServer.dll", StringComparison.Ordinal)
            .Replace("127.0.0.1:8080", $"127.0.0.1:{port}", StringComparison.Ordinal)
            .Replace("myapp-activated.socket", Socket, StringComparison.Ordinal)
            .Replace("/usr/local/bin/handoff", $"/usr/bin/dotnet {ToolDirectory}/Handoff.Tool.dll", StringComparison.Ordinal)
            .Replace("RuntimeDirectory=myapp", $"RuntimeDirectory=handoff-test-{_id}", StringComparison.Ordinal)
            .Replace("Restart=on-failure", "Restart=no", StringComparison.Ordinal);
        string added = string.Concat(environment.Select(e => $"Environment={e}\n"));
        return text.Replace("[Service]\n", "[Service]\n" + added, StringComparison.Ordinal);
    }

    // SampleUnit turns Restart= off; the crash tests want the sample's Restart=on-failure, fast.
    private static string RestartingOnFailure(string unit) =>
        unit.Replace("Restart=no", "Restart=on-failure\nRestartSec=100ms", StringComparison.Ordinal);

    private async Task StartAsync(string unit)
    {
        var (code, output) = await Systemd.SystemctlAsync("start", unit);
        Assert.True(code == 0, $"systemctl start {unit}: {output}\n{await Systemd.JournalAsync(unit)}");
    }

    private async Task<int> MainPidAsync() => int.Parse(await Systemd.ShowAsync(Service, "MainPID"), CultureInfo.InvariantCulture);

    /// <summary><c>systemctl reload</c> returns once <c>kill -USR2</c> has run; the upgrade
    /// completes when the old generation hands systemd the new main pid.</summary>
    private async Task<int> ReloadAsync(int oldPid)
    {
        var (code, output) = await Systemd.SystemctlAsync("reload", Service);
        Assert.True(code == 0, output);
        string pid = await Systemd.WaitForAsync(Service, "MainPID", p => p != oldPid.ToString(CultureInfo.InvariantCulture), TimeSpan.FromSeconds(60), "the new generation to become the main process");
        await Systemd.WaitForAsync(Service, "SubState", s => s == "running", TimeSpan.FromSeconds(30), "the reload to end");
        return int.Parse(pid, CultureInfo.InvariantCulture);
    }

    private Task<string> WaitForJournalAsync(string text, int count = 1) =>
        SystemdNamespace.PollAsync(() => Systemd.JournalAsync(Service), journal => CountOf(journal, text) >= count, TimeSpan.FromSeconds(60), journal => Task.FromResult($"'{text}' did not appear {count} times in the journal:\n{journal}"));

    private static int CountOf(string text, string part)
    {
        int count = 0;
        for (int at = text.IndexOf(part, StringComparison.Ordinal); at >= 0; at = text.IndexOf(part, at + part.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    /// <summary>Waits until exactly <paramref name="expected"/> processes of the app run inside
    /// the namespace (older generations finish draining), with a deadline.</summary>
    private Task<int[]> WaitForProcessesAsync(int[] expected) =>
        SystemdNamespace.PollAsync(
            async () =>
            {
                var (_, output) = await Systemd.RunInsideAsync("pgrep", "-f", $"{AppDirectory}/TestServer.dll");
                return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p => int.Parse(p, CultureInfo.InvariantCulture)).Order().ToArray();
            },
            running => running.SequenceEqual(expected.Order()),
            TimeSpan.FromSeconds(60),
            async running => $"expected app processes [{string.Join(",", expected)}], found [{string.Join(",", running)}]\n{await Systemd.JournalAsync(Service)}");
}
