using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Handoff.AspNetCore;

/// <summary>
/// Binds the <c>Handoff</c> configuration section to <see cref="HandoffOptions"/> by hand,
/// so that a mistake is reported rather than guessed at: durations must say their unit
/// (<c>30s</c>, <c>500ms</c>, <c>2m</c>, <c>1h</c>) or be written as <c>00:00:30</c> (a bare
/// <c>30</c> is 30 days to TimeSpan's parser and is refused), and a key that is not an option
/// (a misspelling) is reported as a warning.
/// </summary>
internal static class HandoffConfiguration
{
    private static readonly Dictionary<string, Action<HandoffOptions, TimeSpan>> Durations = new(StringComparer.OrdinalIgnoreCase)
    {
        [nameof(HandoffOptions.UpgradeTimeout)] = (o, v) => o.UpgradeTimeout = v,
        [nameof(HandoffOptions.DrainTimeout)] = (o, v) => o.DrainTimeout = v,
        [nameof(HandoffOptions.DrainIdleTimeout)] = (o, v) => o.DrainIdleTimeout = v,
        [nameof(HandoffOptions.TerminateTimeout)] = (o, v) => o.TerminateTimeout = v,
        [nameof(HandoffOptions.RollbackWindow)] = (o, v) => o.RollbackWindow = v,
    };

    private static readonly Dictionary<string, Action<HandoffOptions, string>> Strings = new(StringComparer.OrdinalIgnoreCase)
    {
        [nameof(HandoffOptions.UpgradeSignals)] = (o, v) => o.UpgradeSignals = v,
        [nameof(HandoffOptions.PidFile)] = (o, v) => o.PidFile = v.Length == 0 ? null : v,
        [nameof(HandoffOptions.WorkingDirectory)] = (o, v) => o.WorkingDirectory = v.Length == 0 ? null : v,
    };

    /// <summary>Applies the section to <paramref name="options"/>; returns the errors (each
    /// naming its key) and the warnings.</summary>
    public static (List<string> Errors, List<string> Warnings) Bind(IConfiguration section, HandoffOptions options)
    {
        var errors = new List<string>();
        var warnings = new List<string>();
        foreach (var child in section.GetChildren())
        {
            string key = $"{HandoffOptions.SectionName}:{child.Key}";
            string? value = child.Value;
            if (Durations.TryGetValue(child.Key, out var setDuration))
            {
                if (TryParseDuration(value, out var duration, out string? error))
                {
                    setDuration(options, duration);
                }
                else
                {
                    errors.Add($"{key} '{value}': {error}");
                }
            }
            else if (Strings.TryGetValue(child.Key, out var setString))
            {
                setString(options, value ?? "");
            }
            else if (string.Equals(child.Key, nameof(HandoffOptions.MaxDrainingGenerations), StringComparison.OrdinalIgnoreCase))
            {
                if (int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int count))
                {
                    options.MaxDrainingGenerations = count;
                }
                else
                {
                    errors.Add($"{key} '{value}' must be a whole number, 0 or more.");
                }
            }
            else
            {
                string known = string.Join(", ", Durations.Keys.Concat(Strings.Keys).Append(nameof(HandoffOptions.MaxDrainingGenerations)));
                warnings.Add($"{key} is not a Handoff option and is ignored (misspelt?). The options are: {known}. WarmUp can be set in code only.");
            }
        }

        return (errors, warnings);
    }

    /// <summary>Parses <c>30s</c>, <c>500ms</c>, <c>1.5m</c>, <c>1h</c> or <c>hh:mm:ss</c>.</summary>
    public static bool TryParseDuration(string? text, out TimeSpan value, out string? error)
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

/// <summary>Configuration warnings found while binding, logged once the host has a logger.</summary>
internal sealed class HandoffConfigurationWarnings(IReadOnlyList<string> messages)
{
    public IReadOnlyList<string> Messages { get; } = messages;
}
