using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Handoff.Testing;

/// <summary>
/// The test server under <c>handoff run</c>, optionally as PID 1 of a new pid namespace (<c>unshare
/// --pid --fork --mount-proc</c>, as a container runs it), with a control socket. Pids seen
/// from here are this namespace's: the supervisor's is <see cref="SupervisorPid"/>.
/// </summary>
public sealed partial class SupervisedServer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TempDirectory _directory;

    private SupervisedServer(Process process, TempDirectory directory)
    {
        _process = process;
        _directory = directory;
    }

    public string Directory => _directory.Path;

    public string ControlSocket => Path.Combine(Directory, "control.sock");

    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.Loopback, 0);

    /// <summary>The supervisor: the process started here, or unshare's child (PID 1 inside).</summary>
    public int SupervisorPid { get; private set; }

    /// <summary>The process started here (unshare, or the supervisor itself).</summary>
    public int LauncherPid => _process.Id;

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>Starts the supervisor with the test server and waits until generation 1 serves and
    /// answers on its control socket.</summary>
    public static async Task<SupervisedServer> StartAsync(bool pidNamespace, IEnumerable<string>? runOptions = null, IEnumerable<string>? appArguments = null, IReadOnlyDictionary<string, string>? environment = null, string[]? command = null)
    {
        var directory = new TempDirectory();
        string control = Path.Combine(directory.Path, "control.sock");
        string[] prefix = pidNamespace ? ["unshare", "--pid", "--fork", "--mount-proc"] : [];
        string[] all = [.. prefix, TestAssets.HandoffTool, "run", "--control", control, .. runOptions ?? [], "--", .. command ?? [TestAssets.TestServerAppHost], "--urls", "http://127.0.0.1:0", .. appArguments ?? []];
        var info = new ProcessStartInfo(all[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = directory.Path,
        };
        foreach (string argument in all.Skip(1))
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_NOLOGO"] = "1";
        info.Environment["Logging__Console__DisableColors"] = "true";
        info.Environment.Remove("NOTIFY_SOCKET");
        info.Environment.Remove("RUNTIME_DIRECTORY");
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[key] = value;
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("Process.Start returned null");
        var server = new SupervisedServer(process, directory);
        process.OutputDataReceived += (_, e) => server.Append(e.Data);
        process.ErrorDataReceived += (_, e) => server.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await server.WaitUntilAsync(() => ListeningRegex().IsMatch(server.Output) && File.Exists(control), "generation 1 to listen");
            server.EndPoint = new IPEndPoint(IPAddress.Loopback, int.Parse(ListeningRegex().Match(server.Output).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            server.SupervisorPid = pidNamespace ? ProcessTable.Descendants(process.Id)[0] : process.Id;
            // The supervisor's own line: generation 1 told it READY=1.
            await server.WaitUntilAsync(() => ReadyRegex().IsMatch(server.Output), "generation 1 to report ready to the supervisor");
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>What the serving generation says (handoff status --json).</summary>
    public async Task<JsonElement> StatusAsync()
    {
        var run = await ToolRun.RunAsync(["status", "--control", ControlSocket, "--json"]);
        if (run.ExitCode != 0)
        {
            throw new InvalidOperationException($"handoff status failed: {run}");
        }

        using var document = JsonDocument.Parse(run.Output);
        return document.RootElement.Clone();
    }

    public Task WaitForOutputAsync(string text, int count = 1, TimeSpan? timeout = null) =>
        WaitUntilAsync(() => CountOf(text) >= count, $"'{text}' {count} times in the output", timeout);

    /// <summary>The first match of <paramref name="pattern"/> in the output, once there is one.
    /// With <paramref name="supervisorGone"/> it keeps waiting after the supervisor exited
    /// (generations it left behind still write to the same output).</summary>
    public async Task<Match> WaitForMatchAsync(string pattern, TimeSpan? timeout = null, bool supervisorGone = false)
    {
        var regex = new Regex(pattern);
        await WaitUntilAsync(() => regex.IsMatch(Output), $"/{pattern}/ in the output", timeout, supervisorGone);
        return regex.Match(Output);
    }

    /// <summary>The supervisor's exit code once it has exited (without waiting for the output
    /// to end: generations it left behind may still hold it), or null.</summary>
    public int? ExitCodeIfExited => _process.HasExited ? _process.ExitCode : null;

    public int CountOf(string text)
    {
        string output = Output;
        int count = 0;
        for (int at = output.IndexOf(text, StringComparison.Ordinal); at >= 0; at = output.IndexOf(text, at + text.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    public async Task WaitUntilAsync(Func<bool> condition, string what, TimeSpan? timeout = null, bool supervisorGone = false)
    {
        var deadline = DateTime.UtcNow + (timeout ?? ServerProcess.StartTimeout);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline || !supervisorGone && _process.HasExited && !condition())
            {
                throw new TimeoutException($"Timed out waiting for {what}" + (_process.HasExited ? $" (the supervisor exited with {_process.ExitCode})" : "") + $". Output:\n{Output}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Waits for the process started here to exit; returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            // In a pid namespace, the death of its PID 1 takes every process in it along.
            ProcessTable.SignalTrees([_process.Id], 9);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
        _directory.Dispose();
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    [GeneratedRegex(@"Now listening on: http://127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningRegex();

    [GeneratedRegex(@"handoff run\[\d+\] Generation 1 \(pid \d+\) is ready\.")]
    private static partial Regex ReadyRegex();
}
