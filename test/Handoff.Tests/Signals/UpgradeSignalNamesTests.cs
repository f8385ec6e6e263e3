using System.Runtime.InteropServices;

namespace Handoff.Tests;

public sealed class UpgradeSignalNamesTests
{
    [Theory]
    [InlineData("SIGUSR2,SIGHUP", new[] { 12, -1 })]
    [InlineData("usr1", new[] { 10 })]
    [InlineData("12 1", new[] { 12, -1 })]
    [InlineData("HUP;HUP", new[] { -1 })]
    [InlineData("", new int[0])]
    public void TryParse_ValidLists_GiveTheSignals(string text, int[] expected)
    {
        Assert.True(UpgradeSignalNames.TryParse(text, out var signals, out string? error));

        Assert.Null(error);
        Assert.Equal(expected.Select(n => (PosixSignal)n), signals);
    }

    [Fact]
    public void Format_RawNumbers_HaveNames()
    {
        Assert.Equal("SIGUSR2", UpgradeSignalNames.Format((PosixSignal)12));
        Assert.Equal("SIGHUP", UpgradeSignalNames.Format(PosixSignal.SIGHUP));
    }
}
