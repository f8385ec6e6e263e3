namespace Handoff.Tests;

public sealed class StartCommandTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-cmd-").FullName;

    [Fact]
    public void Capture_ThisProcess_HasArgvAndNoHandoffVariable()
    {
        var command = StartCommand.Capture();

        Assert.NotEmpty(command.Arguments);
        Assert.Equal(Directory.GetCurrentDirectory(), command.WorkingDirectory);
        Assert.DoesNotContain(command.Environment, e => e.Key == HandoverEnvironment.VariableName);
    }

    [Fact]
    public void ResolveExecutable_RelativePath_IsResolvedAgainstStartDirectoryWithoutFollowingLinks()
    {
        string real = CreateExecutable("app-v1");
        string link = Path.Combine(_directory, "current");
        File.CreateSymbolicLink(link, real);
        var command = new StartCommand(["./current", "--urls", "x"], _directory, []);

        Assert.Equal(link, command.ResolveExecutable());
    }

    [Fact]
    public void ResolveExecutable_BareName_IsLookedUpOnTheStartPath()
    {
        string exe = CreateExecutable("myserver");
        var command = new StartCommand(["myserver"], "/", [KeyValuePair.Create("PATH", "/nonexistent:" + _directory)]);

        Assert.Equal(exe, command.ResolveExecutable());
    }

    [Fact]
    public void ResolveExecutable_Removed_ThrowsNamingThePath()
    {
        var command = new StartCommand([Path.Combine(_directory, "gone")], "/", []);

        var e = Assert.Throws<FileNotFoundException>(command.ResolveExecutable);

        Assert.Contains(Path.Combine(_directory, "gone"), e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ResolveExecutable_NotExecutable_Throws()
    {
        string file = Path.Combine(_directory, "plain");
        File.WriteAllText(file, "");
        var command = new StartCommand([file], "/", []);

        Assert.Throws<FileNotFoundException>(command.ResolveExecutable);
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string CreateExecutable(string name)
    {
        string path = Path.Combine(_directory, name);
        File.WriteAllText(path, "#!/bin/sh\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }
}
