namespace Handoff;

/// <summary>Where a generation is in its life. <see cref="Upgrader"/> owns it; every change
/// is decided there.</summary>
public enum GenerationState
{
    /// <summary>Started; adopting listeners and warming up. Accepts nothing yet.</summary>
    Starting,

    /// <summary>Accepting connections; an upgrade can start.</summary>
    Ready,

    /// <summary>A new generation is starting; this one keeps accepting until it reports ready.</summary>
    Upgrading,

    /// <summary>The new generation reported ready: this one stopped accepting and drains, but
    /// keeps its listening sockets for <see cref="HandoffOptions.RollbackWindow"/> so it can
    /// resume if the new one dies.</summary>
    HandingOver,

    /// <summary>The new generation serves; this one has closed its listening sockets and
    /// finishes its connections.</summary>
    Superseded,

    /// <summary>A final shutdown began: no upgrade starts, an upgrade in flight is stopped.</summary>
    Stopping,

    /// <summary>Shut down or superseded, listeners closed; connections may still be draining.</summary>
    Stopped,
}
