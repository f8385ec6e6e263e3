namespace Handoff.Tests;

public sealed class ShadowCopyTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-shadow-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Parse_FormatRoundTrips_AndBadValuesAreRefusedWithTheReason()
    {
        var shadow = new ShadowCopy("/srv/app", "/tmp/root/g1-abc");
        Assert.Equal(shadow, ShadowCopy.Parse(shadow.Format(), out string? none));
        Assert.Null(none);
        Assert.Equal("/tmp/root", shadow.Root);
        Assert.Null(ShadowCopy.Parse(null, out _));

        Assert.Null(ShadowCopy.Parse("v1;source=relative;copy=/x", out string? error));
        Assert.Contains("absolute paths", error, StringComparison.Ordinal);
        Assert.Null(ShadowCopy.Parse("v9;source=/a;copy=/b", out _));
    }

    [Fact]
    public void MoveTo_MovesArgumentsUnderTheCopyAndTheWorkingDirectory_AndSetsTheVariable()
    {
        var shadow = new ShadowCopy("/srv/app", "/r/g1-a");
        var command = new StartCommand(["/usr/bin/dotnet", "/r/g1-a/App.dll", "--urls", "http://x", "/r/g1-ab/other"], "/r/g1-a/sub", [KeyValuePair.Create("A", "1"), KeyValuePair.Create(ShadowCopy.VariableName, "old")]);

        var moved = shadow.MoveTo(command, "/r/g2-b");

        Assert.Equal(["/usr/bin/dotnet", "/r/g2-b/App.dll", "--urls", "http://x", "/r/g1-ab/other"], moved.Arguments);
        Assert.Equal("/r/g2-b/sub", moved.WorkingDirectory);
        Assert.Equal("v1;source=/srv/app;copy=/r/g2-b", Assert.Single(moved.Environment, e => e.Key == ShadowCopy.VariableName).Value);
        Assert.Contains(KeyValuePair.Create("A", "1"), moved.Environment);
    }

    [Fact]
    public void ApplicationDirectory_DotnetDll_Apphost_OrWhyNot()
    {
        string app = Path.Combine(_directory, "app");
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "App.dll"), "");
        File.WriteAllText(Path.Combine(app, "App"), "");
        string? Resolve(string name) => name == "dotnet" ? "/usr/bin/dotnet" : Path.GetFullPath(name, app);

        Assert.Equal(app, ShadowCopy.ApplicationDirectory(["dotnet", "--roll-forward", "App.dll"], app, Resolve, out _));
        Assert.Equal(app, ShadowCopy.ApplicationDirectory([Path.Combine(app, "App"), "--urls", "x"], "/", Resolve, out _));
        Assert.Null(ShadowCopy.ApplicationDirectory(["dotnet", "run"], app, Resolve, out string? error));
        Assert.Contains("cannot tell which directory to copy", error, StringComparison.Ordinal);
    }

    [Fact]
    public void CreateCopy_CopiesTheTree_PruneDeletesOnlyCopiesWhoseOwnerIsGone()
    {
        string source = Path.Combine(_directory, "app");
        Directory.CreateDirectory(Path.Combine(source, "wwwroot"));
        File.WriteAllText(Path.Combine(source, "App.dll"), "v1");
        File.WriteAllText(Path.Combine(source, "wwwroot", "index.html"), "hi");
        File.SetUnixFileMode(Path.Combine(source, "App.dll"), (UnixFileMode)0b111_101_101);
        string root = Path.Combine(_directory, "root");
        Directory.CreateDirectory(root);

        string first = ShadowCopy.CreateCopy(source, root, 1);
        Assert.StartsWith(Path.Combine(root, "g1-"), first, StringComparison.Ordinal);
        Assert.Equal("hi", File.ReadAllText(Path.Combine(first, "wwwroot", "index.html")));
        Assert.Equal((UnixFileMode)0b111_101_101, File.GetUnixFileMode(Path.Combine(first, "App.dll")));

        // Owned by this (live) process: kept. Owned by a process that is gone: deleted.
        ShadowCopy.SetOwner(first, Environment.ProcessId);
        string second = ShadowCopy.CreateCopy(source, root, 2);
        File.WriteAllText(second + ".owner", "999999999:1");
        string third = ShadowCopy.CreateCopy(source, root, 3);

        Assert.True(Directory.Exists(first));
        Assert.False(Directory.Exists(second));
        Assert.False(File.Exists(second + ".owner"));
        Assert.True(Directory.Exists(third));
    }

    [Fact]
    public void CreateCopy_FifoSymlinkLoopAndSocket_CopiesLinksAsLinks_LeavesSpecialFilesOut()
    {
        string source = Path.Combine(_directory, "app");
        Directory.CreateDirectory(source);
        File.WriteAllText(Path.Combine(source, "App.dll"), "v1");
        File.CreateSymbolicLink(Path.Combine(source, "loop"), ".");
        File.CreateSymbolicLink(Path.Combine(source, "config.json"), "App.dll");
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", Path.Combine(source, "pipe"))!)
        {
            mkfifo.WaitForExit();
            Assert.Equal(0, mkfifo.ExitCode);
        }

        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        socket.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(Path.Combine(source, "control.sock")));
        string root = Path.Combine(_directory, "root");

        // A FIFO would block File.Copy forever; a followed loop would never end.
        string copy = ShadowCopy.CreateCopy(source, root, 2);

        Assert.Equal(["App.dll", "config.json", "loop"], Directory.GetFileSystemEntries(copy).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(".", new FileInfo(Path.Combine(copy, "loop")).LinkTarget);
        Assert.Equal("v1", File.ReadAllText(Path.Combine(copy, "config.json")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(root));
    }

    [Fact]
    public void CreateCopy_Cancelled_FailsAndLeavesNothing()
    {
        string source = Path.Combine(_directory, "app");
        Directory.CreateDirectory(source);
        File.WriteAllText(Path.Combine(source, "App.dll"), "v1");
        string root = Path.Combine(_directory, "root");

        var e = Assert.Throws<IOException>(() => ShadowCopy.CreateCopy(source, root, 2, new CancellationToken(canceled: true)));

        Assert.Contains("took too long, or this generation began stopping", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public void CreateCopy_SourceGone_ThrowsNamingIt_AndLeavesNothing()
    {
        string root = Path.Combine(_directory, "root");
        Directory.CreateDirectory(root);

        var e = Assert.Throws<IOException>(() => ShadowCopy.CreateCopy(Path.Combine(_directory, "missing"), root, 2));

        Assert.Contains("cannot make the shadow copy of", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(root));
    }
}
