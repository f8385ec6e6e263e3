using System.Diagnostics;

namespace Handoff.Testing;

/// <summary>One run of the <c>handoff</c> tool to its end: exit code and output.</summary>
public sealed record ToolRun(int ExitCode, string Output, string Error)
{
    public override string ToString() => $"exit {ExitCode}; stdout: {Output.Trim()}; stderr: {Error.Trim()}";

    /// <summary>Runs <c>handoff</c> with <paramref name="arguments"/>, optionally through a
    /// prefix such as <c>setpriv --reuid=65534</c>; kills it at <paramref name="timeout"/>.</summary>
    public static Task<ToolRun> RunAsync(IEnumerable<string> arguments, TimeSpan? timeout = null, IEnumerable<string>? prefix = null, string? tool = null)
    {
        string[] command = [.. prefix ?? [], tool ?? TestAssets.HandoffTool, .. arguments];
        return RunProcessAsync(command[0], command[1..], directory: null, timeout);
    }

    /// <summary>Runs any program to its end (dotnet pack, an installed tool) and collects its
    /// output; kills it at <paramref name="timeout"/> (2 minutes by default).</summary>
    public static async Task<ToolRun> RunProcessAsync(string program, IReadOnlyList<string> arguments, string? directory = null, TimeSpan? timeout = null)
    {
        var info = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = directory ?? "",
        };
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_NOLOGO"] = "1";
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment.Remove("RUNTIME_DIRECTORY");
        using var process = Process.Start(info) ?? throw new InvalidOperationException("Process.Start returned null");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} did not exit within {timeout}; stderr so far: {(error.IsCompleted ? error.Result : "")}");
        }

        return new ToolRun(process.ExitCode, await output, await error);
    }
}
