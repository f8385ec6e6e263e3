using BenchmarkDotNet.Attributes;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.MicroBenchmarks;

/// <summary>One tick of a drain (every 50 ms) over many open connections, none of them idle
/// long enough to close yet: the time and memory the drain spends looking.</summary>
[MemoryDiagnoser]
public class DrainTickBenchmarks
{
    private readonly ConnectionDrainer _drainer = new(TimeProvider.System, NullLogger.Instance);
    private long _start;

    [Params(1_000, 10_000)]
    public int Connections { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        for (int i = 0; i < Connections; i++)
        {
            _drainer.Track(new DefaultConnectionContext($"connection-{i}") { ConnectionClosed = CancellationToken.None });
        }

        _start = TimeProvider.System.GetTimestamp();
    }

    [Benchmark]
    public int Tick() => _drainer.CloseIdle(_start, TimeProvider.System.GetTimestamp(), TimeSpan.FromHours(1));
}
