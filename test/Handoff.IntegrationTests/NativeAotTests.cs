using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>samples/HelloAot published as a NativeAOT executable (about a minute of publish on 2
/// cores, hence a slow scenario): it upgrades under load like the JIT build, and each new
/// generation is the same native executable started again.</summary>
public sealed class NativeAotTests
{
    [SlowFact]
    [Trait("Category", "Slow")]
    public async Task Published_FiveUpgradesUnderKeepAliveLoad_ZeroFailedRequests_EveryGenerationTheNativeExecutable()
    {
        Assert.True(File.Exists("/usr/bin/clang"), "NativeAOT needs Debian's clang and zlib1g-dev: apt-get install clang zlib1g-dev (bench/slow-tests installs them).");
        using var dir = new TempDirectory();
        string output = Path.Combine(dir.Path, "publish");
        var publish = await ToolRun.RunProcessAsync("dotnet", ["publish", Path.Combine(TestAssets.RepositoryRoot, "samples/HelloAot"), "-c", "Release", "-r", "linux-x64", "-o", output, "--nologo"], TestAssets.RepositoryRoot, TimeSpan.FromMinutes(10));
        Assert.True(publish.ExitCode == 0, publish.ToString());
        Assert.DoesNotContain(": warning ", publish.Output, StringComparison.Ordinal);
        string executable = Path.Combine(output, "HelloAot");
        Assert.False(File.Exists(Path.Combine(output, "HelloAot.dll")), "a NativeAOT publish has no managed entry assembly");

        await using var server = await ServerProcess.StartAsync(command: [executable], arguments: ["--Handoff:RollbackWindow=500ms"]);
        var (report, pids) = await server.UpgradeUnderLoadAsync(new LoadClient(server.EndPoint, connections: 16, keepAlive: true), 5);

        Assert.True(report.Failures.Count == 0, report.ToString());
        Assert.Equal(6, pids.Count);
        Assert.Equal(executable, new FileInfo($"/proc/{pids[^1]}/exe").LinkTarget);
    }
}
