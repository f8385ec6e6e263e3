using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Handoff;

/// <summary>
/// Handoff's instruments, on the meter <c>Handoff</c> (see docs/metrics.md for what each
/// answers). Names and units follow OpenTelemetry's conventions, as Kestrel's <c>kestrel.*</c>
/// do; the meter comes from the host's <see cref="IMeterFactory"/> when there is one.
/// </summary>
/// <remarks>
/// Nothing here runs per request: the counts that change often (connections) are observed when
/// a collector asks, and the rest is recorded once per upgrade or drain.
/// </remarks>
internal sealed class HandoffMetrics : IDisposable
{
    /// <summary>The name of the meter.</summary>
    public const string MeterName = "Handoff";

    public const string ResultTag = "handoff.upgrade.result";
    public const string ErrorTypeTag = "error.type";
    public const string DrainResultTag = "handoff.drain.result";
    public const string DrainReasonTag = "handoff.drain.reason";
    public const string PhaseTag = "handoff.upgrade.phase";
    public const string ConnectionOutcomeTag = "handoff.connection.outcome";
    public const string ConnectionKindTag = "handoff.connection.kind";
    public const string ConnectionReasonTag = "handoff.connection.reason";

    public const string Succeeded = "succeeded";
    public const string Failed = "failed";
    public const string Refused = "refused";

    // Upgrades take from under a second to UpgradeTimeout (30 s by default); drains up to
    // DrainTimeout. OpenTelemetry's default buckets (0 to 10,000) suit milliseconds, not these.
    private static readonly double[] SecondsBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

    // Handoff's own share is milliseconds; a NativeAOT start tens of them; a JIT start hundreds.
    private static readonly double[] PhaseBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly Histogram<double> _upgradeDuration;
    private readonly Histogram<double> _drainDuration;
    private readonly Histogram<double> _upgradePhase;
    private readonly Counter<long> _abortedConnections;
    private readonly Counter<long> _handedOver;
    private readonly Counter<long> _received;
    private readonly Lock _lock = new();
    private readonly Dictionary<(string Result, string? ErrorType), long> _outcomes = [];
    private Func<int>? _generation;
    private Func<bool>? _tookOver;
    private Func<int>? _drainingGenerations;
    private Func<long>? _drainingConnections;

