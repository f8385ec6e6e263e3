using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>Deploys as people do them: a <c>current</c> symlink flipped to a new release, and
/// rapid deploys while old generations still drain.</summary>
public sealed class DeployTests
{
    [Fact]
    public async Task CurrentSymlinkFlipped_RelativeArgv_NewGenerationRunsTheNewRelease()
    {
        string root = TestAssets.CreateTempDirectory();
        try
        {
            foreach (string release in new[] { "v1", "v2" })
            {
                TestAssets.CopyTestServerTo(Path.Combine(root, "releases", release));
            }

            string current = Path.Combine(root, "current");
            File.CreateSymbolicLink(current, Path.Combine(root, "releases", "v1"));

            // As a shell started it: cd /srv/app/current && dotnet TestServer.dll (PWD set).
            await using var server = await ServerProcess.StartAsync(
                command: ["dotnet", "TestServer.dll"],
                directory: current,
                pidFile: Path.Combine(root, "app.pid"),
                environment: new Dictionary<string, string> { ["PWD"] = current });
            Assert.Contains("/releases/v1/", (await HttpProbe.GetAsync(server.EndPoint, "/", TimeSpan.FromSeconds(30))).Body, StringComparison.Ordinal);

            string flipped = Path.Combine(root, "current.new");
            File.CreateSymbolicLink(flipped, Path.Combine(root, "releases", "v2"));
            // rename(2) over the old link, as "mv -T" does (File.Move follows the link).
            using (var mv = System.Diagnostics.Process.Start("mv", ["-T", flipped, current]))
            {
                await mv.WaitForExitAsync();
                Assert.Equal(0, mv.ExitCode);
            }

            var (_, next, exit) = await server.UpgradeAsync();

            Assert.Equal(0, exit);
            var response = await HttpProbe.GetAsync(server.EndPoint, "/", TimeSpan.FromSeconds(30));
            Assert.Equal(next, response.Pid);
            Assert.Contains("/releases/v2/", response.Body, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task RapidDeploys_WhileOlderGenerationsDrain_AreBoundedByMaxDrainingGenerations()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:MaxDrainingGenerations=1", "--Handoff:RollbackWindow=0s"]);
        int first = server.CurrentPid;
        var slow = await server.StartSlowRequestAsync(8); // keeps generation 1 draining

        int second = await server.UpgradeWithoutWaitingForExitAsync();
        ServerProcess.Signal(second, 12);
        await server.WaitForOutputAsync("older generations are still draining");

        Assert.Contains($"1 older generations are still draining (pids {first})", server.Output, StringComparison.Ordinal);
        Assert.Contains("Handoff:MaxDrainingGenerations (1)", server.Output, StringComparison.Ordinal);
        Assert.Equal(second, server.CurrentPid);
        Assert.Equal(second, await server.GetPidAsync());
        Assert.Equal(first, await slow);

        // Once generation 1 is gone, deploys go on.
        Assert.Equal(0, await server.WaitForExitAsync(first, TimeSpan.FromSeconds(30)));
        var (_, third, exit) = await server.UpgradeAsync();
        Assert.Equal(0, exit);
        Assert.Equal(third, await server.GetPidAsync());
    }


}
