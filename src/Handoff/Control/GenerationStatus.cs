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
    int ParentPid);

/// <summary>An older generation that still drains: its pid, when it started, and the
/// connections it holds (null when /proc does not say).</summary>
internal sealed record DrainingGeneration(int Pid, DateTimeOffset? StartedAt, int? OpenConnections);
