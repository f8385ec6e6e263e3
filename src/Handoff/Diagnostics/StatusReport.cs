using System.Globalization;
using System.Text;

namespace Handoff;

/// <summary>
/// What a generation says about itself: the line <c>systemctl status</c> shows (<c>STATUS=</c>)
/// and the object <c>handoff status</c> shows. It keeps the last upgrade's outcome; the rest it
/// is given, as <see cref="Upgrader"/> knows it at that moment.
/// </summary>
internal sealed class StatusReport(int generation, int parentPid, DateTimeOffset startedAt, TimeProvider time)
{
    private readonly Lock _lock = new();
    private LastUpgrade? _last;

    /// <summary>The last upgrade as this generation saw it; a new generation that has not
    /// upgraded itself reports that it took over.</summary>
    public LastUpgrade? Last
    {
        get
        {
            lock (_lock)
            {
                return _last ?? (parentPid != 0 ? new LastUpgrade(LastUpgrade.Succeeded, startedAt, $"generation {generation} (pid {Environment.ProcessId}) took over from pid {parentPid}") : null);
            }
        }
    }

    public void Refused(string detail) => Set(new LastUpgrade("refused", time.GetUtcNow(), detail));

    public void Failed(string detail) => Set(new LastUpgrade("failed", time.GetUtcNow(), detail));

    /// <summary>Records a success, unless the handover already did (at the main-pid handover,
    /// whose status line named the time).</summary>
    public void TookOver(int newGeneration, int newPid)
    {
        lock (_lock)
        {
            if (_last?.Outcome != LastUpgrade.Succeeded)
            {
                _last = LastUpgrade.TookOver(newGeneration, newPid, time.GetUtcNow());
            }
        }
    }

    public void Set(LastUpgrade last)
    {
        lock (_lock)
        {
            _last = last;
        }
    }

    /// <summary>What <c>systemctl status</c> shows on its Status: line.</summary>
    public string Text(GenerationState state, int? supersededBy, int? openConnections, IReadOnlyList<int> draining)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"Generation {generation} (pid {Environment.ProcessId}) ");
        text.Append(state switch
        {
            GenerationState.Starting => "starting",
            GenerationState.Upgrading => $"serving; upgrading to generation {generation + 1}",
            GenerationState.HandingOver => $"handing over to generation {generation + 1}",
            GenerationState.Superseded => $"superseded by pid {supersededBy}; draining",
            GenerationState.Stopping or GenerationState.Stopped => "stopping; draining",
            _ => "serving",
        });
        if (openConnections is { } count)
        {
            text.Append(CultureInfo.InvariantCulture, $"; {count} open connections");
        }

        if (draining.Count > 0 && state is not (GenerationState.Superseded or GenerationState.Stopping or GenerationState.Stopped))
        {
            text.Append(CultureInfo.InvariantCulture, $"; older generations draining: pid {string.Join(", ", draining)}");
        }

        string? last;
        lock (_lock)
        {
            last = _last?.ToString() ?? (parentPid != 0 ? $"took over from pid {parentPid}" : null);
        }

        if (last is not null)
        {
            text.Append("; last upgrade: ").Append(last);
        }

        return text.ToString();
    }

    /// <summary>The status line the old generation sends with the new main pid: the new one
    /// serves from this datagram on.</summary>
    public string HandedOver(int newGeneration, int newPid, LastUpgrade last) =>
        $"Generation {newGeneration} (pid {newPid}) serving; generation {generation} (pid {Environment.ProcessId}) draining; last upgrade: {last}";
}

/// <summary>The last upgrade's outcome as status reports show it.</summary>
internal sealed record LastUpgrade(string Outcome, DateTimeOffset At, string Detail)
{
    public const string Succeeded = "succeeded";

    public static LastUpgrade TookOver(int generation, int pid, DateTimeOffset at) => new(Succeeded, at, $"generation {generation} (pid {pid}) took over");

    public override string ToString() => Outcome == Succeeded ? $"{Detail} at {Clock(At)}" : $"{Outcome} at {Clock(At)}: {Detail}";

    private static string Clock(DateTimeOffset at) => at.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
}
