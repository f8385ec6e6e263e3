using System.Diagnostics;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>A process started with a malformed, forged or stale handover refuses to start,
/// touches none of the descriptors it names, says what is wrong on one line, and exits with
/// code 76; invalid options exit with code 78. Never a stack trace.</summary>
public sealed class ProtocolInputTests
{
    [Theory]
    [InlineData("garbage", "is malformed", false)]
    [InlineData("garbage", "is malformed", true)]
    [InlineData("v2;parent=$PPID;generation=2;listen=;ready=4;ids=1;older=", "descriptors must be consecutive from 3", false)]
    [InlineData("v2;parent=$PPID;generation=2;listen=3;ready=4;ids=1,2;older=", "fd 3 named in the environment variable HANDOFF_HANDOVER is '/etc/hostname', not the 'socket:[1]'", false)]
    [InlineData("v2;parent=$PPID;generation=2;listen=3;ready=4;ids=1,2;older=", "fd 3 named in the environment variable HANDOFF_HANDOVER is '/etc/hostname', not the 'socket:[1]'", true)]
    [InlineData("v2;parent=1;generation=2;listen=;ready=9;ids=1;older=", "descriptors must be consecutive", true)]
    [InlineData("v2;parent=1;generation=2;listen=3,4,5;ready=6;ids=1,2,3,4;older=", "fd 3 named in the environment variable HANDOFF_HANDOVER is '/etc/hostname'", true)]
    public async Task Start_BadHandoverVariable_ExitsWithCode76NamingTheProblem(string value, string expected, bool startupHook)
    {
        // bash places a file at fd 3 and a pipe at fd 4, then execs TestServer, whose parent
        // is then this test process ($PPID in bash). With the startup hook the check runs before
        // Main, as in a real upgrade; without it, in UseHandoff().
        var info = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add($"exec 3</etc/hostname 4> >(cat >/dev/null); HANDOFF_HANDOVER=\"{value}\" exec \"$0\" --urls http://127.0.0.1:0");
        info.ArgumentList.Add(TestAssets.TestServerAppHost);
        if (startupHook)
        {
            info.Environment["DOTNET_STARTUP_HOOKS"] = "Handoff";
        }

        var (exitCode, output) = await RunToExitAsync(info);

        Assert.True(exitCode == 76, $"exit code {exitCode}:\n{output}");
        Assert.Contains("Handoff: cannot start pid", output, StringComparison.Ordinal);
        Assert.Contains("HANDOFF_HANDOVER", output, StringComparison.Ordinal);
        Assert.Contains(expected.Replace("$PPID", "", StringComparison.Ordinal), output, StringComparison.Ordinal);
        Assert.DoesNotContain("Now listening on", output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--Handoff:DrainTimeout=-00:00:01", "Handoff:DrainTimeout")]
    [InlineData("--Handoff:DrainTimeout=30", "Handoff:DrainTimeout '30': has no unit. Write 30s")]
    [InlineData("--Handoff:UpgradeSignals=SIGTERM", "Handoff:UpgradeSignals")]
    [InlineData("--Handoff:PidFile=/nonexistent-handoff-dir/app.pid", "Handoff:PidFile '/nonexistent-handoff-dir/app.pid': the directory '/nonexistent-handoff-dir' does not exist")]
    [InlineData("--Handoff:WorkingDirectory=/nonexistent-handoff-dir", "Handoff:WorkingDirectory '/nonexistent-handoff-dir' does not exist or is not a directory")]
    [InlineData("--Handoff=30s", "Handoff is '30s', a single value")]
    [InlineData("--Handoff:DrainTimeout:x=1", "Handoff:DrainTimeout is a section (it holds Handoff:DrainTimeout:x)")]
    public async Task Start_InvalidOption_ExitsWithCode78NamingTheOption(string argument, string expected)
    {
        var info = new ProcessStartInfo(TestAssets.TestServerAppHost)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add("--urls");
        info.ArgumentList.Add("http://127.0.0.1:0");
        info.ArgumentList.Add(argument);
        var (exitCode, output) = await RunToExitAsync(info);

        Assert.True(exitCode == 78, $"exit code {exitCode}:\n{output}");
        Assert.Contains(expected, output, StringComparison.Ordinal);
        Assert.DoesNotContain("Now listening on", output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", output, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_MisspeltOption_WarnsAndStarts()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:DrainTimout=10s"]);

        Assert.Contains("Handoff:DrainTimout is not a Handoff option and is ignored", server.Output, StringComparison.Ordinal);
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
