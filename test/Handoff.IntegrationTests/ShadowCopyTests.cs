using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary><c>handoff run --shadow-copy</c>: a deploy that overwrites the running build's files
/// in place (same inodes, the unsafe habit) under load, then an upgrade to what is now there.</summary>
public sealed class ShadowCopyTests
{
    [Fact]
    public async Task InPlaceCopyOverTheRunningBuild_UnderLoad_NothingFails_AndTheNextUpgradeRunsTheNewBuild()
    {
        using var work = new TempDirectory();
        string app = Path.Combine(work.Path, "app");
        string shadows = Path.Combine(work.Path, "shadows");
        Directory.CreateDirectory(shadows);
        TestAssets.CopyTestServerTo(app);
        string dll = Path.Combine(app, "TestServer.dll");

        await using var server = await SupervisedServer.StartAsync(pidNamespace: false, runOptions: ["--shadow-copy-dir", shadows], command: ["dotnet", dll]);
        string root = Assert.Single(Directory.GetDirectories(shadows));
        int first = (await server.StatusAsync()).GetProperty("pid").GetInt32();

        // The serving generation maps its own copy of the build, nothing in the app directory.
        Assert.Contains(MappedFiles(first), f => f.StartsWith(root + "/", StringComparison.Ordinal) && f.EndsWith("/TestServer.dll", StringComparison.Ordinal));
        Assert.DoesNotContain(MappedFiles(first), f => f.StartsWith(app + "/", StringComparison.Ordinal));

        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        LoadReport report;
        try
        {
            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));

            // "cp -r new/* /srv/app/": every file rewritten in place, the dll with other bytes.
            ulong inode = ProcessTable.Inode(dll);
            foreach (string file in Directory.GetFiles(app))
            {
                OverwriteInPlace(file, file == dll ? NewBuild(File.ReadAllBytes(dll)) : File.ReadAllBytes(file));
            }

            Assert.Equal(inode, ProcessTable.Inode(dll));
            await load.WaitForProgressAsync(2000, TimeSpan.FromSeconds(30));
            Assert.True(ProcessTable.IsRunning(first), "the serving generation died after its files were overwritten in place");

            var upgrade = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket]);
            Assert.True(upgrade.ExitCode == 0, upgrade.ToString());
            await server.WaitForOutputAsync("exited with code 0");
            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));

            string body = (await HttpProbe.GetAsync(server.EndPoint, "/?sleep=0", TimeSpan.FromSeconds(10))).Body;
            Assert.Contains("build:testserver-build-0002", body, StringComparison.Ordinal);
            Assert.Contains($"base:{root}/g2-", body, StringComparison.Ordinal);

            // The next copy deletes the one whose generation has exited.
            var again = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket]);
            Assert.True(again.ExitCode == 0, again.ToString());
            Assert.DoesNotContain(Directory.GetDirectories(root), d => Path.GetFileName(d).StartsWith("g1-", StringComparison.Ordinal));
        }
        finally
        {
            report = await load.StopAsync();
        }

        Assert.True(report.Failures.Count == 0, report.ToString());
        ServerProcess.Signal(server.SupervisorPid, 15);
        Assert.Equal(0, await server.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.False(Directory.Exists(root), "the supervisor leaves its shadow copies behind");
    }

    [Fact]
    public async Task Upgrade_ShadowCopyCannotBeMade_FailsWithTheReason_ServerUnchanged()
    {
        using var work = new TempDirectory();
        string app = Path.Combine(work.Path, "app");
        string shadows = Path.Combine(work.Path, "shadows");
        Directory.CreateDirectory(shadows);
        TestAssets.CopyTestServerTo(app);
        await using var server = await SupervisedServer.StartAsync(pidNamespace: false, runOptions: ["--shadow-copy-dir", shadows], command: ["dotnet", Path.Combine(app, "TestServer.dll")]);
        int pid = (await server.StatusAsync()).GetProperty("pid").GetInt32();

        // The application directory vanished (a deploy script removed it): nothing to copy.
        Directory.Move(app, app + ".gone");
        var upgrade = await ToolRun.RunAsync(["upgrade", "--control", server.ControlSocket]);

        Assert.True(upgrade.ExitCode == 1, upgrade.ToString());
        Assert.Contains("cannot make the shadow copy of", upgrade.Error, StringComparison.Ordinal);
        Assert.Equal(pid, (await server.StatusAsync()).GetProperty("pid").GetInt32());
        string root = Assert.Single(Directory.GetDirectories(shadows));
        Assert.Single(Directory.GetDirectories(root)); // generation 1's copy only
    }

    private static byte[] NewBuild(byte[] dll) => TestAssets.WithBuildMarker(dll, "testserver-build-0002");

    private static void OverwriteInPlace(string path, byte[] bytes)
    {
        // Truncate and write through the same inode, as cp does onto an existing file.
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write);
        file.SetLength(0);
        file.Write(bytes);
    }

    private static List<string> MappedFiles(int pid) =>
        [.. File.ReadLines($"/proc/{pid}/maps").Select(l => l.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries)).Where(f => f.Length == 6).Select(f => f[5].Trim()).Distinct()];
}
