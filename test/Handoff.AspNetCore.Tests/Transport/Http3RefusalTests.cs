using Handoff.AspNetCore;
using Microsoft.Extensions.Configuration;

namespace Handoff.Tests.AspNetCore;

public sealed class Http3RefusalTests
{
    [Fact]
    public void Check_EndpointsWithHttp3_AreNamed_OthersAreNot()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Kestrel:Endpoints:Api:Url"] = "https://*:5001",
            ["Kestrel:Endpoints:Api:Protocols"] = "Http1AndHttp2AndHttp3",
            ["Kestrel:Endpoints:Web:Url"] = "https://*:5002",
            ["Kestrel:Endpoints:Web:Protocols"] = "Http1AndHttp2",
            ["Kestrel:Endpoints:Plain:Url"] = "http://*:5000",
        }).Build();

        string error = Assert.Single(Http3Refusal.Check(configuration));

        Assert.StartsWith("Kestrel:Endpoints:Api:Protocols (https://*:5001) is 'Http1AndHttp2AndHttp3', which enables HTTP/3.", error, StringComparison.Ordinal);
        Assert.Contains("Remove Http3 from the protocols", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Http3")]
    [InlineData("http1andhttp2andhttp3")]
    [InlineData("7")]
    [InlineData("Http1, Http3")]
    public void Check_EndpointDefaultsWithHttp3_IsNamed(string protocols)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Kestrel:EndpointDefaults:Protocols"] = protocols,
        }).Build();

        Assert.StartsWith($"Kestrel:EndpointDefaults:Protocols is '{protocols}'", Assert.Single(Http3Refusal.Check(configuration)), StringComparison.Ordinal);
    }

    [Fact]
    public void Check_NoKestrelSection_NothingToSay()
    {
        Assert.Empty(Http3Refusal.Check(new ConfigurationBuilder().Build()));
    }

    [Fact]
    public async Task Factory_AnyEndpointConfiguredInCode_IsRefusedNamingIt()
    {
        var factory = new RefusingMultiplexedListenerFactory(Microsoft.Extensions.Logging.Abstractions.NullLogger<RefusingMultiplexedListenerFactory>.Instance);

        var e = await Assert.ThrowsAsync<NotSupportedException>(async () => await factory.BindAsync(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 5003)));

        Assert.StartsWith("The endpoint 127.0.0.1:5003 (its Protocols, set in code,) enables HTTP/3. Handoff cannot hand", e.Message, StringComparison.Ordinal);
    }
}
