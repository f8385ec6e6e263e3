using Handoff.AspNetCore;
using Microsoft.Extensions.Configuration;

namespace Handoff.Tests.AspNetCore;

public sealed class HandoffConfigurationTests
{
    [Theory]
    [InlineData("30s", 30_000)]
    [InlineData("500ms", 500)]
    [InlineData("1.5s", 1_500)]
    [InlineData("2m", 120_000)]
    [InlineData("1h", 3_600_000)]
    [InlineData("00:00:30", 30_000)]
    [InlineData(" 45S ", 45_000)]
    public void TryParseDuration_WithUnitOrClock_Parses(string text, double milliseconds)
    {
        Assert.True(HandoffConfiguration.TryParseDuration(text, out var value, out string? error), error);
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), value);
    }

    [Theory]
    [InlineData("30", "has no unit. Write 30s")]
    [InlineData("thirty", "is not a duration")]
    [InlineData("5d", "is not a duration")]
    [InlineData("1:xx", "hh:mm:ss")]
    [InlineData("NaNs", "not a duration Handoff accepts")]
    [InlineData("Infinityms", "not a duration Handoff accepts")]
    [InlineData("99999999999999999999s", "not a duration Handoff accepts")]
    [InlineData("-5s", "is not a duration")]
    public void TryParseDuration_BareNumberOrGarbage_IsRefusedWithAHint(string text, string expected)
    {
        Assert.False(HandoffConfiguration.TryParseDuration(text, out _, out string? error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{\"Handoff\": \"30s\"}", "Handoff is '30s', a single value: its options go under it")]
    [InlineData("{\"Handoff\": {\"DrainTimeout\": {\"x\": 1}}}", "Handoff:DrainTimeout is a section (it holds Handoff:DrainTimeout:x), not a value")]
    [InlineData("{\"Handoff\": {\"PidFile\": [\"/run/a.pid\"]}}", "Handoff:PidFile is a section (it holds Handoff:PidFile:0), not a value")]
    public void Bind_ShapeOfTheSectionWrong_IsAnErrorNamingIt_NotSilentlyIgnored(string json, string expected)
    {
        var configuration = new ConfigurationBuilder().AddJsonStream(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(json))).Build();
        var options = new HandoffOptions();

        var (errors, _) = HandoffConfiguration.Bind(configuration.GetSection("Handoff"), options);

        Assert.Contains(expected, Assert.Single(errors), StringComparison.Ordinal);
        Assert.Null(options.PidFile);
        Assert.Equal(new HandoffOptions().DrainTimeout, options.DrainTimeout);
    }

    [Fact]
    public void Bind_KnownKeysUnknownKeysAndBadValues_AreEachReported()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Handoff:DrainTimeout"] = "45s",
            ["Handoff:upgradeSignals"] = "SIGUSR1",
            ["Handoff:PidFile"] = "/run/x.pid",
            ["Handoff:MaxDrainingGenerations"] = "2",
            ["Handoff:DrainTimout"] = "10s",
            ["Handoff:UpgradeTimeout"] = "30",
        }).Build();
        var options = new HandoffOptions();

        var (errors, warnings) = HandoffConfiguration.Bind(configuration.GetSection("Handoff"), options);

        Assert.Equal(TimeSpan.FromSeconds(45), options.DrainTimeout);
        Assert.Equal("SIGUSR1", options.UpgradeSignals);
        Assert.Equal("/run/x.pid", options.PidFile);
        Assert.Equal(2, options.MaxDrainingGenerations);
        Assert.Equal(TimeSpan.FromSeconds(30), options.UpgradeTimeout);
        Assert.Contains("Handoff:UpgradeTimeout '30': has no unit", Assert.Single(errors), StringComparison.Ordinal);
        Assert.Contains("Handoff:DrainTimout is not a Handoff option", Assert.Single(warnings), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("DrainTimout", "(did you mean 'DrainTimeout'?)")]
    [InlineData("drainidletimeuot", "(did you mean 'DrainIdleTimeout'?)")]
    [InlineData("PidFiles", "(did you mean 'PidFile'?)")]
    [InlineData("Signals", "(did you mean 'UpgradeSignals'?)")]
    [InlineData("ControlSocketPath", "(did you mean 'ControlSocket'?)")]
    [InlineData("Verbose", "(misspelt?)")]
    public void Bind_UnknownKey_SuggestsTheClosestOption(string key, string expected)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { [$"Handoff:{key}"] = "5s" }).Build();

        var (errors, warnings) = HandoffConfiguration.Bind(configuration.GetSection("Handoff"), new HandoffOptions());

        Assert.Empty(errors);
        Assert.StartsWith($"Handoff:{key} is not a Handoff option and is ignored {expected}.", Assert.Single(warnings), StringComparison.Ordinal);
    }
}
