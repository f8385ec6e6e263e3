using System.IO.Pipelines;
using BenchmarkDotNet.Attributes;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.MicroBenchmarks;

/// <summary>A connection's life as Handoff's listener adds to it (the drainable wrapper with its
/// HTTP/2 shutdown pipe, tracking, and the untracking when it closes), against the same
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
        _ = new DefaultConnectionContext("connection") { ConnectionClosed = closed.Token, Transport = _transport };
        closed.Cancel();
    }

    [Benchmark]
    public void WithHandoff()
    {
        using var closed = new CancellationTokenSource();
        var connection = new DefaultConnectionContext("connection") { ConnectionClosed = closed.Token, Transport = _transport };
        _drainer.Track(new DrainableConnection(connection), this);
        closed.Cancel();
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
