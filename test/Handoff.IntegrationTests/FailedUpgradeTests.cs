using System.Text.RegularExpressions;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>New builds that crash, throw or hang: the old generation keeps serving, loses no
/// request, stops the failed process, and a later upgrade succeeds.</summary>
public sealed partial class FailedUpgradeTests
{
    [Fact]
    public async Task Upgrade_AppDllReplacedByGarbage_FailsAndOldKeepsServing()
    {
        // A deployable copy run as "dotnet TestServer.dll", so the test can replace the dll.
        string app = TestAssets.CreateTempDirectory();
        try
        {
            TestAssets.CopyTestServerTo(app);

            string dll = Path.Combine(app, "TestServer.dll");
            await using var server = await ServerProcess.StartAsync(command: ["dotnet", dll]);
            var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
            try
            {
                await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));

                // Deploy like a real deploy does: a new file renamed over the old one.
                ReplaceFile(dll, [0x42, 0x52, 0x4f, 0x4b, 0x45, 0x4e]);
                int failedPid = await UpgradeExpectingFailureAsync(server, "exited", "exited");
                Assert.Null(ProcessTable.State(failedPid));

                await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
                ReplaceFile(dll, File.ReadAllBytes(Path.Combine(TestAssets.TestServerDirectory, "TestServer.dll")));
                var (_, newPid, exit) = await server.UpgradeAsync();
                Assert.True(exit is 0 or null, $"old generation exited with {exit}");
                await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
                Assert.Equal(newPid, await server.GetPidAsync());
            }
            finally
            {
                var report = await load.StopAsync();
                Assert.True(report.Failures.Count == 0, report.ToString());
            }
        }
        finally
        {
            Directory.Delete(app, recursive: true);
        }
    }

    [Theory]
    [InlineData("FAILSTART", "unhandled exception: InvalidOperationException: TestServer:FailStart is set", "start_failed")]
    [InlineData("FAILWARMUP", "warm-up failed: InvalidOperationException: TestServer:FailWarmUp is set", "start_failed")]
    [InlineData("NEVERREADY", "did not report ready within 3 s", "timeout")]
    public async Task Upgrade_NewBuildBroken_FailsWithReasonAndLaterUpgradeSucceeds(string breakage, string expectedReason, string errorType)
    {
        string marker = Path.Combine(Path.GetTempPath(), "handoff-break-" + Guid.NewGuid().ToString("N"));
        await using var server = await ServerProcess.StartAsync(
            arguments: ["--Handoff:UpgradeTimeout=00:00:03"],
            environment: new Dictionary<string, string> { ["TESTSERVER_BREAK_" + breakage] = marker });
        var load = new LoadClient(server.EndPoint, connections: 16, keepAlive: true);
        try
        {
            await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
            File.WriteAllText(marker, "broken");
            int failedPid = await UpgradeExpectingFailureAsync(server, expectedReason, errorType);
            Assert.Null(ProcessTable.State(failedPid));

            // Only the first generation is left, and it still serves.
            Assert.Equal(server.FirstPid, await server.GetPidAsync());
            Assert.Empty(ProcessTable.Descendants(server.FirstPid));

            File.Delete(marker);
            var (oldPid, newPid, exit) = await server.UpgradeAsync();
            Assert.Equal(server.FirstPid, oldPid);
            Assert.Equal(0, exit);
            await load.WaitForProgressAsync(100, TimeSpan.FromSeconds(30));
            Assert.Equal(newPid, await server.GetPidAsync());
        }
        finally
        {
            File.Delete(marker);
            var report = await load.StopAsync();
            Assert.True(report.Failures.Count == 0, report.ToString());
        }
    }

    /// <summary>Signals the current generation, waits for its "upgrade failed" log line
    /// containing <paramref name="expectedReason"/> and, at its end, <paramref name="errorType"/>
    /// (the metrics' error.type), checks that the same generation still accepts, and returns
    /// the failed generation's pid.</summary>
    private static async Task<int> UpgradeExpectingFailureAsync(ServerProcess server, string expectedReason, string errorType)
    {
        int pid = server.CurrentPid;
        int failuresBefore = FailedRegex().Count(server.Output);
        ServerProcess.Signal(pid, 12);
        await server.WaitUntilAsync(() => FailedRegex().Count(server.Output) > failuresBefore, ServerProcess.StartTimeout, "the upgrade to fail");
        var failure = FailedRegex().Matches(server.Output)[failuresBefore];
        Assert.Equal(pid, int.Parse(failure.Groups["pid"].Value, System.Globalization.CultureInfo.InvariantCulture));
        string rest = server.Output[failure.Index..];
        int end = rest.IndexOf('\n', StringComparison.Ordinal);
        string line = end >= 0 ? rest[..end] : rest;
        Assert.Contains(expectedReason, rest[..Math.Min(rest.Length, 2000)], StringComparison.Ordinal);
        Assert.EndsWith($"[{errorType}]", line.TrimEnd(), StringComparison.Ordinal);
        Assert.Equal(pid, server.CurrentPid);
        int failedPid = int.Parse(failure.Groups["new"].Value, System.Globalization.CultureInfo.InvariantCulture);
        server.Track(failedPid);
        return failedPid;
    }

    private static void ReplaceFile(string path, byte[] content)
    {
        string temporary = path + ".new";
        File.WriteAllBytes(temporary, content);
        File.Move(temporary, path, overwrite: true);
    }

    [GeneratedRegex(@"\(pid (?<pid>\d+)\): upgrade to pid (?<new>\d+) failed")]
    private static partial Regex FailedRegex();
}
