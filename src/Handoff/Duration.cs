using System.Globalization;

namespace Handoff;

/// <summary>Durations as Handoff's options and the <c>handoff</c> tool accept them: with a unit,
/// or as a clock; never a bare number, which TimeSpan would read as days.</summary>
internal static class Duration
{
    /// <summary>Parses <c>30s</c>, <c>500ms</c>, <c>1.5m</c>, <c>1h</c> or <c>hh:mm:ss</c>.</summary>
    public static bool TryParse(string? text, out TimeSpan value, out string? error)
    {
        value = default;
        error = null;
        text = text?.Trim() ?? "";
        if (text.Contains(':', StringComparison.Ordinal))
        {
            if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out value))
            {
                return true;
            }

            error = "is not a duration; write it as hh:mm:ss (00:00:30) or with a unit (30s, 500ms, 2m).";
            return false;
        }

        (string Suffix, double Milliseconds)[] units = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];
        foreach (var (suffix, milliseconds) in units)
        {
            if (text.EndsWith(suffix, StringComparison.OrdinalIgnoreCase) &&
                double.TryParse(text[..^suffix.Length], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double number) &&
                !(suffix == "s" && text.EndsWith("ms", StringComparison.OrdinalIgnoreCase)))
            {
                // NaN and infinities parse whatever the styles; TimeSpan throws on them and on
                // values beyond its range. Anything over the limit is refused by the options.
                double total = number * milliseconds;
                if (!double.IsFinite(total) || total > HandoffOptions.MaxDuration.TotalMilliseconds * 2)
                {
                    error = $"is not a duration Handoff accepts; the longest is {HandoffOptions.MaxDuration.TotalHours:0}h.";
                    return false;
                }

                value = TimeSpan.FromMilliseconds(total);
                return true;
            }
        }

        error = double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out _)
            ? $"has no unit. Write {text}s for seconds (or 00:00:{text.PadLeft(2, '0')}); TimeSpan would read a bare number as days."
            : "is not a duration; write it with a unit (30s, 500ms, 2m, 1h) or as hh:mm:ss.";
        return false;
    }
}
