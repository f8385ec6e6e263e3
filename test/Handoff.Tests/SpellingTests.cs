namespace Handoff.Tests;

public sealed class SpellingTests
{
    private static readonly string[] Options = ["UpgradeTimeout", "DrainTimeout", "DrainIdleTimeout", "PidFile", "ControlSocket", "UpgradeSignals"];

    [Theory]
    [InlineData("", "", 0)]
    [InlineData("abc", "", 3)]
    [InlineData("DrainTimout", "DrainTimeout", 1)]
    [InlineData("DrainTiemout", "DrainTimeout", 1)]
    [InlineData("draintimeout", "DrainTimeout", 0)]
    [InlineData("kitten", "sitting", 3)]
    [InlineData("ca", "abc", 3)]
    public void Distance_CountsInsertionsDeletionsReplacementsAndSwaps(string a, string b, int expected)
    {
        Assert.Equal(expected, Spelling.Distance(a, b));
        Assert.Equal(expected, Spelling.Distance(b, a));
    }

    [Theory]
    [InlineData("DrainTimout", "DrainTimeout")]
    [InlineData("UPGRADETIMEOUT", "UpgradeTimeout")]
    [InlineData("pidfiel", "PidFile")]
    [InlineData("Signals", "UpgradeSignals")]
    [InlineData("ControlSocketPath", "ControlSocket")]
    [InlineData("Timeout", null)]
    [InlineData("Drain", null)]
    [InlineData("x", null)]
    [InlineData("Verbose", null)]
    public void Closest_NearOrOnlyAffixMatch_ElseNothing(string word, string? expected) =>
        Assert.Equal(expected, Spelling.Closest(word, Options));

    [Fact]
    public void Closest_ShortWord_AllowsOneEditOnly()
    {
        Assert.Equal("json", Spelling.Closest("jsn", ["json", "pid"]));
        Assert.Null(Spelling.Closest("ab", ["pid"]));
    }
}
