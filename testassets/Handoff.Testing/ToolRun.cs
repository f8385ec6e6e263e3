using System.Diagnostics;

namespace Handoff.Testing;

/// <summary>One run of the <c>handoff</c> tool to its end: exit code and output.</summary>
public sealed record ToolRun(int ExitCode, string Output, string Error)
{
    public override string ToString() => $"exit {ExitCode}; stdout: {Output.Trim()}; stderr: {Error.Trim()}";

    /// <summary>Runs <c>handoff</c> with <paramref name="arguments"/>, optionally through a
    /// prefix such as <c>setpriv --reuid=65534</c>; kills it at <paramref name="timeout"/>.</summary>
    public static async Task<ToolRun> RunAsync(IEnumerable<string> arguments, TimeSpan? timeout = null, IEnumerable<string>? prefix = null, string? tool = null)
    {
        string[] command = [.. prefix ?? [], tool ?? TestAssets.HandoffTool, .. arguments];
        var info = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in command.Skip(1))
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_NOLOGO"] = "1";
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
            throw new TimeoutException($"handoff {string.Join(' ', arguments)} did not exit within {timeout}; stderr so far: {(error.IsCompleted ? error.Result : "")}");
        }

        return new ToolRun(process.ExitCode, await output, await error);
    }
}
