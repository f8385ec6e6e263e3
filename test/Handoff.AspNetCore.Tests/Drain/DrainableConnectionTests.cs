using System.IO.Pipelines;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.AspNetCore;

public sealed class DrainableConnectionTests
{
    [Theory]
    [InlineData("http/1.1", false)] // TLS negotiated HTTP/1.1: it can never carry HTTP/2
    [InlineData("h2", true)]
    [InlineData(null, true)] // no ALPN: the first bytes decide, as in cleartext
    public void Transport_SetByTls_WrappedUnlessAlpnChoseHttp11(string? alpn, bool wrapped)
    {
        var inner = new DefaultConnectionContext("tls") { Transport = Duplex() };
        var connection = new DrainableConnection(inner);
        Assert.NotNull(connection.Http); // the raw side: TLS or cleartext is not known yet

        if (alpn is not null)
        {
            inner.Features.Set<ITlsApplicationProtocolFeature>(new Alpn(alpn));
        }

        var decrypted = Duplex();
        connection.Transport = decrypted;

        Assert.Equal(wrapped, connection.Http is not null);
        Assert.Equal(wrapped, !ReferenceEquals(decrypted, connection.Transport));
    }

    [Fact]
    public void Items_AreTheConnection_ARequestFindsItsRecord_OtherItemsAreKept()
    {
        var inner = new DefaultConnectionContext("items") { Transport = Duplex() };
        var connection = new DrainableConnection(inner);
        var features = new FeatureCollection();
        features.Set<IConnectionItemsFeature>(inner);
        var context = new DefaultHttpContext(features);

        Assert.Same(connection, DrainableConnection.Find(context));

        object key = new();
        connection.Items[key] = "value";
        Assert.Equal("value", inner.Items[key]);
        Assert.True(inner.Items.TryGetValue(key, out object? value) && (string?)value == "value");
        Assert.Single(inner.Items);
        Assert.True(inner.Items.Remove(key));
        Assert.Empty(inner.Items);
        Assert.False(inner.Items.ContainsKey(key));
    }

    [Fact]
    public void Items_SavedReplacedAndRestored_KeepWhatWasStored()
    {
        // Found by review: the saved items are the connection itself, and restoring them was a
        // no-op that left the replacement in place.
        var inner = new DefaultConnectionContext("items") { Transport = Duplex() };
        ConnectionContext connection = new DrainableConnection(inner);
        connection.Items["a"] = 1;
        var saved = connection.Items;
        connection.Items = new Dictionary<object, object?> { ["b"] = 2 };
        Assert.False(connection.Items.ContainsKey("a"));
        Assert.True(connection.Items.ContainsKey("b"));

        connection.Items = saved;

        Assert.Equal(1, connection.Items["a"]);
        Assert.False(connection.Items.ContainsKey("b"));
        Assert.Same(connection, DrainableConnection.Find(Request(inner)));
    }

    [Fact]
    public void Track_AddsThreeObjectsPerConnection()
    {
        // The record with the connection's items, the HTTP/2 shutdown pipe that is its own
        // reader, and its writer: about 310 bytes in all on .NET 10 (x64), 8 of them for moving
        // the connection (a reference to the move, made only when it moves). A dictionary entry, a
        // registration on ConnectionClosed, the items dictionary or a lock object more would each
        // take it over the bound (each is 24 to 80 bytes).
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var transport = Duplex();
        var contexts = Enumerable.Range(0, 2000).Select(i => new DefaultConnectionContext($"c{i}") { Transport = transport }).ToArray();
        for (int i = 0; i < 1000; i++)
        {
            _ = drainer.Track(contexts[i]); // JIT, and the table grows to its size
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 1000; i < 2000; i++)
        {
            _ = drainer.Track(contexts[i]);
        }

        // The table doubles once on the way (1,024 to 2,048 slots: 8 KB, 8 bytes a connection).
        long perConnection = (GC.GetAllocatedBytesForCurrentThread() - before) / 1000;
        Assert.True(perConnection <= 328, $"tracking a connection allocated {perConnection} bytes");
    }

    [Fact]
    public async Task DisposeAsync_KestrelIsDone_TheDrainForgetsTheConnection()
    {
        var drainer = new ConnectionDrainer(TimeProvider.System, NullLogger.Instance);
        var connection = drainer.Track(new DefaultConnectionContext("gone") { Transport = Duplex() });
        Assert.Equal(1, drainer.Count);

        await connection.DisposeAsync();
        await connection.DisposeAsync(); // twice: forgotten once

        Assert.Equal(0, drainer.Count);
        Assert.True(await drainer.DrainAsync(TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(1), CancellationToken.None));
    }

    private static DefaultHttpContext Request(IConnectionItemsFeature connection)
    {
        var features = new FeatureCollection();
        features.Set(connection);
        return new DefaultHttpContext(features);
    }

    private static DuplexPipe Duplex()
    {
        var pipe = new Pipe();
        return new DuplexPipe(pipe.Reader, pipe.Writer);
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }

    private sealed class Alpn(string protocol) : ITlsApplicationProtocolFeature
    {
        public ReadOnlyMemory<byte> ApplicationProtocol { get; } = System.Text.Encoding.ASCII.GetBytes(protocol);
    }
}
