namespace Handoff.Tests;

public sealed class StartCommandTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-cmd-").FullName;

    [Fact]
    public void Capture_VariableSet_HasArgvAndLeavesTheVariableOut()
    {
        Environment.SetEnvironmentVariable(HandoverEnvironment.VariableName, "v2;stale");
        try
        {
            var command = StartCommand.Capture("/srv/app");

            Assert.NotEmpty(command.Arguments);
            Assert.Equal("/srv/app", command.WorkingDirectory);
            Assert.DoesNotContain(command.Environment, e => e.Key == HandoverEnvironment.VariableName);
            Assert.Contains(command.Environment, e => e.Key == "PATH");
        }
        finally
        {
            Environment.SetEnvironmentVariable(HandoverEnvironment.VariableName, null);
        }
    }

    [Fact]
    public void LogicalCurrentDirectory_PwdIsASymlinkToTheCurrentDirectory_KeepsTheLink()
    {
        string link = Path.Combine(_directory, "current");
        Directory.CreateSymbolicLink(link, Directory.GetCurrentDirectory());

        Assert.Equal(link, StartCommand.LogicalCurrentDirectory(link));
        Assert.Equal(Directory.GetCurrentDirectory(), StartCommand.LogicalCurrentDirectory(_directory));
        Assert.Equal(Directory.GetCurrentDirectory(), StartCommand.LogicalCurrentDirectory("relative/path"));
        Assert.Equal(Directory.GetCurrentDirectory(), StartCommand.LogicalCurrentDirectory(null));
        Assert.Equal(Directory.GetCurrentDirectory(), StartCommand.LogicalCurrentDirectory(link + "/../current"));
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
