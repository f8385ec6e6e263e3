namespace Handoff.AspNetCore;

/// <summary>
/// Holds Kestrel's accept loops until the generation is ready. Kestrel starts accepting as soon
/// as it has bound, before the warm-up hook ran and before the old generation was told; a new
/// generation that then hung or crashed would take connections with it. Until the gate opens,
/// connections wait in the shared accept queue, where the old generation keeps accepting them.
/// </summary>
internal sealed class AcceptGate
{
    private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool IsOpen => _open.Task.IsCompleted;

    public void Open() => _open.TrySetResult();

    /// <summary>Completes with true when the gate opens, false if
    /// <paramref name="cancellationToken"/> fires first.</summary>
    public async Task<bool> WaitAsync(CancellationToken cancellationToken)
    {
        if (_open.Task.IsCompleted)
        {
            return true;
        }

        var cancelled = Task.Delay(Timeout.Infinite, cancellationToken);
        return await Task.WhenAny(_open.Task, cancelled).ConfigureAwait(false) == _open.Task;
    }
}
