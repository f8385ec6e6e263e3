using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

/// <summary>
/// What the meter <c>Handoff</c> measured in this process, as text: GET /metrics shows it
/// (counters summed, gauges last, histograms as count and sum), and with TESTSERVER_METRICS_LOG
/// set every recorded measurement is also appended to that file as it happens, so the records of
/// a generation that exited can still be read. A MeterListener, as an OpenTelemetry exporter
/// would use, not a part of Handoff.
/// </summary>
internal sealed class HandoffMetricsText : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, double> _values = new(StringComparer.Ordinal);
    private readonly string? _log = Environment.GetEnvironmentVariable("TESTSERVER_METRICS_LOG");
    private readonly Lock _logLock = new();

    public HandoffMetricsText()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "Handoff")
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => Record(instrument, value, tags));
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Record(instrument, value, tags));
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Record(instrument, value, tags));
        _listener.Start();
    }

    public string Render()
    {
        _listener.RecordObservableInstruments();
        var text = new StringBuilder();
        foreach (var (series, value) in _values.OrderBy(v => v.Key, StringComparer.Ordinal))
        {
            text.Append(CultureInfo.InvariantCulture, $"{series} {value}\n");
        }

        return text.ToString();
    }

    public void Dispose() => _listener.Dispose();

    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var names = new List<string>();
        foreach (var tag in tags)
        {
            names.Add($"{tag.Key}=\"{tag.Value}\"");
        }

        names.Sort(StringComparer.Ordinal);
        string series = instrument.Name + (names.Count == 0 ? "" : "{" + string.Join(",", names) + "}");
        switch (instrument)
        {
            case Histogram<double>:
                _values.AddOrUpdate(series + " count", 1, (_, c) => c + 1);
                _values.AddOrUpdate(series + " sum", value, (_, s) => s + value);
                break;
            case Counter<long>:
                _values.AddOrUpdate(series, value, (_, s) => s + value);
                break;
            default:
                // Observable instruments report their current (or cumulative) value.
                _values[series] = value;
                return;
        }

        if (_log is not null)
        {
            lock (_logLock)
            {
                Append(_log, string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId} {series} {value}\n"));
            }
        }
    }

    // Both generations append to the same file, often at the same moment (the old one when its
    // drain ends, the new one when the moves end); a CI run once missed lines written then. An
    // exclusive open (.NET takes an flock for FileShare.None on Unix) makes the processes take
    // turns, a few milliseconds at most.
    private static void Append(string path, string line)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                using var file = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.None);
                file.Write(Encoding.UTF8.GetBytes(line));
                return;
            }
            catch (IOException) when (attempt < 2000)
            {
                Thread.Sleep(1);
            }
        }
    }
}
