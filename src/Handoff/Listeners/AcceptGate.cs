namespace Handoff;

/// <summary>
/// Whether this generation accepts connections. Closed until the generation is ready (a new
/// generation that then hung or crashed would otherwise take connections with it), closed
/// again while it hands over to a newer generation (which then takes every connection from the
/// shared accept queue), and opened again if that newer generation dies within
/// <see cref="HandoffOptions.RollbackWindow"/>. Accept loops wait here and stop an accept in
/// flight when the gate closes, without closing the socket.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "Its CancellationTokenSources have no timer and hold nothing but memory; accept loops may link to their tokens after they are cancelled.")]
internal sealed class AcceptGate
{
    private readonly Lock _lock = new();
    private TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private CancellationTokenSource? _closing;

    public bool IsOpen
    {
        get
        {
            lock (_lock)
            {
                return _closing is not null;
            }
        }
    }

    public void Open()
    {
        lock (_lock)
        {
            if (_closing is null)
            {
                _closing = new CancellationTokenSource();
                _opened.TrySetResult();
            }
        }
    }

    public void Close()
    {
        CancellationTokenSource? closing;
        lock (_lock)
        {
            closing = _closing;
            if (closing is null)
            {
                return;
            }

            _closing = null;
            _opened = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        // Accepts in flight see the cancellation and go back to waiting; none is lost, because
        // a cancelled accept leaves its connection in the queue.
        // Not disposed: an accept loop may still link to its token; without a timer it holds
        // nothing but memory.
        closing.Cancel();
    }

    /// <summary>Waits until the gate is open; returns a token that is cancelled when it closes
    /// again. Throws <see cref="OperationCanceledException"/> when
    /// <paramref name="cancellationToken"/> fires first.</summary>
    public async ValueTask<CancellationToken> WaitOpenAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task opened;
            lock (_lock)
            {
                if (_closing is { } closing)
                {
                    return closing.Token;
                }

                opened = _opened.Task;
            }

            await opened.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }
}
