namespace Handoff.Tests;

public sealed class HandoverEnvironmentTests
{
    [Fact]
    public void Format_ThenParse_RoundTrips()
    {
        var handover = HandoverEnvironment.ForChild(parentPid: 1234, generation: 7, ids: [11, 12, 13, 14], older: [new GenerationProcess(1234, 555), new GenerationProcess(1000, 42)], activated: [true, false, true], detached: true);

        string text = handover.Format();
        var parsed = HandoverEnvironment.Parse(text);

        Assert.Equal("v3;parent=1234;generation=7;listen=3,4,5;ready=6;ids=11,12,13,14;older=1234:555,1000:42;activated=3,5;detached=1", text);
        Assert.Equal(1234, parsed.ParentPid);
        Assert.Equal(7, parsed.Generation);
        Assert.Equal([3, 4, 5], parsed.ListenFds);
        Assert.Equal(6, parsed.ReadyFd);
        Assert.Equal([11UL, 12, 13, 14], parsed.Ids);
        Assert.Equal([new GenerationProcess(1234, 555), new GenerationProcess(1000, 42)], parsed.Older);
        Assert.Equal([(3, "socket:[11]"), (4, "socket:[12]"), (5, "socket:[13]"), (6, "pipe:[14]")], parsed.ExpectedLinks());
        Assert.Equal([3, 5], parsed.ActivatedFds);
        Assert.True(parsed.Detached);
    }

    [Fact]
    public void Parse_PreviousVersion_AcceptedWithoutActivatedSockets()
    {
        // A build from before socket activation can still upgrade to this one.
        var parsed = HandoverEnvironment.Parse("v2;parent=9;generation=2;listen=3;ready=4;ids=5,6;older=9:1");

        Assert.Equal([3], parsed.ListenFds);
        Assert.Empty(parsed.ActivatedFds);
    }

    [Fact]
    public void Parse_NoListeners_ReadyAtThree()
    {
        var parsed = HandoverEnvironment.Parse("v2;parent=9;generation=2;listen=;ready=3;ids=5;older=");

        Assert.Empty(parsed.ListenFds);
        Assert.Equal(3, parsed.ReadyFd);
        Assert.Empty(parsed.Older);
    }

    [Theory]
    [InlineData("")]
    [InlineData("v1;parent=1;generation=2;listen=3;ready=4")]
    [InlineData("v2;parent=1;generation=2;listen=3;ready=4;ids=1,2")]
    [InlineData("v2;parent=x;generation=2;listen=3;ready=4;ids=1,2;older=")]
    [InlineData("v2;parent=-1;generation=2;listen=3;ready=4;ids=1,2;older=")]
    [InlineData("v2;parent=1;generation=1;listen=3;ready=4;ids=1,2;older=")]
    [InlineData("v2;parent=1;generation=2;listen=4;ready=5;ids=1,2;older=")]
    [InlineData("v3;parent=1;generation=2;listen=3;ready=4;ids=1,2;older=")]
    [InlineData("v3;parent=1;generation=2;listen=3;ready=4;ids=1,2;older=;activated=3")]
    [InlineData("v2;parent=1;generation=2;listen=3;ready=4;ids=1,2;older=;activated=3")]
    [InlineData("v3;parent=1;generation=2;listen=3;ready=4;ids=1,2;older=;activated=4;detached=0")]
    [InlineData("v3;parent=1;generation=2;listen=3;ready=4;ids=1,2;older=;activated=3,3;detached=0")]
    [InlineData("v3;parent=1;generation=2;listen=3;ready=4;ids=1,2;older=;activated=;detached=yes")]
    [InlineData("v2;parent=1;generation=2;listen=3,3;ready=4;ids=1,2,3;older=")]
    [InlineData("v2;parent=1;generation=2;listen=3;ready=9;ids=1,2;older=")]
    [InlineData("v2;generation=2;parent=1;listen=3;ready=4;ids=1,2;older=")]
    [InlineData("v2;parent=1;generation=2;listen=3,;ready=4;ids=1,2;older=")]
    [InlineData("v2;parent=99999999999;generation=2;listen=3;ready=4;ids=1,2;older=")]
    [InlineData("v2;parent=1;generation=2;listen=3;ready=4;ids=1;older=")]
    [InlineData("v2;parent=1;generation=2;listen=3;ready=4;ids=1,2;older=12")]
    public void Parse_Malformed_ThrowsNamingTheVariable(string value)
    {
        var e = Assert.Throws<HandoffProtocolException>(() => HandoverEnvironment.Parse(value));

        Assert.Contains(HandoverEnvironment.VariableName, e.Message, StringComparison.Ordinal);
        Assert.Contains("malformed", e.Message, StringComparison.Ordinal);
    }
}
