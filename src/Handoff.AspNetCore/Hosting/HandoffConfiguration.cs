using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Handoff.AspNetCore;

/// <summary>
/// Binds the <c>Handoff</c> configuration section to <see cref="HandoffOptions"/> by hand,
/// so that a mistake is reported rather than guessed at: durations must say their unit
/// (<c>30s</c>, <c>500ms</c>, <c>2m</c>, <c>1h</c>) or be written as <c>00:00:30</c> (a bare
/// <c>30</c> is 30 days to TimeSpan's parser and is refused), and a key that is not an option
/// (a misspelling) is reported as a warning that names the option it is closest to.
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
        [nameof(HandoffOptions.ShutdownDelay)] = (o, v) => o.ShutdownDelay = v,
    };

    private static readonly Dictionary<string, Action<HandoffOptions, string>> Strings = new(StringComparer.OrdinalIgnoreCase)
    {
        [nameof(HandoffOptions.UpgradeSignals)] = (o, v) => o.UpgradeSignals = v,
        [nameof(HandoffOptions.PidFile)] = (o, v) => o.PidFile = v.Length == 0 ? null : v,
        [nameof(HandoffOptions.WorkingDirectory)] = (o, v) => o.WorkingDirectory = v.Length == 0 ? null : v,
        [nameof(HandoffOptions.ControlSocket)] = (o, v) => o.ControlSocket = v.Length == 0 ? null : v,
    };

    /// <summary>Applies the section to <paramref name="options"/>; returns the errors (each
    /// naming its key) and the warnings.</summary>
    public static (List<string> Errors, List<string> Warnings) Bind(IConfiguration section, HandoffOptions options)
    {
        var errors = new List<string>();
        var warnings = new List<string>();
        if ((section as IConfigurationSection)?.Value is { } single)
        {
            // {"Handoff": "30s"} or --Handoff=30s: the binder would ignore it without a word.
            errors.Add($"{HandoffOptions.SectionName} is '{single}', a single value: its options go under it, e.g. {HandoffOptions.SectionName}:{nameof(HandoffOptions.DrainTimeout)}=30s, or in JSON {{\"{HandoffOptions.SectionName}\": {{\"{nameof(HandoffOptions.DrainTimeout)}\": \"30s\"}}}}.");
        }

        foreach (var child in section.GetChildren())
        {
            string key = $"{HandoffOptions.SectionName}:{child.Key}";
            string? value = child.Value;
            bool known = Durations.ContainsKey(child.Key) || Strings.ContainsKey(child.Key) || string.Equals(child.Key, nameof(HandoffOptions.MaxDrainingGenerations), StringComparison.OrdinalIgnoreCase) ||
                string.Equals(child.Key, nameof(HandoffOptions.MoveConnections), StringComparison.OrdinalIgnoreCase);
            if (known && child.GetChildren().FirstOrDefault() is { } nested)
            {
                // {"DrainTimeout": {"x": 1}}: an object where a value belongs (perhaps beside
                // a value from another source, which would otherwise win without a word).
                errors.Add($"{key} is a section (it holds {key}:{nested.Key}), not a value: write it as one, e.g. {HandoffOptions.SectionName}:{nameof(HandoffOptions.DrainTimeout)}=30s.");
                continue;
            }

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
            else if (string.Equals(child.Key, nameof(HandoffOptions.MoveConnections), StringComparison.OrdinalIgnoreCase))
            {
                if (bool.TryParse(value, out bool move))
                {
                    options.MoveConnections = move;
                }
                else
                {
                    errors.Add($"{key} '{value}' must be true or false.");
                }
            }
            else
            {
                var names = Durations.Keys.Concat(Strings.Keys).Append(nameof(HandoffOptions.MaxDrainingGenerations)).Append(nameof(HandoffOptions.MoveConnections)).ToList();
                string guess = Spelling.Closest(child.Key, names) is { } option ? $"did you mean '{option}'?" : "misspelt?";
                warnings.Add($"{key} is not a Handoff option and is ignored ({guess}). The options are: {string.Join(", ", names)}. A warm-up is added in code: services.AddHandoffWarmUp(...).");
            }
        }

        return (errors, warnings);
    }

    /// <summary>Parses <c>30s</c>, <c>500ms</c>, <c>1.5m</c>, <c>1h</c> or <c>hh:mm:ss</c>
    /// (see <see cref="Duration.TryParse"/>).</summary>
    public static bool TryParseDuration(string? text, out TimeSpan value, out string? error) => Duration.TryParse(text, out value, out error);
}

/// <summary>Configuration warnings found while binding, logged once the host has a logger.</summary>
internal sealed class HandoffConfigurationWarnings(IReadOnlyList<string> messages)
{
    public IReadOnlyList<string> Messages { get; } = messages;
}
