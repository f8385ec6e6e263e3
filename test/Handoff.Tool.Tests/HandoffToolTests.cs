using System.Reflection;
using Handoff.Tool;

namespace Handoff.Tests.Tool;

public sealed class HandoffToolTests
{
    [Theory]
    [InlineData("--version")]
    [InlineData("-V")]
    public async Task RunAsync_Version_PrintsTheInformationalVersion(string argument)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();

        int code = await HandoffTool.RunAsync([argument], output, error);

        string expected = typeof(HandoffTool).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
        Assert.Equal(0, code);
        Assert.Equal($"handoff {expected}\n", output.ToString().ReplaceLineEndings("\n"));
        Assert.StartsWith("0.", expected, StringComparison.Ordinal);
        Assert.Empty(error.ToString());
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("upgrade", "--help")]
    public async Task RunAsync_Help_EndsWithANewLine(params string[] args)
    {
        using var output = new StringWriter();

        int code = await HandoffTool.RunAsync(args, output, TextWriter.Null);

        Assert.Equal(0, code);
        Assert.Matches(@"[^\n]\n\z", output.ToString().ReplaceLineEndings("\n"));
        Assert.Contains(args.Length == 1 ? "-V, --version" : "--control PATH", output.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_MisspeltCommand_SuggestsTheCommand()
    {
        using var error = new StringWriter();

        int code = await HandoffTool.RunAsync(["upgarde"], TextWriter.Null, error);

        Assert.Equal(ToolExitCodes.CouldNotAsk, code);
        Assert.StartsWith("handoff: unknown command 'upgarde' (did you mean 'upgrade'?)\n", error.ToString().ReplaceLineEndings("\n"), StringComparison.Ordinal);
        Assert.Matches(@"[^\n]\n\z", error.ToString().ReplaceLineEndings("\n"));
    }
}
