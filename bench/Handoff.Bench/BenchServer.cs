namespace Handoff.Bench;

/// <summary>How long an action took, as seen from outside the server.</summary>
/// <param name="At">When the signal was sent.</param>
/// <param name="ToReadyMs">Signal to new process accepting (restart: old stopped and new accepting).</param>
/// <param name="ToOldGoneMs">New process ready to old process gone (restart: 0).</param>
/// <param name="Succeeded">Whether a new process took over.</param>
internal sealed record ActionTiming(DateTime At, double ToReadyMs, double ToOldGoneMs, bool Succeeded);

/// <summary>A server under benchmark: one of plain Kestrel, Handoff, nginx.</summary>
internal abstract class BenchServer : IAsyncDisposable
{
    protected BenchServer(string directory, int port, bool http2)
    {
        Directory = directory;
        Port = port;
        Http2 = http2;
    }

    public abstract string Name { get; }

    /// <summary>"upgrade" or "restart": what the action of this server is.</summary>
    public abstract string ActionName { get; }

    public string Directory { get; }

    public int Port { get; }

    public bool Http2 { get; }

    /// <summary>The process that serves requests now (nginx: its worker).</summary>
    public abstract int ServingPid { get; }

    public abstract Task StartAsync();

    public abstract Task<ActionTiming> ActAsync();

    /// <summary>Bytes the serving process allocates per keep-alive request, measured over a fixed
    /// number of requests on one connection; null where the server cannot say (not .NET).</summary>
    public virtual Task<double?> AllocatedBytesPerRequestAsync() => Task.FromResult<double?>(null);

    public abstract ValueTask DisposeAsync();

    protected static double Since(DateTime start) => (DateTime.UtcNow - start).TotalMilliseconds;
}
