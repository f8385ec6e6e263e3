using System.IO.Pipelines;
using BenchmarkDotNet.Attributes;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.MicroBenchmarks;

/// <summary>A connection's life as Handoff's listener adds to it (the drainable wrapper with its
/// HTTP/2 shutdown pipe, tracking, and the untracking when Kestrel disposes it), against the same
/// connection without it.</summary>
[MemoryDiagnoser]
public class AcceptPathBenchmarks
{
    private readonly ConnectionDrainer _drainer = new(TimeProvider.System, NullLogger.Instance);

    // Kestrel's socket transport, as far as the wrapper sees it: a pipe pair made once.
    private readonly IDuplexPipe _transport = DuplexPipe();

    [Benchmark(Baseline = true)]
    public void WithoutHandoff()
    {
        using var closed = new CancellationTokenSource();
        var connection = new DefaultConnectionContext("connection") { ConnectionClosed = closed.Token, Transport = _transport };
        closed.Cancel();
        Completed(connection.DisposeAsync());
    }

    [Benchmark]
    public void WithHandoff()
    {
        using var closed = new CancellationTokenSource();
        var connection = new DefaultConnectionContext("connection") { ConnectionClosed = closed.Token, Transport = _transport };
        var tracked = _drainer.Track(connection, this);
        closed.Cancel();
        Completed(tracked.DisposeAsync());
    }

    // Nothing here waits: the bare context and the drain's untracking complete at once.
    private static void Completed(ValueTask dispose)
    {
        if (!dispose.IsCompletedSuccessfully)
        {
            throw new InvalidOperationException("DisposeAsync was expected to complete synchronously.");
        }
    }

    private static Duplex DuplexPipe()
    {
        var input = new Pipe();
        var output = new Pipe();
        return new Duplex(input.Reader, output.Writer);
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }
}
