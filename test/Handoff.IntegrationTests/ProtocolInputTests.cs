using System.Diagnostics;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>A new generation started with a malformed, forged or stale handover refuses to
/// start, names what is wrong, and exits non-zero.</summary>
public sealed class ProtocolInputTests
{
    [Theory]
    [InlineData("garbage", "is malformed")]
    [InlineData("v1;parent=1;generation=2;listen=;ready=3", "names parent pid 1, but this process's parent is")]
    [InlineData("v1;parent=$PPID;generation=2;listen=;ready=3", "fd 3 is not an open pipe")]
    [InlineData("v1;parent=$PPID;generation=2;listen=3;ready=4", "Inherited fd 3 (named in HANDOFF_HANDOVER) is not a socket")]
    [InlineData("v1;parent=$PPID;generation=2;listen=5;ready=6", "descriptors must be consecutive from 3")]
    public async Task Start_BadHandoverVariable_ExitsNonZeroNamingTheProblem(string value, string expected)
    {
        // bash places a file at fd 3 and a pipe at fd 4, then execs HelloSleep, whose parent
        // is then this test process ($PPID in bash).
        var info = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add($"exec 3</etc/hostname 4> >(cat >/dev/null); HANDOFF_HANDOVER=\"{value}\" exec \"$0\" --urls http://127.0.0.1:0");
        info.ArgumentList.Add(TestAssets.HelloSleepAppHost);
        var (exitCode, output) = await RunToExitAsync(info);

        Assert.NotEqual(0, exitCode);
        Assert.Contains("HANDOFF_HANDOVER", output, StringComparison.Ordinal);
        Assert.Contains(expected.Replace("$PPID", "", StringComparison.Ordinal), output, StringComparison.Ordinal);
        Assert.DoesNotContain("Now listening on", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--Handoff:DrainTimeout=-00:00:01", "Handoff:DrainTimeout")]
    [InlineData("--Handoff:UpgradeSignals=SIGTERM", "Handoff:UpgradeSignals")]
    public async Task Start_InvalidOption_ExitsNonZeroNamingTheOption(string argument, string option)
    {
        var info = new ProcessStartInfo(TestAssets.HelloSleepAppHost)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add("--urls");
        info.ArgumentList.Add("http://127.0.0.1:0");
        info.ArgumentList.Add(argument);
        var (exitCode, output) = await RunToExitAsync(info);

        Assert.NotEqual(0, exitCode);
        Assert.Contains(option, output, StringComparison.Ordinal);
        Assert.DoesNotContain("Now listening on", output, StringComparison.Ordinal);
    }

    /// <summary>Runs a process that is expected to exit by itself (bounded by a minute) and
    /// returns its exit code and everything it wrote.</summary>
    private static async Task<(int ExitCode, string Output)> RunToExitAsync(ProcessStartInfo info)
    {
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await stdout + await stderr);
    }
}
