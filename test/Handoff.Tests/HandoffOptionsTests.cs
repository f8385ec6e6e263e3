namespace Handoff.Tests;

public sealed class HandoffOptionsTests
{
    [Fact]
    public void Validate_Defaults_AreValid()
    {
        var options = new HandoffOptions();

        Assert.Empty(options.Validate());
        Assert.Equal("SIGUSR2", options.UpgradeSignals);
        Assert.Equal(TimeSpan.FromSeconds(2), options.RollbackWindow);
        Assert.Equal(4, options.MaxDrainingGenerations);
        Assert.Equal(TimeSpan.FromSeconds(30), options.UpgradeTimeout);
        Assert.Equal(TimeSpan.FromSeconds(30), options.DrainTimeout);
        Assert.Equal(TimeSpan.FromSeconds(1), options.DrainIdleTimeout);
        Assert.Null(options.PidFile);
    }

    [Fact]
    public void Validate_AbsurdDuration_SaysBareNumbersAreDays()
    {
        var options = new HandoffOptions { DrainTimeout = TimeSpan.FromDays(30) };

        var error = Assert.Single(options.Validate());

        Assert.Contains("Handoff:DrainTimeout", error, StringComparison.Ordinal);
        Assert.Contains("30s", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_ZeroTimeout_NamesTheOption()
    {
        var options = new HandoffOptions { UpgradeTimeout = TimeSpan.Zero };

        var error = Assert.Single(options.Validate());

        Assert.Contains("Handoff:UpgradeTimeout", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_IdleTimeoutNotShorterThanDrain_NamesBoth()
    {
        var options = new HandoffOptions { DrainTimeout = TimeSpan.FromSeconds(2), DrainIdleTimeout = TimeSpan.FromSeconds(2) };

        var error = Assert.Single(options.Validate());

        Assert.Contains("Handoff:DrainIdleTimeout", error, StringComparison.Ordinal);
        Assert.Contains("Handoff:DrainTimeout", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("SIGTERM")]
    [InlineData("SIGINT")]
    [InlineData("15")]
    [InlineData("USR3")]
    public void Validate_SignalThatMeansShutdownOrUnknown_IsRejected(string signals)
    {
        var options = new HandoffOptions { UpgradeSignals = signals };

        var error = Assert.Single(options.Validate());

        Assert.Contains("Handoff:UpgradeSignals", error, StringComparison.Ordinal);
        Assert.Contains(signals, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_PidFileThatIsADirectory_IsRejected()
    {
        var options = new HandoffOptions { PidFile = "/run/" };

        Assert.Contains("Handoff:PidFile", Assert.Single(options.Validate()), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(null, null, null)]
    [InlineData(null, "/run/myapp", "/run/myapp/handoff.sock")]
    [InlineData(null, "/run/myapp:/run/other", "/run/myapp/handoff.sock")]
    [InlineData(null, "relative", null)]
    [InlineData("/srv/c.sock", "/run/myapp", "/srv/c.sock")]
    [InlineData("none", "/run/myapp", null)]
    public void ResolveControlSocket_DefaultsToTheRuntimeDirectory(string? configured, string? runtimeDirectory, string? expected) =>
        Assert.Equal(expected, new HandoffOptions { ControlSocket = configured }.ResolveControlSocket(runtimeDirectory));

    [Theory]
    [InlineData("control.sock", "must be the absolute path of a socket file")]
    [InlineData("/run/dir/", "must be the absolute path of a socket file")]
    public void Validate_ControlSocketNotAnAbsoluteFilePath_NamesIt(string path, string expected) =>
        Assert.Contains(new HandoffOptions { ControlSocket = path }.Validate(), e => e.Contains("Handoff:ControlSocket", StringComparison.Ordinal) && e.Contains(expected, StringComparison.Ordinal));

    [Fact]
    public void Validate_ControlSocketLongerThanAUnixPath_NamesIt() =>
        Assert.Contains(new HandoffOptions { ControlSocket = "/" + new string('a', 120) }.Validate(), e => e.Contains("longer than a Unix socket path can be", StringComparison.Ordinal));
}
