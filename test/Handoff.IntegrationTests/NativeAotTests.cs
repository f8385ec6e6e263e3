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
        Assert.True(HasClang(), NeedsClang);
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

    [SlowFact]
    [Trait("Category", "Slow")]
    public async Task HandoffTool_PublishedNativeAot_UpgradesAndReportsStatus()
    {
        Assert.True(HasClang(), NeedsClang);
        using var dir = new TempDirectory();
        string output = Path.Combine(dir.Path, "tool");
        var publish = await ToolRun.RunProcessAsync("dotnet", ["publish", Path.Combine(TestAssets.RepositoryRoot, "src/Handoff.Tool"), "-c", "Release", "-r", "linux-x64", "-p:PublishAot=true", "-p:PackAsTool=false", "-o", output, "--nologo"], TestAssets.RepositoryRoot, TimeSpan.FromMinutes(10));
        Assert.True(publish.ExitCode == 0, publish.ToString());
        Assert.DoesNotContain(": warning ", publish.Output, StringComparison.Ordinal);
        string tool = Path.Combine(output, "Handoff.Tool");
        Assert.False(File.Exists(Path.Combine(output, "Handoff.Tool.dll")), "a NativeAOT publish has no managed entry assembly");

        string control = Path.Combine(dir.Path, "control.sock");
        await using var server = await ServerProcess.StartAsync(arguments: [$"--Handoff:ControlSocket={control}", "--Handoff:RollbackWindow=500ms"]);
        int old = server.CurrentPid;
        var upgrade = await ToolRun.RunAsync(["upgrade", "--control", control], tool: tool);
        Assert.True(upgrade.ExitCode == 0, upgrade.ToString());
        Assert.Contains($"upgraded: pid {old} -> {server.CurrentPid}, generation 2", upgrade.Output, StringComparison.Ordinal);
        Assert.Contains("timeline: Handoff ", upgrade.Output, StringComparison.Ordinal);
        server.Track(server.CurrentPid);

        var status = await ToolRun.RunAsync(["status", "--control", control, "--json"], tool: tool);
        Assert.True(status.ExitCode == 0, status.ToString());
        using var answer = System.Text.Json.JsonDocument.Parse(status.Output);
        Assert.Equal(server.CurrentPid, answer.RootElement.GetProperty("pid").GetInt32());
        Assert.Equal(2, answer.RootElement.GetProperty("generation").GetInt32());
    }

    private const string NeedsClang = "NativeAOT needs Debian's clang and zlib1g-dev: apt-get install clang zlib1g-dev (bench/slow-tests installs them).";

    // The NativeAOT compiler links with clang, or with a versioned clang-N where only that is installed.
    private static bool HasClang() => Directory.GetFiles("/usr/bin", "clang*").Any(f => System.Text.RegularExpressions.Regex.IsMatch(Path.GetFileName(f), @"^clang(-\d+)?$"));
}
