using System.Text.Json;
using System.Text.Json.Serialization;

namespace Handoff;

// The control protocol's answers (docs/control.md), one type per answer, written by the server
// and read by the handoff tool and by a superseded generation passing an upgrade on: one
// contract for both ends, serialized by System.Text.Json's source generator (no reflection;
// NativeAOT and trimming keep it). Every answer begins with the protocol version and its type.

/// <summary>The first two fields of every answer: enough to choose how to read the rest.</summary>
internal sealed record ControlEnvelope(int Protocol, string? Type);

/// <summary>Answer to <c>status</c>.</summary>
internal sealed record StatusAnswer(
    int Pid,
    int Generation,
    string State,
    string StartedAt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)] int ParentPid,
    IReadOnlyList<ListenerAnswer> Listeners,
    string? ControlSocket,
    int? OpenConnections,
    IReadOnlyList<DrainingAnswer> Draining,
    LastUpgradeAnswer? LastUpgrade,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] MovedHereAnswer? MovedHere = null)
{
    [JsonPropertyOrder(-2)]
    public int Protocol { get; init; } = ControlProtocol.Version;

    [JsonPropertyOrder(-1)]
    public string Type { get; init; } = ControlProtocol.StatusType;
}

/// <summary>A listener in <see cref="StatusAnswer"/>.</summary>
internal sealed record ListenerAnswer(string Address, bool Inherited, bool Activated);

/// <summary>An older generation still draining, in <see cref="StatusAnswer"/>.</summary>
internal sealed record DrainingAnswer(
    int Pid,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? StartedAt,
    int? OpenConnections);

/// <summary>The connections the previous generation moved to this one, in <see cref="StatusAnswer"/>
/// (absent when it moved none here: the first generation, or moving is off).</summary>
internal sealed record MovedHereAnswer(
    int Adopted,
    int Closed,
    int PassedOn,
    bool Ended,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Dictionary<string, MovedKindAnswer>? ByKind = null);

/// <summary>The connections of one kind (http1, websocket, tcp) in <see cref="MovedHereAnswer"/>.</summary>
internal sealed record MovedKindAnswer(int Adopted, int Closed, int PassedOn);

/// <summary>The last upgrade, in <see cref="StatusAnswer"/>.</summary>
internal sealed record LastUpgradeAnswer(string Outcome, string At, string Detail);

/// <summary>Answer to <c>upgrade</c>: the upgrade runs; its <see cref="ResultAnswer"/> follows.</summary>
internal sealed record UpgradingAnswer
{
    [JsonPropertyOrder(-2)]
    public int Protocol { get; init; } = ControlProtocol.Version;

    [JsonPropertyOrder(-1)]
    public string Type { get; init; } = ControlProtocol.UpgradingType;
}

/// <summary>Answer to <c>upgrade</c>: how it ended.</summary>
internal sealed record ResultAnswer(
    string Outcome,
    int OldPid,
    int OldGeneration,
    int NewPid,
    int Generation,
    long TimeToReadyMs,
    bool OldServing,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Reason,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? ErrorType,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] TimelineAnswer? Timeline = null)
{
    [JsonPropertyOrder(-2)]
    public int Protocol { get; init; } = ControlProtocol.Version;

    [JsonPropertyOrder(-1)]
    public string Type { get; init; } = ControlProtocol.ResultType;
}

/// <summary>Answer to a request the server refuses (unknown, too long, too slow, not allowed).</summary>
/// <summary>A success's phases in milliseconds since the request (UpgradeTimeline), and the
/// shares: Handoff's own, the runtime's start, the application's start, the rollback window. The
/// new generation's moments are absent when its build did not report them.</summary>
internal sealed record TimelineAnswer(
    double SpawnedMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? RuntimeStartedMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? AdoptedMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? ReadyMs,
    double ReportReadMs,
    double CommittedMs,
    double HandoffMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? RuntimeMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? ApplicationMs,
    double RollbackWindowMs)
{
    public static TimelineAnswer From(UpgradeTimeline t) => new(
        Round(t.Spawned), Round(t.RuntimeStarted), Round(t.Adopted), Round(t.Ready), Round(t.ReportRead), Round(t.Committed),
        Round(t.Own), Round(t.Runtime), Round(t.Application), Round(t.RollbackWindow));

    private static double Round(double ms) => Math.Round(ms, 1);

    private static double? Round(double? ms) => ms is { } value ? Round(value) : null;
}

internal sealed record ErrorAnswer(string Error)
{
    [JsonPropertyOrder(-2)]
    public int Protocol { get; init; } = ControlProtocol.Version;

    [JsonPropertyOrder(-1)]
    public string Type { get; init; } = ControlProtocol.ErrorType;
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(ControlEnvelope))]
[JsonSerializable(typeof(StatusAnswer))]
[JsonSerializable(typeof(UpgradingAnswer))]
[JsonSerializable(typeof(ResultAnswer))]
[JsonSerializable(typeof(ErrorAnswer))]
internal sealed partial class ControlJson : JsonSerializerContext
{
    private static ControlJson? s_wire;

    /// <summary>The answers are read by the tool and by people, not embedded in HTML: no
    /// escaping beyond what JSON requires. Made on first use: the generated <c>Default</c> is
    /// not there yet while this type's static fields are initialized.</summary>
    public static ControlJson Wire => s_wire ??= new(new JsonSerializerOptions(Default.Options)
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}
