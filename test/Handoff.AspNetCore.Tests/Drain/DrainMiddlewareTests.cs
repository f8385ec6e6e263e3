using Handoff.AspNetCore;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.AspNetCore;

public sealed class DrainMiddlewareTests
{
    private const int Requests = 1000;

    [Theory]
    [InlineData("HTTP/1.1", false)]
    [InlineData("HTTP/1.1", true)]
    [InlineData("HTTP/2", false)]
    [InlineData("HTTP/2", true)]
    public void InvokeAsync_SteadyState_AllocatesNothingPerRequest(string protocol, bool applicationCompletesLater)
    {
        // As Kestrel runs a request: the middleware, then the response's OnStarting callbacks,
        // then its OnCompleted callbacks, on a connection the drain tracks. The application's
        // tasks are made before the count, so only the middleware's own allocations count.
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var connection = KestrelLikeRequest.Connection();
        drainer.Track(connection);
        var request = new KestrelLikeRequest(protocol, connection);
        var context = request.Context;
        var pending = Enumerable.Range(0, Requests + 10).Select(_ => new TaskCompletionSource()).ToArray();
        int next = 0;
        var middleware = new DrainMiddleware(_ => applicationCompletesLater ? pending[next++].Task : Task.CompletedTask, drainer);
        void Run()
        {
            var task = middleware.InvokeAsync(context);
            if (applicationCompletesLater)
            {
                Assert.False(task.IsCompleted);
                pending[next - 1].SetResult();
            }

            Assert.True(task.IsCompletedSuccessfully);
            request.Complete();
        }

        for (int i = 0; i < 10; i++)
        {
            Run(); // JIT and first-use allocations
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Requests; i++)
        {
            Run();
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.True(DrainableConnection.Find(context)!.IsIdleSince(Environment.TickCount64));
    }

    [Fact]
    public async Task InvokeAsync_Draining_Http1ResponseGetsConnectionClose()
    {
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var connection = KestrelLikeRequest.Connection();
        drainer.Track(connection);
        var request = new KestrelLikeRequest("HTTP/1.1", connection);
        var context = request.Context;
        var middleware = new DrainMiddleware(_ => Task.CompletedTask, drainer);

        await middleware.InvokeAsync(context);
        request.Complete();
        Assert.False(context.Response.Headers.ContainsKey("Connection"));

        drainer.BeginDrain(TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(1));
        await middleware.InvokeAsync(context);
        request.Complete();
        Assert.Equal("close", context.Response.Headers.Connection);
    }

    [Fact]
    public void InvokeAsync_RequestRuns_ConnectionIsBusyUntilTheResponseCompleted()
    {
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var connection = KestrelLikeRequest.Connection();
        drainer.Track(connection);
        var request = new KestrelLikeRequest("HTTP/1.1", connection);
        var context = request.Context;
        var application = new TaskCompletionSource();
        var middleware = new DrainMiddleware(_ => application.Task, drainer);
        var tracked = DrainableConnection.Find(context)!;

        _ = middleware.InvokeAsync(context);
        application.SetResult();
        Assert.False(tracked.IsIdleSince(Environment.TickCount64));

        request.Complete();
        Assert.True(tracked.IsIdleSince(Environment.TickCount64));
    }
}
