using Handoff.Tool;

namespace Handoff.Tests.Tool;

public sealed class ArgumentsTests
{
    private static readonly string[] Valued = ["control", "timeout", "pid"];
    private static readonly string[] Flags = ["json"];

    [Fact]
    public void Parse_ValuesFlagsAndTheCommandAfterDashes()
    {
        var parsed = Arguments.Parse(["--control", "/run/a.sock", "--timeout=5s", "--json", "--", "dotnet", "--json", "app.dll"], Valued, Flags);

        Assert.Equal("/run/a.sock", parsed.Value("control"));
        Assert.Equal(TimeSpan.FromSeconds(5), parsed.Duration("timeout", TimeSpan.Zero));
        Assert.True(parsed.Has("json"));
        Assert.Equal(["dotnet", "--json", "app.dll"], parsed.Rest);
    }

    [Theory]
    [InlineData("unknown option '--bogus'", "--bogus")]
    [InlineData("unknown option '--jsno' (did you mean '--json'?)", "--jsno")]
    [InlineData("unknown option '--controll=/a' (did you mean '--control'?)", "--controll=/a")]
    [InlineData("--control needs a value", "--control")]
    [InlineData("--json takes no value", "--json=yes")]
    [InlineData("unexpected argument 'upgrade'", "upgrade")]
    public void Parse_Mistake_NamesIt(string expected, string argument)
    {
        var e = Assert.Throws<UsageException>(() => Arguments.Parse([argument], Valued, Flags));
        Assert.Equal(expected, e.Message);
    }

    [Theory]
    [InlineData("30", "has no unit")]
    [InlineData("-1s", "is not a duration")]
    [InlineData("0s", "must be positive")]
    public void Duration_BadValue_SaysWhy(string value, string expected)
    {
        var parsed = Arguments.Parse(["--timeout", value], Valued, Flags);
        var e = Assert.Throws<UsageException>(() => parsed.Duration("timeout", TimeSpan.Zero));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Pid_NotANumber_IsAUsageError() =>
        Assert.Throws<UsageException>(() => Arguments.Parse(["--pid", "abc"], Valued, Flags).Pid("pid"));

    [Fact]
    public void Parse_DeclaredOptions_TakesValuesAndFlagsAsDeclared()
    {
        ToolOption[] options = [new("control", "PATH", "the socket"), new("json", null, "as JSON")];

        var parsed = Arguments.Parse(["--control", "/a", "--json"], options);

        Assert.Equal("/a", parsed.Value("control"));
        Assert.True(parsed.Has("json"));
        Assert.Equal("--json takes no value", Assert.Throws<UsageException>(() => Arguments.Parse(["--json=1"], options)).Message);
        Assert.Equal("--control needs a value", Assert.Throws<UsageException>(() => Arguments.Parse(["--control"], options)).Message);
    }

    [Fact]
    public void Describe_PutsEveryDescriptionInOneColumn_ContinuationLinesToo()
    {
        ToolOption[] options = [new("control", "PATH", "the socket\nof the server"), new("json", null, "as JSON")];

        Assert.Equal(
            "  --control PATH   the socket\n                   of the server\n  --json           as JSON",
            ToolOption.Describe(options).ReplaceLineEndings("\n"));
    }
}
