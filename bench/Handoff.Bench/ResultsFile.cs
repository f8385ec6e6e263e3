using System.Text.Json.Serialization;

namespace Handoff.Bench;

/// <summary>What bench/results/&lt;date&gt;.json holds.</summary>
internal sealed record ResultsFile(
    [property: JsonPropertyName("command")] string Command,
    [property: JsonPropertyName("machine")] string Machine,
    [property: JsonPropertyName("duration_seconds")] double DurationSeconds,
    [property: JsonPropertyName("repeats")] int Repeats,
    [property: JsonPropertyName("runs")] List<RunResult> Runs)
{
    /// <summary>Indented; a timeline slice without requests has a p99 of NaN.</summary>
    public static System.Text.Json.JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}
