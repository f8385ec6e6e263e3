using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Handoff.Tests.Diagnostics;

public sealed class HandoffMetricsTests
{
    private readonly FakeLauncher _launcher = new();

    [Fact]
    public async Task UpgradeAsync_RefusedFailedAndSucceeded_TheTriggeringGenerationCountsWhatItSurvives()
    {
        using var upgrader = CreateUpgrader();
        using var recorder = new MetricsRecorder(upgrader.Metrics.Meter);

        await upgrader.UpgradeAsync(); // refused: not ready yet
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 1111, readyResult: new(UpgradeFailureReason.Exited, "it exited (exit code 3) before reporting ready"));
        await upgrader.UpgradeAsync();
        _launcher.Next = new FakeGeneration(pid: 2222, readyResult: new(UpgradeFailureReason.StartFailed, "warm-up threw"));
        await upgrader.UpgradeAsync();
        _launcher.Next = new FakeGeneration(pid: 3333, readyResult: null);
        Assert.True((await upgrader.UpgradeAsync()).Succeeded);
        var observed = recorder.Observe();

        Assert.Equal(1, observed["handoff.upgrades{error.type=not_ready,handoff.upgrade.result=refused}"]);
        Assert.Equal(1, observed["handoff.upgrades{error.type=exited,handoff.upgrade.result=failed}"]);
        Assert.Equal(1, observed["handoff.upgrades{error.type=start_failed,handoff.upgrade.result=failed}"]);

        // The success is the new generation's to count (it serves after it); this one only
        // measured how long it took.
        Assert.DoesNotContain(observed.Keys, k => k.StartsWith("handoff.upgrades{handoff.upgrade.result=succeeded", StringComparison.Ordinal));
        Assert.Single(recorder.Recorded, r => r.Series == "handoff.upgrade.duration{handoff.upgrade.result=succeeded}" && r.Value >= 0);
        Assert.Equal(2, recorder.Recorded.Count(r => r.Series.StartsWith("handoff.upgrade.duration{error.type=", StringComparison.Ordinal) && r.Series.EndsWith("handoff.upgrade.result=failed}", StringComparison.Ordinal)));
        Assert.Equal(1, observed["handoff.generation"]);
        Assert.Equal(0, observed["handoff.draining_generations"]);
    }

    [Fact]
    public async Task UpgradeAsync_NewGenerationDiesInTheRollbackWindow_CountedAsRolledBack()
    {
        using var upgrader = CreateUpgrader(rollbackWindow: TimeSpan.FromMinutes(5));
        using var recorder = new MetricsRecorder(upgrader.Metrics.Meter);
        await upgrader.ReadyAsync();
        var child = new FakeGeneration(pid: 88, readyResult: null);
        _launcher.Next = child;

        var upgrade = upgrader.UpgradeAsync();
        await upgrader.WaitForStateAsync(GenerationState.HandingOver);
        child.Exit("killed by signal 9");
        await upgrade.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(1, recorder.Observe()["handoff.upgrades{error.type=rolled_back,handoff.upgrade.result=failed}"]);
    }

    [Fact]
    public void UpgradeFailureReason_EveryValue_HasItsOwnTagThatParsesBack()
    {
        var reasons = Enum.GetValues<UpgradeFailureReason>().Where(r => r != UpgradeFailureReason.None).ToList();
        var tags = reasons.Select(r => r.Tag()).ToList();

        Assert.Equal(tags.Count, tags.Distinct().Count());
        Assert.All(reasons, r => Assert.Equal(r, UpgradeFailureReasons.Parse(r.Tag())));
        Assert.Equal("_OTHER", UpgradeFailureReason.Unexpected.Tag());
        Assert.Equal("start_failed", UpgradeFailureReason.StartFailed.Tag());
        Assert.Equal(UpgradeFailureReason.Unexpected, UpgradeFailureReasons.Parse("a_newer_reason"));
        Assert.Equal(UpgradeFailureReason.Unexpected, UpgradeFailureReasons.Parse(null));
    }

    [Fact]
    public void Meter_FromTheHostsFactory_IsTheOneTheInstrumentsUse()
    {
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var factory = services.GetRequiredService<IMeterFactory>();
        using var metrics = new HandoffMetrics(factory);
        using var recorder = new MetricsRecorder(metrics.Meter);

        metrics.UpgradeEnded(HandoffMetrics.Failed, "timeout", TimeSpan.FromSeconds(30));

        Assert.Equal("Handoff", metrics.Meter.Name);
        Assert.Same(factory.Create(new MeterOptions("Handoff")), metrics.Meter); // the factory's own, disposed with it
        Assert.Single(recorder.Recorded, r => r.Series == "handoff.upgrade.duration{error.type=timeout,handoff.upgrade.result=failed}" && r.Value == 30);
    }

    [Fact]
    public void MovedConnections_CountedByOutcome_OnBothSidesOfTheMove()
    {
        using var metrics = new HandoffMetrics(null);
        using var recorder = new MetricsRecorder(metrics.Meter);

        var handedOver = new ConnectionTally();
        handedOver.Add(MoveKind.Http1, "moved", count: 56);
        handedOver.Add(MoveKind.WebSocket, "moved", count: 4);
        handedOver.Add(MoveKind.Http1, "closed", "no_boundary", 2);
        handedOver.Add(MoveKind.WebSocket, "closed", "save_state_failed");
        handedOver.Add(MoveKind.WebSocket, "drained", "compression");
        handedOver.Add(MoveKind.Http1, "drained");
        handedOver.Add(MoveKind.Http1, "moved", count: 4);
        var received = new ConnectionTally();
        received.Add(MoveKind.Http1, "adopted", count: 55);
        received.Add(MoveKind.Http1, "passed_on", count: 4);
        received.Add(MoveKind.WebSocket, "closed");
        metrics.ConnectionsHandedOver(handedOver);
        metrics.ConnectionsReceived(received);

        // Each (kind, outcome, reason) once, summed; a reason only where one was given.
        Assert.Equal(
            [
                ("handoff.drain.connections{handoff.connection.kind=http1,handoff.connection.outcome=closed,handoff.connection.reason=no_boundary}", 2),
                ("handoff.drain.connections{handoff.connection.kind=http1,handoff.connection.outcome=drained}", 1),
                ("handoff.drain.connections{handoff.connection.kind=http1,handoff.connection.outcome=moved}", 60),
                ("handoff.drain.connections{handoff.connection.kind=websocket,handoff.connection.outcome=closed,handoff.connection.reason=save_state_failed}", 1),
                ("handoff.drain.connections{handoff.connection.kind=websocket,handoff.connection.outcome=drained,handoff.connection.reason=compression}", 1),
                ("handoff.drain.connections{handoff.connection.kind=websocket,handoff.connection.outcome=moved}", 4),
                ("handoff.moved_connections{handoff.connection.kind=http1,handoff.connection.outcome=adopted}", 55),
                ("handoff.moved_connections{handoff.connection.kind=http1,handoff.connection.outcome=passed_on}", 4),
                ("handoff.moved_connections{handoff.connection.kind=websocket,handoff.connection.outcome=closed}", 1),
            ],
            recorder.Recorded);
    }

    private Upgrader CreateUpgrader(TimeSpan? rollbackWindow = null) =>
        TestUpgrader.Create(_launcher, new HandoffOptions { RollbackWindow = rollbackWindow ?? TimeSpan.Zero });
}
