using System.Collections.Concurrent;

namespace Handoff.Testing;

/// <summary>
/// A load of <c>workers</c> loops, each calling <see cref="RunAsync"/> until stopped; what they
/// record with <see cref="Served"/> and <see cref="Failed"/> is the report. For loads
/// driven by a real client library (gRPC, SignalR): the loop must not retry what failed.
/// </summary>
public abstract class WorkerLoad : ILoad
{
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly ConcurrentDictionary<int, bool> _pids = new();
    private Task[] _workers = [];
    private long _succeeded;

    public long Succeeded => Interlocked.Read(ref _succeeded);

    public int FailureCount => _failures.Count;

    /// <summary>Stopped: a worker ends its loop when this is cancelled.</summary>
    protected CancellationToken Stopping => _stop.Token;

    /// <summary>Starts <paramref name="workers"/> loops.</summary>
    protected void Start(int workers) =>
        _workers = [.. Enumerable.Range(0, workers).Select(i => Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                await RunAsync(i);
            }
        }))];

    /// <summary>One call of worker <paramref name="worker"/>; records its outcome.</summary>
    protected abstract Task RunAsync(int worker);

    protected void Served(int pid)
    {
        Interlocked.Increment(ref _succeeded);
        _pids.TryAdd(pid, true);
    }

    protected void Failed(string reason) => _failures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} {reason}");

    /// <inheritdoc/>
    public async Task WaitForProgressAsync(long count, TimeSpan timeout)
    {
        long target = Succeeded + count;
        var deadline = DateTime.UtcNow + timeout;
        while (Succeeded < target)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the load made no progress: {Succeeded} succeeded, {FailureCount} failed; {string.Join("; ", _failures.Take(5))}");
            }

            await Task.Delay(10);
        }
    }

    /// <inheritdoc/>
    public async Task<LoadReport> StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_workers);
        return new LoadReport(Succeeded, [.. _failures], [.. _pids.Keys]);
    }
}
