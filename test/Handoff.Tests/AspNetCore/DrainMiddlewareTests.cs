using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
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
        var connection = new DefaultConnectionContext("connection-1");
        drainer.Track(connection);
        var (context, response) = Request(protocol, connection);
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
            response.Complete();
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
        Assert.True(ConnectionDrainer.Find(context)!.IsIdleSince(TimeProvider.System.GetTimestamp()));
    }

    [Fact]
    public async Task InvokeAsync_Draining_Http1ResponseGetsConnectionClose()
    {
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var connection = new DefaultConnectionContext("connection-1");
        drainer.Track(connection);
        var (context, response) = Request("HTTP/1.1", connection);
        var middleware = new DrainMiddleware(_ => Task.CompletedTask, drainer);

        await middleware.InvokeAsync(context);
        response.Complete();
        Assert.False(context.Response.Headers.ContainsKey("Connection"));

        drainer.BeginDrain(TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(1));
        await middleware.InvokeAsync(context);
        response.Complete();
        Assert.Equal("close", context.Response.Headers.Connection);
    }

    [Fact]
    public void InvokeAsync_RequestRuns_ConnectionIsBusyUntilTheResponseCompleted()
    {
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var connection = new DefaultConnectionContext("connection-1");
        drainer.Track(connection);
        var (context, response) = Request("HTTP/1.1", connection);
        var application = new TaskCompletionSource();
        var middleware = new DrainMiddleware(_ => application.Task, drainer);
        var tracked = ConnectionDrainer.Find(context)!;

        _ = middleware.InvokeAsync(context);
        application.SetResult();
        Assert.False(tracked.IsIdleSince(TimeProvider.System.GetTimestamp()));

        response.Complete();
        Assert.True(tracked.IsIdleSince(TimeProvider.System.GetTimestamp()));
    }

    private static (DefaultHttpContext Context, ReusedResponseFeature Response) Request(string protocol, DefaultConnectionContext connection)
    {
        var features = new FeatureCollection();
        features.Set<IHttpRequestFeature>(new HttpRequestFeature { Protocol = protocol, Method = "GET", Path = "/" });
        var response = new ReusedResponseFeature();
        features.Set<IHttpResponseFeature>(response);
        features.Set<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>(connection);
        if (protocol == "HTTP/1.1")
        {
            features.Set<IHttpUpgradeFeature>(new NotUpgradable());
        }
        else
        {
            features.Set<IHttpExtendedConnectFeature>(new NotExtendedConnect());
        }

        return (new DefaultHttpContext(features), response);
    }

    /// <summary>Keeps the callbacks as Kestrel does: in lists reused from request to request.</summary>
    private sealed class ReusedResponseFeature : HttpResponseFeature
    {
        private readonly List<(Func<object, Task> Callback, object State)> _starting = new(4);
        private readonly List<(Func<object, Task> Callback, object State)> _completed = new(4);

        public override void OnStarting(Func<object, Task> callback, object state) => _starting.Add((callback, state));

        public override void OnCompleted(Func<object, Task> callback, object state) => _completed.Add((callback, state));

        public void Complete()
        {
            foreach (var (callback, state) in _starting)
            {
                callback(state).GetAwaiter().GetResult();
            }

            foreach (var (callback, state) in _completed)
            {
                callback(state).GetAwaiter().GetResult();
            }

            _starting.Clear();
            _completed.Clear();
        }
    }

    private sealed class NotUpgradable : IHttpUpgradeFeature
    {
        public bool IsUpgradableRequest => false;

        public Task<Stream> UpgradeAsync() => throw new InvalidOperationException();
    }

    private sealed class NotExtendedConnect : IHttpExtendedConnectFeature
    {
        public bool IsExtendedConnect => false;

        public string? Protocol => null;

        public ValueTask<Stream> AcceptAsync() => throw new InvalidOperationException();
    }
}
