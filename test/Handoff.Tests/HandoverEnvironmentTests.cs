namespace Handoff.Tests;

public sealed class HandoverEnvironmentTests
{
    [Fact]
    public void Format_ThenParse_RoundTrips()
    {
        var handover = HandoverEnvironment.ForChild(parentPid: 1234, generation: 7, listenerCount: 3);

        string text = handover.Format();
        var parsed = HandoverEnvironment.Parse(text);

        Assert.Equal("v1;parent=1234;generation=7;listen=3,4,5;ready=6", text);
        Assert.Equal(1234, parsed.ParentPid);
        Assert.Equal(7, parsed.Generation);
        Assert.Equal([3, 4, 5], parsed.ListenFds);
        Assert.Equal(6, parsed.ReadyFd);
    }

    [Fact]
    public void Parse_NoListeners_ReadyAtThree()
    {
        var parsed = HandoverEnvironment.Parse("v1;parent=9;generation=2;listen=;ready=3");

        Assert.Empty(parsed.ListenFds);
        Assert.Equal(3, parsed.ReadyFd);
    }

    [Theory]
    [InlineData("")]
    [InlineData("v2;parent=1;generation=2;listen=3;ready=4")]
    [InlineData("v1;parent=1;generation=2;listen=3")]
    [InlineData("v1;parent=x;generation=2;listen=3;ready=4")]
    [InlineData("v1;parent=-1;generation=2;listen=3;ready=4")]
    [InlineData("v1;parent=1;generation=1;listen=3;ready=4")]
    [InlineData("v1;parent=1;generation=2;listen=4;ready=5")]
    [InlineData("v1;parent=1;generation=2;listen=3,3;ready=4")]
    [InlineData("v1;parent=1;generation=2;listen=3;ready=9")]
    [InlineData("v1;generation=2;parent=1;listen=3;ready=4")]
    [InlineData("v1;parent=1;generation=2;listen=3,;ready=4")]
    [InlineData("v1;parent=99999999999;generation=2;listen=3;ready=4")]
    public void Parse_Malformed_ThrowsNamingTheVariable(string value)
    {
        var e = Assert.Throws<HandoffProtocolException>(() => HandoverEnvironment.Parse(value));

        Assert.Contains(HandoverEnvironment.VariableName, e.Message, StringComparison.Ordinal);
        Assert.Contains("malformed", e.Message, StringComparison.Ordinal);
    }
}