    public HandoffMetrics(IMeterFactory? meterFactory)
    {
        var options = new MeterOptions(MeterName);
        _ownsMeter = meterFactory is null;
        _meter = meterFactory?.Create(options) ?? new Meter(options);

        _meter.CreateObservableCounter(
            "handoff.upgrades",
            ObserveUpgrades,
            unit: "{upgrade}",
            description: "Upgrades by result, each counted once, by the generation that serves after it: a success by the new generation once the old one can no longer roll back, a failure or refusal by the generation that tried.");
        _upgradeDuration = _meter.CreateHistogram(
            "handoff.upgrade.duration",
            unit: "s",
            description: "From the upgrade's trigger (signal, control socket or UpgradeAsync) to the new generation's report of ready, or to the failure; recorded by the generation that started it.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _meter.CreateObservableGauge(
            "handoff.generation",
            () => Observe(_generation),
            unit: "{generation}",
            description: "This process's generation number: 1 for the first start, one more for each upgrade since.");
        _meter.CreateObservableUpDownCounter(
            "handoff.draining_generations",
            () => Observe(_drainingGenerations),
            unit: "{generation}",
            description: "Older generations of this server that still run, draining their connections, as this process sees them.");
        _meter.CreateObservableUpDownCounter(
            "handoff.draining_connections",
            () => Observe(_drainingConnections),
            unit: "{connection}",
            description: "Connections this process is draining: open after it stopped accepting, and not yet finished.");
        _drainDuration = _meter.CreateHistogram(
            "handoff.drain.duration",
            unit: "s",
            description: "From the start of this process's drain to its last connection's end, or to the abort of what was left at Handoff:DrainTimeout.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _upgradePhase = _meter.CreateHistogram(
            "handoff.upgrade.phase.duration",
            unit: "s",
            description: "One phase of a successful upgrade, timed by the generation that started it: handoff (Handoff's own share: until the spawn, the adoption of the listeners in the new process, the reading of its report, the commit), runtime (from the spawn to Handoff's first code in the new process), application (from the adoption to the report of ready), rollback_window.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = PhaseBuckets });
        _abortedConnections = _meter.CreateCounter<long>(
            "handoff.drain.aborted_connections",
            unit: "{connection}",
            description: "Connections still open at Handoff:DrainTimeout, which the drain aborted.");
        _handedOver = _meter.CreateCounter<long>(
            "handoff.drain.connections",
            unit: "{connection}",
            description: "What became of the connections of a generation that moved its connections (Handoff:MoveConnections), recorded by it when its drain ended, by kind (http1, websocket, tcp) and outcome: moved (sent to the new generation), closed (were to move, closed instead), drained (could not move: TLS, HTTP/2, none served yet; a WebSocket closed with 1012); with a reason for those that did not move, where known.");
        _received = _meter.CreateCounter<long>(
            "handoff.moved_connections",
            unit: "{connection}",
            description: "Connections the previous generation moved to this one, by kind (http1, websocket, tcp) and outcome: adopted (served here), passed_on (sent on to a newer generation), closed (no listener, endpoint or descriptor left here).");
    }

    /// <summary>The meter (for tests, which listen to this instance only).</summary>
    internal Meter Meter => _meter;

    /// <summary>Where the observed values come from; set once by their owners.</summary>
    public void ObserveGeneration(Func<int> generation, Func<bool> tookOver, Func<int> drainingGenerations)
    {
        _generation = generation;
        _tookOver = tookOver;
        _drainingGenerations = drainingGenerations;
    }

    /// <summary>The count of connections a drain has left (zero when not draining).</summary>
    public void ObserveDrainingConnections(Func<long> count) => _drainingConnections = count;

    /// <summary>An upgrade this generation started ended: a success (the new generation counts
    /// it), a failure or a refusal (counted here).</summary>
    public void UpgradeEnded(string result, string? errorType, TimeSpan? duration)
    {
        if (result != Succeeded)
        {
            lock (_lock)
            {
                var key = (result, errorType);
                _outcomes[key] = _outcomes.GetValueOrDefault(key) + 1;
            }
        }

        if (duration is { } elapsed && _upgradeDuration.Enabled)
        {
            var tags = new TagList { { ResultTag, result } };
            if (errorType is not null)
            {
                tags.Add(ErrorTypeTag, errorType);
            }

            _upgradeDuration.Record(elapsed.TotalSeconds, tags);
        }
    }

    /// <summary>A successful upgrade's phases (those the new build reported, if any).</summary>
    public void UpgradeTimed(UpgradeTimeline timeline)
    {
        if (!_upgradePhase.Enabled)
        {
            return;
        }

        _upgradePhase.Record(timeline.Own / 1000, new TagList { { PhaseTag, "handoff" } });
        if (timeline.Runtime is { } runtime && timeline.Application is { } application)
        {
            _upgradePhase.Record(runtime / 1000, new TagList { { PhaseTag, "runtime" } });
            _upgradePhase.Record(application / 1000, new TagList { { PhaseTag, "application" } });
        }

        _upgradePhase.Record(timeline.RollbackWindow / 1000, new TagList { { PhaseTag, "rollback_window" } });
    }

    /// <summary>A generation that moved its connections finished its drain.</summary>
    public void ConnectionsHandedOver(ConnectionTally tally) => Add(_handedOver, tally);

    /// <summary>The previous generation has moved all it will to this one.</summary>
    public void ConnectionsReceived(ConnectionTally tally) => Add(_received, tally);

    private static void Add(Counter<long> counter, ConnectionTally tally)
    {
        if (!counter.Enabled)
        {
            return;
        }

        foreach (var (kind, outcome, reason, count) in tally.Entries)
        {
            var tags = new TagList { { ConnectionKindTag, ConnectionTally.Name(kind) }, { ConnectionOutcomeTag, outcome } };
            if (reason is not null)
            {
                tags.Add(ConnectionReasonTag, reason);
            }

            counter.Add(count, tags);
        }
    }

    /// <summary>A drain ended.</summary>
    /// <param name="duration">How long it ran.</param>
    /// <param name="result"><c>completed</c>, <c>timed_out</c> or <c>resumed</c> (the new
    /// generation died and this one accepts again).</param>
    /// <param name="reason"><c>upgrade</c> or <c>shutdown</c>.</param>
    /// <param name="aborted">Connections aborted at the timeout.</param>
    public void DrainEnded(TimeSpan duration, string result, string reason, int aborted)
    {
        if (_drainDuration.Enabled)
        {
            _drainDuration.Record(duration.TotalSeconds, new TagList { { DrainResultTag, result }, { DrainReasonTag, reason } });
        }

        if (aborted > 0 && _abortedConnections.Enabled)
        {
            _abortedConnections.Add(aborted, new TagList { { DrainReasonTag, reason } });
        }
    }

    public void Dispose()
    {
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }

    private static Measurement<T>[] Observe<T>(Func<T>? source)
        where T : struct => source is null ? [] : [new Measurement<T>(source())];

    private List<Measurement<long>> ObserveUpgrades()
    {
        var measurements = new List<Measurement<long>>();
        if (_tookOver?.Invoke() == true)
        {
            measurements.Add(new Measurement<long>(1, new KeyValuePair<string, object?>(ResultTag, Succeeded)));
        }

        lock (_lock)
        {
            foreach (var ((result, errorType), count) in _outcomes)
            {
                measurements.Add(errorType is null
                    ? new Measurement<long>(count, new KeyValuePair<string, object?>(ResultTag, result))
                    : new Measurement<long>(count, new KeyValuePair<string, object?>(ResultTag, result), new KeyValuePair<string, object?>(ErrorTypeTag, errorType)));
            }
        }

        return measurements;
    }
}
