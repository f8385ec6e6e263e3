using BenchmarkDotNet.Attributes;
using Handoff.AspNetCore;
using Handoff.Tests.AspNetCore;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.MicroBenchmarks;

/// <summary>One request through Handoff's first middleware, against the same request without
/// it: what Handoff adds to every request while no drain runs.</summary>
[MemoryDiagnoser]
public class DrainMiddlewareBenchmarks
{
    private static readonly RequestDelegate Application = _ => Task.CompletedTask;
    private KestrelLikeRequest _request = null!;
    private DrainMiddleware _middleware = null!;

    [Params("HTTP/1.1", "HTTP/2")]
    public string Protocol { get; set; } = "HTTP/1.1";

    [GlobalSetup]
    public void Setup()
    {
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var connection = KestrelLikeRequest.Connection();
        drainer.Track(connection);
        _request = new KestrelLikeRequest(Protocol, connection);
        _middleware = new DrainMiddleware(Application, drainer);
    }

    [Benchmark(Baseline = true)]
    public Task WithoutHandoff()
    {
        var task = Application(_request.Context);
        _request.Complete();
        return task;
    }

    [Benchmark]
    public Task WithHandoff()
    {
        var task = _middleware.InvokeAsync(_request.Context);
        _request.Complete();
        return task;
    }
}
