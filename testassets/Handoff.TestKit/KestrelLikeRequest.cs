using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Handoff.Tests.AspNetCore;

/// <summary>
/// A request as Kestrel presents it to the pipeline, reused from request to request as Kestrel
/// reuses its own: the protocol's features, the connection's items, and response callbacks kept
/// in lists that are cleared, not replaced. <see cref="Complete"/> runs the callbacks as Kestrel
/// does once the application returned: <c>OnStarting</c>, then <c>OnCompleted</c>. Shared by the
/// allocation tests and bench/Handoff.MicroBenchmarks, so both measure the same thing.
/// </summary>
internal sealed class KestrelLikeRequest
{
    private readonly List<(Func<object, Task> Callback, object State)> _starting = new(4);
    private readonly List<(Func<object, Task> Callback, object State)> _completed = new(4);

    public KestrelLikeRequest(string protocol, IConnectionItemsFeature connection)
    {
        var features = new FeatureCollection();
        features.Set<IHttpRequestFeature>(new HttpRequestFeature { Protocol = protocol, Method = "GET", Path = "/" });
        features.Set<IHttpResponseFeature>(new ResponseFeature(this));
        features.Set(connection);
        if (protocol == "HTTP/2")
        {
            features.Set<IHttpExtendedConnectFeature>(new NotExtendedConnect());
        }
        else
        {
            features.Set<IHttpUpgradeFeature>(new NotUpgradable());
        }

        Context = new DefaultHttpContext(features);
    }

    public DefaultHttpContext Context { get; }

    /// <summary>The response's callbacks, as Kestrel runs them after the application.</summary>
    public void Complete()
    {
        foreach (var (callback, state) in _starting)
        {
            _ = callback(state);
        }

        foreach (var (callback, state) in _completed)
        {
            _ = callback(state);
        }

        _starting.Clear();
        _completed.Clear();
    }

    /// <summary>A connection's items, as Kestrel's connection context has them.</summary>
    public static DefaultConnectionContext Connection(string id = "connection-1") => new(id) { ConnectionClosed = CancellationToken.None };

    private sealed class ResponseFeature(KestrelLikeRequest request) : HttpResponseFeature
    {
        public override void OnStarting(Func<object, Task> callback, object state) => request._starting.Add((callback, state));

        public override void OnCompleted(Func<object, Task> callback, object state) => request._completed.Add((callback, state));
    }

    private sealed class NotUpgradable : IHttpUpgradeFeature
    {
        public bool IsUpgradableRequest => false;

        public Task<Stream> UpgradeAsync() => throw new InvalidOperationException("not an upgradable request");
    }

    private sealed class NotExtendedConnect : IHttpExtendedConnectFeature
    {
        public bool IsExtendedConnect => false;

        public string? Protocol => null;

        public ValueTask<Stream> AcceptAsync() => throw new InvalidOperationException("not an extended CONNECT");
    }
}
