using System.Net;
using System.Net.Sockets;

namespace Handoff.Tests;

public sealed class ListenerAddressTests
{
    [Theory]
    [InlineData("127.0.0.1", 8080, "127.0.0.1", 8080, true)]
    [InlineData("127.0.0.1", 8080, "127.0.0.1", 0, true)]
    [InlineData("127.0.0.1", 8080, "127.0.0.1", 8081, false)]
    [InlineData("127.0.0.1", 8080, "127.0.0.2", 8080, false)]
    [InlineData("::1", 8080, "::1", 8080, true)]
    [InlineData("::1", 8080, "127.0.0.1", 8080, false)]
    [InlineData("::", 8080, "::", 8080, true)]
    [InlineData("::", 8080, "0.0.0.0", 8080, false)]
    public void Satisfies_IpAddresses(string bound, int boundPort, string requested, int requestedPort, bool expected)
    {
        var b = new IPEndPoint(IPAddress.Parse(bound), boundPort);
        var r = new IPEndPoint(IPAddress.Parse(requested), requestedPort);

        Assert.Equal(expected, ListenerAddress.Satisfies(b, r));
    }

    [Fact]
    public void Satisfies_UnixPaths_ComparedExactly()
    {
        Assert.True(ListenerAddress.Satisfies(new UnixDomainSocketEndPoint("/run/a.sock"), new UnixDomainSocketEndPoint("/run/a.sock")));
        Assert.False(ListenerAddress.Satisfies(new UnixDomainSocketEndPoint("/run/a.sock"), new UnixDomainSocketEndPoint("/run/b.sock")));
        Assert.False(ListenerAddress.Satisfies(new UnixDomainSocketEndPoint("/run/a.sock"), new IPEndPoint(IPAddress.Loopback, 0)));
    }

    [Fact]
    public void IsSupported_OnlyTcpAndUnix()
    {
        Assert.True(ListenerAddress.IsSupported(new IPEndPoint(IPAddress.Loopback, 1)));
        Assert.True(ListenerAddress.IsSupported(new UnixDomainSocketEndPoint("/tmp/x")));
        Assert.False(ListenerAddress.IsSupported(new DnsEndPoint("localhost", 80)));
    }
}
