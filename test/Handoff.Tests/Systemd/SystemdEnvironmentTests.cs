namespace Handoff.Tests.Systemd;

public sealed class SystemdEnvironmentTests
{
    [Fact]
    public void Parse_NotAService_Nothing()
    {
        var parsed = SystemdEnvironment.Parse(_ => null, 100);

        Assert.Null(parsed.NotifySocket);
        Assert.Null(parsed.WatchdogInterval);
        Assert.Empty(parsed.ActivatedFds);
        Assert.Empty(parsed.Warnings);
    }

    [Fact]
    public void Parse_Service_ReadsSocketWatchdogAndActivatedSockets()
    {
        var parsed = SystemdEnvironment.Parse(Variables(("NOTIFY_SOCKET", "/run/systemd/notify"), ("WATCHDOG_USEC", "3000000"), ("WATCHDOG_PID", "100"), ("LISTEN_PID", "100"), ("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "web:admin")), 100);

        Assert.Equal("/run/systemd/notify", parsed.NotifySocket);
        Assert.Equal(TimeSpan.FromSeconds(3), parsed.WatchdogInterval);
        Assert.Equal([(3, "web"), (4, "admin")], parsed.ActivatedFds);
        Assert.Equal(["NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=3000000"], parsed.ForNewGeneration());
    }

    [Fact]
    public void Parse_VariablesForAnotherProcess_Ignored()
    {
        // sd_listen_fds(3) and sd_watchdog_enabled(3): the pid variables must name this process.
        var parsed = SystemdEnvironment.Parse(Variables(("WATCHDOG_USEC", "3000000"), ("WATCHDOG_PID", "7"), ("LISTEN_PID", "7"), ("LISTEN_FDS", "1")), 100);

        Assert.Null(parsed.WatchdogInterval);
        Assert.Empty(parsed.ActivatedFds);
        Assert.Contains(parsed.Warnings, w => w.Contains("not for this process", StringComparison.Ordinal));
    }

    [Fact]
    public void Parse_WatchdogWithoutPid_AppliesToThisProcess()
    {
        // What the launcher passes to a new generation, whose pid it cannot know in advance.
        var parsed = SystemdEnvironment.Parse(Variables(("NOTIFY_SOCKET", "@abstract"), ("WATCHDOG_USEC", "500000")), 100);

        Assert.Equal("@abstract", parsed.NotifySocket);
        Assert.Equal(TimeSpan.FromMilliseconds(500), parsed.WatchdogInterval);
    }

    [Theory]
    [InlineData("NOTIFY_SOCKET", "relative/path", "neither an absolute path")]
    [InlineData("WATCHDOG_USEC", "soon", "not a positive number")]
    [InlineData("WATCHDOG_USEC", "0", "not a positive number")]
    [InlineData("LISTEN_FDS", "many", "not a count of sockets")]
    [InlineData("LISTEN_FDS", "100000", "not a count of sockets")]
    public void Parse_BadValue_WarnsAndIgnoresIt(string name, string value, string expected)
    {
        var parsed = SystemdEnvironment.Parse(Variables((name, value), ("LISTEN_PID", "100")), 100);

        Assert.Contains(parsed.Warnings, w => w.Contains(expected, StringComparison.Ordinal) && w.Contains(name, StringComparison.Ordinal));
        Assert.Null(parsed.NotifySocket);
        Assert.Null(parsed.WatchdogInterval);
        Assert.Empty(parsed.ActivatedFds);
    }

    [Fact]
    public void Parse_NamesCountMismatch_NamesUnknown()
    {
        var parsed = SystemdEnvironment.Parse(Variables(("LISTEN_PID", "100"), ("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "only-one")), 100);

        Assert.Equal([(3, "unknown"), (4, "unknown")], parsed.ActivatedFds);
    }

    private static Func<string, string?> Variables(params (string Name, string Value)[] values) =>
        name => values.FirstOrDefault(v => v.Name == name).Value;
}
