using System.Diagnostics.Metrics;

namespace Handoff.Tests;

/// <summary>Listens to one meter instance (tests in parallel create others of the same name).</summary>
internal sealed class MetricsRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Dictionary<string, double> _observed = [];
    private bool _observing;

    public MetricsRecorder(Meter meter)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter == meter)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<int>((i, v, t, _) => Add(i, v, t));
        _listener.SetMeasurementEventCallback<long>((i, v, t, _) => Add(i, v, t));
        _listener.SetMeasurementEventCallback<double>((i, v, t, _) => Add(i, v, t));
        _listener.Start();
    }

    public List<(string Series, double Value)> Recorded { get; } = [];

    public Dictionary<string, double> Observe()
    {
        lock (_observed)
        {
            _observed.Clear();
            _observing = true;
            _listener.RecordObservableInstruments();
            _observing = false;
            return new Dictionary<string, double>(_observed);
        }
    }

    public void Dispose() => _listener.Dispose();

    private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var names = new List<string>();
        foreach (var tag in tags)
        {
            names.Add($"{tag.Key}={tag.Value}");
        }

        names.Sort(StringComparer.Ordinal);
        string series = instrument.Name + (names.Count == 0 ? "" : "{" + string.Join(",", names) + "}");
        if (_observing && instrument.IsObservable)
        {
            _observed[series] = value;
            return;
        }

        lock (Recorded)
        {
            Recorded.Add((series, value));
        }
    }
}
