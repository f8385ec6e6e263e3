using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.AspNetCore;

/// <summary>What the connection drainer reports to the meter <c>Handoff</c>.</summary>
public sealed class DrainMetricsTests
{
    [Fact]
    public async Task DrainAsync_CompletedAndTimedOut_RecordsDurationResultAndAbortedConnections()
    {
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        using var metrics = new HandoffMetrics(null);
        drainer.Metrics = metrics;
        metrics.ObserveDrainingConnections(() => drainer.IsDraining ? drainer.Count : 0);
        using var recorder = new MetricsRecorder(metrics.Meter);
        var connection = new DefaultConnectionContext("busy") { ConnectionClosed = CancellationToken.None };
        drainer.Track(connection).RequestStarted(Environment.TickCount64);

        Assert.Equal(0, recorder.Observe()["handoff.draining_connections"]);
        var drain = drainer.DrainAsync(TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(100), CancellationToken.None, restart: false);
        Assert.Equal(1, recorder.Observe()["handoff.draining_connections"]);
        Assert.False(await drain.WaitAsync(TimeSpan.FromSeconds(30)));

        Assert.Single(recorder.Recorded, r => r.Series == "handoff.drain.duration{handoff.drain.reason=shutdown,handoff.drain.result=timed_out}" && r.Value >= 0.3);
        Assert.Single(recorder.Recorded, r => r.Series == "handoff.drain.aborted_connections{handoff.drain.reason=shutdown}" && r.Value == 1);
    }
}
