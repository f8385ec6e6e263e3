namespace Handoff.Tests;

public sealed class UpgradeTimelineTests
{
    [Theory]
    [InlineData("timeline 10 20 30", true)]
    [InlineData("timeline 10 10 10", true)]
    [InlineData("timeline 20 10 30", false)] // not in order
    [InlineData("timeline 10 20", false)]
    [InlineData("timeline -1 20 30", false)]
    [InlineData("timeline 10 20 30 40", false)]
    [InlineData("timeline x y z", false)]
    [InlineData("released 1,2", false)]
    public void ChildMoments_Parse_TakesThreeOrderedMomentsOnly(string line, bool valid)
    {
        var moments = ChildMoments.Parse(line);
        Assert.Equal(valid, moments is not null);
        if (moments is { } m)
        {
            Assert.Equal(line, m.ToLine());
        }
    }

    [Fact]
    public unsafe void ReportReady_WithReleasedAndMoments_TheReaderTakesEachAndTheWatchSeesNeither()
    {
        var (read, write) = Interop.Libc.CreatePipe();
        var reader = new ReadyPipeReader(read);
        try
        {
            var pipe = new ReadyPipe(write);
            Assert.True(pipe.ReportReady([1], new ChildMoments(100, 150, 900)));

            Assert.Equal(ReadOutcome.Line, reader.ReadLine(1000, out string? line));
            Assert.Equal(ReadyPipe.ReadyLine, line);
            Assert.Equal(new ChildMoments(100, 150, 900), reader.TakeTimeline());
            Assert.Equal([1], reader.TakeReleased());
            Assert.Equal(ReadOutcome.Nothing, reader.ReadLine(0, out _));

            // A build that reports no moments: nothing, and the watch's line is left alone.
            pipe.ReportStopping();
            Assert.Null(reader.TakeTimeline());
            Assert.Equal(ReadOutcome.Line, reader.ReadLine(1000, out line));
            Assert.Equal(ReadyPipe.StoppingLine, line);
        }
        finally
        {
            reader.Close();
        }
    }

    [Fact]
    public async Task Wake_EndsAWaitForTheNextLineAtOnce_TheCommitDoesNotWaitForAPollsTimeout()
    {
        var (read, write) = Interop.Libc.CreatePipe();
        var reader = new ReadyPipeReader(read);
        try
        {
            reader.PrepareWake();
            var wait = Task.Run(() => reader.ReadLine(120_000, out _));
            reader.Wake(); // before or during the poll: either way it ends

            Assert.Equal(ReadOutcome.Nothing, await wait.WaitAsync(TimeSpan.FromSeconds(60))); // a TimeoutException: the wait went on after Wake

            // Woken once: the next wait waits again, and a line still arrives.
            Assert.Equal(ReadOutcome.Nothing, reader.ReadLine(0, out _));
            new ReadyPipe(write).ReportReady();
            Assert.Equal(ReadOutcome.Line, reader.ReadLine(30_000, out string? line));
            Assert.Equal(ReadyPipe.ReadyLine, line);
        }
        finally
        {
            reader.Close();
            Interop.Libc.Close(write);
        }
    }

    [Fact]
    public async Task UpgradeAsync_Succeeds_TheResultAndTheMetricHaveEachPhase_HandoffsOwnShareApart()
    {
        var clock = new TestClock();
        var launcher = new FakeLauncher();
        using var upgrader = TestUpgrader.Create(launcher, new HandoffOptions { RollbackWindow = TimeSpan.FromSeconds(30) }, clock: clock);
        using var recorder = new MetricsRecorder(upgrader.Metrics.Meter);
        await upgrader.ReadyAsync();

        // The new process's moments, on the same clock: the runtime takes 40 ms to run
        // Handoff's first code, the adoption 1 ms, the application 79 ms.
        long requested = clock.GetTimestamp();
        long ticksPerMicrosecond = clock.TimestampFrequency / 1_000_000;
        long At(int ms) => (requested / ticksPerMicrosecond) + (ms * 1000L);
        var child = new FakeGeneration(pid: 4321, readyResult: null, holdReady: true) { Moments = new ChildMoments(At(40), At(41), At(120)) };
        launcher.Next = child;

        var upgrade = upgrader.UpgradeAsync();
        await child.Waiting;
        clock.Advance(TimeSpan.FromMilliseconds(121)); // the report is read 1 ms after it was written
        child.Release();
        await clock.WaitForTimersAsync(1);
        clock.Advance(TimeSpan.FromSeconds(30));
        var result = await upgrade.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.True(result.Succeeded, result.Error);
        var t = result.Timeline!;
        Assert.Equal(0, t.Spawned, 3);
        Assert.Equal(40, t.RuntimeStarted!.Value, 3);
        Assert.Equal(41, t.Adopted!.Value, 3);
        Assert.Equal(120, t.Ready!.Value, 3);
        Assert.Equal(121, t.ReportRead, 3);
        Assert.Equal(30_121, t.Committed, 3);
        Assert.Equal(2, t.Own, 3); // the adoption and the report's read; the fake spawn and commit take no time
        Assert.Equal(40, t.Runtime!.Value, 3);
        Assert.Equal(79, t.Application!.Value, 3);
        Assert.Equal(30_000, t.RollbackWindow, 3);
        Assert.Contains("Handoff's own share 2.0 ms (runtime 40.0 ms, application 79.0 ms, rollback window 30000 ms)", t.ToString(), StringComparison.Ordinal);

        Assert.Equal(0.002, recorder.Recorded.Single(r => r.Series == "handoff.upgrade.phase.duration{handoff.upgrade.phase=handoff}").Value, 6);
        Assert.Equal(0.040, recorder.Recorded.Single(r => r.Series == "handoff.upgrade.phase.duration{handoff.upgrade.phase=runtime}").Value, 6);
        Assert.Equal(0.079, recorder.Recorded.Single(r => r.Series == "handoff.upgrade.phase.duration{handoff.upgrade.phase=application}").Value, 6);
        Assert.Equal(30, recorder.Recorded.Single(r => r.Series == "handoff.upgrade.phase.duration{handoff.upgrade.phase=rollback_window}").Value, 6);
    }

    [Fact]
    public async Task UpgradeAsync_NewBuildReportsNoMoments_HandoffsShareIsWhatThisGenerationSaw()
    {
        var clock = new TestClock();
        var launcher = new FakeLauncher();
        using var upgrader = TestUpgrader.Create(launcher, new HandoffOptions { RollbackWindow = TimeSpan.Zero }, clock: clock);
        using var recorder = new MetricsRecorder(upgrader.Metrics.Meter);
        await upgrader.ReadyAsync();
        launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);

        var result = await upgrader.UpgradeAsync().WaitAsync(TimeSpan.FromSeconds(30));

        var t = result.Timeline!;
        Assert.Null(t.RuntimeStarted);
        Assert.Null(t.Runtime);
        Assert.Contains("the new build reported no moments", t.ToString(), StringComparison.Ordinal);
        Assert.Single(recorder.Recorded, r => r.Series == "handoff.upgrade.phase.duration{handoff.upgrade.phase=handoff}");
        Assert.DoesNotContain(recorder.Recorded, r => r.Series == "handoff.upgrade.phase.duration{handoff.upgrade.phase=runtime}");
    }
}
