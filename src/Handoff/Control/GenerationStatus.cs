namespace Handoff;

/// <summary>What <c>handoff status</c> reports about the generation that answers and the older
/// ones still draining; taken by <see cref="Upgrader.GetStatus"/>.</summary>
internal sealed record GenerationStatus(
    int Pid,
    int Generation,
    GenerationState State,
    DateTimeOffset StartedAt,
    IReadOnlyList<Listener> Listeners,
    string? ControlSocket,
    int? OpenConnections,
    IReadOnlyList<DrainingGeneration> Draining,
    LastUpgrade? LastUpgrade,
    int ParentPid,
    MovedHere? MovedHere = null);

/// <summary>An older generation that still drains: its pid, when it started, and the
/// connections it holds (null when /proc does not say).</summary>
internal sealed record DrainingGeneration(int Pid, DateTimeOffset? StartedAt, int? OpenConnections);

/// <summary>What became of the connections the previous generation moved to this one: adopted,
/// closed (nothing here could serve them), passed on to a newer generation; <see cref="Ended"/>
/// once the previous generation has moved all it will; <see cref="ByKind"/> the same for each
/// kind that came (http1, websocket, tcp).</summary>
internal sealed record MovedHere(int Adopted, int Closed, int PassedOn, bool Ended, IReadOnlyDictionary<string, MovedKind>? ByKind = null);

/// <summary>What became of the connections of one kind the previous generation moved here.</summary>
internal sealed record MovedKind(int Adopted, int Closed, int PassedOn);
