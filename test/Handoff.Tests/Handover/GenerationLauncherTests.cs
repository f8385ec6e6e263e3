using Handoff.Testing;
namespace Handoff.Tests;

/// <summary>
/// The old generation's end of the protocol against real shell children: the launcher
/// places the ready pipe at fd 3 (no listeners here), and each script plays a new generation
/// that misbehaves in one way. Fast, because nothing but a shell starts.
/// </summary>
public sealed class GenerationLauncherTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-launcher-").FullName;
    private readonly List<IStartedGeneration> _started = [];

    [Fact]
    public async Task WaitReady_ChildReportsReady_IsNullAndTheExitIsReportedLater()
    {
        var child = Start("echo ready >&3; exec sleep 30");

        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));
        var exited = new TaskCompletionSource<string>();
        child.ReapWhenExited(how => exited.TrySetResult(how));
        Assert.Equal(0, Interop.Libc.Kill(child.Pid, Interop.Libc.SIGKILL));
        Assert.Equal("killed by signal 9", await exited.Task.WaitAsync(Patience));
    }

    [Fact]
    public async Task TakeReleased_ReadyWithTheListenersTheChildDoesNotServe_GivesTheirPositions_AndTheWatchIgnoresTheLine()
    {
        // One write, as ReadyPipe.ReportReady makes it (bash's own printf writes each line
        // apart; coreutils' buffers them).
        var child = Start("/usr/bin/printf 'ready\\nreleased 1,3\\n' >&3; exec sleep 30");

        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));
        Assert.Equal([1, 3], child.TakeReleased());
        Assert.Empty(child.TakeReleased());
        using var commit = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        Assert.Null(await child.WatchAsync(commit.Token).WaitAsync(Patience));
    }

    [Fact]
    public async Task Watch_ChildWritesStoppingAfterReady_IsAWithdrawal()
    {
        var child = Start("echo ready >&3; sleep 0.2; echo stopping >&3; exec sleep 30");
        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));

        Assert.Equal("it began stopping", await child.WatchAsync(CancellationToken.None).WaitAsync(Patience));
    }

    [Fact]
    public async Task Watch_StoppingWrittenJustBeforeTheCommit_StillCounts()
    {
        string done = Path.Combine(_directory, "written");
        var child = Start($"echo ready >&3; echo stopping >&3; touch {done}; exec sleep 30");
        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));
        using (var deadline = new CancellationTokenSource(Patience))
        {
            while (!File.Exists(done))
            {
                await Task.Delay(10, deadline.Token); // poll, bounded by Patience
            }
        }

        using var committed = new CancellationTokenSource();
        await committed.CancelAsync();

        Assert.Equal("it began stopping", await child.WatchAsync(committed.Token).WaitAsync(Patience));
    }

    [Fact]
    public async Task Watch_Committed_ClosesThePipeSoTheChildSeesIt()
    {
        // The child writes to the pipe until that fails: once the old generation has closed its
        // end, the next write raises SIGPIPE, which is how a new generation learns of the commit.
        var child = Start("echo ready >&3; while echo waiting >&3; do sleep 0.05; done; exit 7");
        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));
        var exited = new TaskCompletionSource<string>();
        child.ReapWhenExited(how => exited.TrySetResult(how));
        using var commit = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

        Assert.Null(await child.WatchAsync(commit.Token).WaitAsync(Patience));
        Assert.False(exited.Task.IsCompleted, "the pipe stays open until CommitAsync");
        Assert.Null(await child.CommitAsync());
        Assert.Equal("killed by signal 13", await exited.Task.WaitAsync(Patience));
    }

    [Fact]
    public async Task Commit_StoppingWrittenAfterTheLastLook_IsFoundAtTheClose()
    {
        // Between the watch's last look and the close, the old generation tells systemd the new
        // main pid; a withdrawal written meanwhile must not be lost.
        string go = Path.Combine(_directory, "go");
        string done = Path.Combine(_directory, "written");
        var child = Start($"echo ready >&3; while [ ! -e {go} ]; do sleep 0.01; done; echo stopping >&3; touch {done}; exec sleep 30");
        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));
        using var committed = new CancellationTokenSource();
        await committed.CancelAsync();
        Assert.Null(await child.WatchAsync(committed.Token).WaitAsync(Patience));

        File.WriteAllText(go, "");
        using (var deadline = new CancellationTokenSource(Patience))
        {
            while (!File.Exists(done))
            {
                await Task.Delay(10, deadline.Token); // poll, bounded by Patience
            }
        }

        Assert.Equal("it began stopping", await child.CommitAsync());
        Assert.Null(await child.CommitAsync());
    }

    [Fact]
    public async Task WaitReady_ChildExitsWithoutALine_SaysHowItExited()
    {
        var child = Start("exit 3");

        Assert.Equal(new StartFailure(UpgradeFailureReason.Exited, "it exited (exit code 3) before reporting ready"), await child.WaitReadyAsync(Patience, CancellationToken.None));
    }

    [Fact]
    public async Task WaitReady_ChildClosesThePipeButRuns_IsEndOfFile()
    {
        var child = Start("exec 3>&-; exec sleep 30");

        Assert.Equal(new StartFailure(UpgradeFailureReason.Exited, "it closed its ready pipe without reporting ready"), await child.WaitReadyAsync(Patience, CancellationToken.None));
        Assert.Equal("killed by signal 15 after SIGTERM", await child.TerminateAsync(Patience));
    }

    [Fact]
    public async Task WaitReady_GarbageLine_IsQuotedInTheReason()
    {
        var child = Start("echo hello >&3; exec sleep 30");

        Assert.Equal(new StartFailure(UpgradeFailureReason.StartFailed, "the new generation sent 'hello' instead of 'ready'"), await child.WaitReadyAsync(Patience, CancellationToken.None));
        await child.TerminateAsync(Patience);
    }

    [Fact]
    public async Task WaitReady_FailedLine_IsTheReason()
    {
        var child = Start("echo 'failed warm-up failed: boom' >&3; exec sleep 30");

        Assert.Equal(new StartFailure(UpgradeFailureReason.StartFailed, "warm-up failed: boom"), await child.WaitReadyAsync(Patience, CancellationToken.None));
        await child.TerminateAsync(Patience);
    }

    [Fact]
    public async Task WaitReady_SilentChild_TimesOutNamingTheOption()
    {
        var child = Start("exec sleep 30");

        Assert.Equal(new StartFailure(UpgradeFailureReason.Timeout, "it did not report ready within 0.3 s (Handoff:UpgradeTimeout)"), await child.WaitReadyAsync(TimeSpan.FromMilliseconds(300), CancellationToken.None));
        await child.TerminateAsync(Patience);
    }

    [Fact]
    public async Task WaitReady_Cancelled_Throws()
    {
        var child = Start("exec sleep 30");
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => child.WaitReadyAsync(Patience, cancel.Token));
        await child.TerminateAsync(Patience);
    }

    [Fact]
    public async Task Terminate_ChildIgnoresSigterm_IsKilled()
    {
        var child = Start("trap '' TERM; echo ready >&3; while :; do sleep 1; done");
        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));

        Assert.Equal("killed by signal 9 after SIGKILL", await child.TerminateAsync(TimeSpan.FromMilliseconds(300)));
        Assert.Null(ProcessStateOf(child.Pid));
    }

    [Fact]
    public async Task Terminate_AfterATimeout_ThePipeIsStillOpenWhenSigtermArrives()
    {
        // A generation that reported ready just as the wait timed out would take an early close
        // of the pipe for the commit, and act as the main process until SIGTERM came. Its
        // trap writes to the pipe: SIGPIPE if the old generation had closed it already.
        string report = Path.Combine(_directory, "report");
        var child = Start($"trap 'echo stopping >&3; echo open > {report}; exit 0' TERM; while :; do sleep 0.05; done");
        Assert.Equal(UpgradeFailureReason.Timeout, (await child.WaitReadyAsync(TimeSpan.FromMilliseconds(300), CancellationToken.None))?.Reason);

        Assert.Equal("exit code 0 after SIGTERM", await child.TerminateAsync(Patience));
        Assert.Equal("open", File.ReadAllText(report).Trim());
    }

    [Fact]
    public async Task Start_ChildGetsExactlyItsDescriptorsTheHandoverAndBlockedUpgradeSignals()
    {
        string report = Path.Combine(_directory, "report");
        int stray = Interop.Libc.DuplicateCloseOnExec(0, 10);
        Interop.Libc.SetCloseOnExec(stray, false); // inherited without FD_CLOEXEC, as from a shell
        IStartedGeneration child;
        try
        {
            child = Start($"ls /proc/$$/fd > {report}.fds; grep SigBlk /proc/$$/status > {report}.mask; env > {report}.env; pwd > {report}.pwd; echo ready >&3", blocked: [Interop.Libc.SIGUSR2]);
        }
        finally
        {
            Interop.Libc.Close(stray);
        }

        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));

        // ls itself opens one more descriptor for the directory it lists.
        var fds = File.ReadAllLines(report + ".fds").Select(int.Parse).Where(fd => fd <= 3).ToList();
        Assert.Equal([0, 1, 2, 3], fds);
        Assert.DoesNotContain(File.ReadAllLines(report + ".fds"), line => line == stray.ToString(System.Globalization.CultureInfo.InvariantCulture));
        ulong mask = Convert.ToUInt64(File.ReadAllText(report + ".mask").Split(':')[1].Trim(), 16);
        ulong upgradeSignals = (1UL << (Interop.Libc.SIGHUP - 1)) | (1UL << (Interop.Libc.SIGUSR1 - 1)) | (1UL << (Interop.Libc.SIGUSR2 - 1));
        Assert.Equal(1UL << (Interop.Libc.SIGUSR2 - 1), mask & upgradeSignals); // bash itself blocks SIGCHLD
        string[] environment = File.ReadAllLines(report + ".env");
        Assert.Contains("DOTNET_STARTUP_HOOKS=Handoff", environment);
        Assert.Contains($"PWD={_directory}", environment);
        var handover = HandoverEnvironment.Parse(environment.Single(e => e.StartsWith("HANDOFF_HANDOVER=", StringComparison.Ordinal))["HANDOFF_HANDOVER=".Length..]);
        Assert.Equal(Environment.ProcessId, handover.ParentPid);
        Assert.Equal(5, handover.Generation);
        Assert.Equal(3, handover.ReadyFd);
        Assert.Equal(_directory, File.ReadAllText(report + ".pwd").Trim());
    }

    [Fact]
    public async Task Detached_ReportsItsPid_TerminatedThroughItsPidfd()
    {
        // Under systemd: started through setsid --fork; the new process says its pid first.
        string pidFile = Path.Combine(_directory, "pid");
        var child = Start($"echo $$ > {pidFile}; echo pid $$ >&3; echo ready >&3; exec sleep 30", detached: true);

        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(pid, child.Pid); // setsid's child, not setsid (its parent: see SystemdTests)
        Assert.Null(await child.WaitReadyAsync(Patience, CancellationToken.None));
        Assert.Equal($"{SpawnedProcess.ExitStatusUnknown} after SIGTERM", await child.TerminateAsync(TimeSpan.FromSeconds(5)).WaitAsync(Patience));
        Assert.True(ProcessTable.State(pid) is null or 'Z');
    }

    [Fact]
    public async Task Detached_NeverReportsItsPid_StartFailsInTime_AndTheSilentProcessIsKilled()
    {
        // A build that hangs before its startup hook runs: the old generation never learns its
        // pid from it, finds it by the ready pipe it holds, and kills it rather than leave it.
        string pidFile = Path.Combine(_directory, "pid");

        var e = Assert.Throws<TimeoutException>(() => Start($"echo $$ > {pidFile}; exec sleep 30", detached: true, timeout: TimeSpan.FromSeconds(1)));

        Assert.Contains("did not report its pid within 1 s", e.Message, StringComparison.Ordinal);
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        using var deadline = new CancellationTokenSource(Patience);
        while (ProcessTable.State(pid) is { } state && state != 'Z')
        {
            await Task.Delay(10, deadline.Token); // poll, bounded by Patience
        }
    }

    public void Dispose()
    {
        foreach (var child in _started)
        {
            child.TerminateAsync(TimeSpan.FromSeconds(5)).GetAwaiter().GetResult();
        }

        Directory.Delete(_directory, recursive: true);
    }

    // bash, not dash: dash clears the signal mask it inherits, which would hide the mask the
    // launcher set.
    private IStartedGeneration Start(string script, IReadOnlyList<int>? blocked = null, bool detached = false, TimeSpan? timeout = null)
    {
        var command = new StartCommand(["/bin/bash", "-c", script], _directory, [KeyValuePair.Create("PATH", "/usr/bin:/bin")]);

        // A notification socket is what makes the launcher start detached; nothing is sent to it.
        var launcher = new GenerationLauncher(detached ? new SystemdEnvironment(Path.Combine(_directory, "notify"), null, [], []) : null);
        var child = launcher.Start("/bin/bash", command, [], generation: 5, older: [], blocked ?? [], timeout ?? TimeSpan.FromSeconds(30), CancellationToken.None);
        _started.Add(child);
        return child;
    }

    private static char? ProcessStateOf(int pid) =>
        File.Exists($"/proc/{pid}/status") ? File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("State:", StringComparison.Ordinal))[6..].Trim()[0] : null;

    [Fact]
    public void IsUtilLinuxSetsid_BusyBoxLink_IsNot_ARealFileIs_MissingIsNot()
    {
        string directory = Directory.CreateTempSubdirectory("handoff-setsid-").FullName;
        try
        {
            string busybox = Path.Combine(directory, "busybox");
            File.WriteAllText(busybox, "");
            string applet = Path.Combine(directory, "setsid");
            File.CreateSymbolicLink(applet, busybox);
            string real = Path.Combine(directory, "setsid-util-linux");
            File.WriteAllText(real, "");

            Assert.False(GenerationLauncher.IsUtilLinuxSetsid(applet));
            Assert.True(GenerationLauncher.IsUtilLinuxSetsid(real));
            Assert.False(GenerationLauncher.IsUtilLinuxSetsid(Path.Combine(directory, "missing")));
            if (File.Exists("/usr/bin/setsid"))
            {
                Assert.True(GenerationLauncher.IsUtilLinuxSetsid("/usr/bin/setsid")); // Debian: util-linux
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
