using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace Handoff.Testing;

/// <summary>
/// A server (the test server by default) run as a real child process, followed across its generations through
/// its pid file. Disposing kills every generation and everything they started, and reaps them.
/// </summary>
public sealed partial class ServerProcess : IAsyncDisposable
{
    public static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private readonly Process _first;
    private readonly StringBuilder _output = new();
    private readonly HashSet<int> _knownPids = [];
    private readonly string _directory;
    private readonly bool _ownsDirectory;

    private ServerProcess(Process first, string directory, bool ownsDirectory, string pidFile)
    {
        _first = first;
        _directory = directory;
        _ownsDirectory = ownsDirectory;
        PidFile = pidFile;
        _knownPids.Add(first.Id);
    }

    public string PidFile { get; }

    public int FirstPid => _first.Id;

    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.Loopback, 0);

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

    /// <summary>The pid the pid file names now: the generation that accepts.</summary>
    public int CurrentPid => Handoff.PidFile.Read(PidFile) ?? 0;

    /// <summary>
    /// Starts the server on 127.0.0.1 with a dynamic port (unless <paramref name="urls"/> says
    /// otherwise) and a pid file, and waits until it is ready.
    /// </summary>
    /// <param name="urls">Kestrel's --urls; 127.0.0.1 with a dynamic port by default; "" to
    /// pass none (the addresses then come from configuration or the environment).</param>
    /// <param name="arguments">More command-line arguments, e.g. configuration keys.</param>
    /// <param name="environment">More environment variables.</param>
    /// <param name="command">The program and leading arguments; the apphost by default.</param>
    /// <param name="directory">Working directory and pid file location; a new temporary
    /// directory, removed on dispose, by default.</param>
    /// <param name="pidFile">The pid file; app.pid in <paramref name="directory"/> by default.</param>
    /// <param name="removeDirectory">Remove <paramref name="directory"/> on dispose even though
    /// the caller made it (one it does not pass is always removed).</param>
    public static async Task<ServerProcess> StartAsync(
        string? urls = null,
        IEnumerable<string>? arguments = null,
        IReadOnlyDictionary<string, string>? environment = null,
        string[]? command = null,
        string? directory = null,
        string? pidFile = null,
        bool removeDirectory = false)
    {
        bool owns = directory is null || removeDirectory;
        directory ??= TestAssets.CreateTempDirectory();
        pidFile ??= Path.Combine(directory, "app.pid");
        command ??= [TestAssets.TestServerAppHost];
        var info = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = directory,
        };
        foreach (string a in command.Skip(1))
        {
            info.ArgumentList.Add(a);
        }

        if (urls != "")
        {
            info.ArgumentList.Add("--urls");
            info.ArgumentList.Add(urls ?? "http://127.0.0.1:0");
        }

        info.ArgumentList.Add("--Handoff:PidFile=" + pidFile);
        foreach (string a in arguments ?? [])
        {
            info.ArgumentList.Add(a);
        }

        // Console logs without colours or buffering surprises; no telemetry or first-run output.
        info.Environment["DOTNET_NOLOGO"] = "1";
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["Logging__Console__DisableColors"] = "true";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[key] = value;
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("Process.Start returned null");
        var server = new ServerProcess(process, directory, owns, pidFile);
        process.OutputDataReceived += (_, e) => server.Append(e.Data);
        process.ErrorDataReceived += (_, e) => server.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            // A server that cannot start exits: say so at once rather than at the timeout.
            bool Ready() => server.CurrentPid == process.Id && server.ListeningPort() > 0;
            await server.WaitUntilAsync(() => Ready() || process.HasExited, StartTimeout, "the first generation to become ready");
            if (!Ready())
            {
                // The last lines may still be on their way through the pipes: read to their end
                // (bounded, in case something the server started holds them open).
                using var rest = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                try
                {
                    await process.WaitForExitAsync(rest.Token);
                }
                catch (OperationCanceledException)
                {
                    // What has arrived will do.
                }

                throw new InvalidOperationException($"{Path.GetFileName(command[0])} exited with code {process.ExitCode} before it became ready. Server output:\n{server.Output}");
            }

            server.EndPoint = new IPEndPoint(IPAddress.Loopback, server.ListeningPort());
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>Sends SIGUSR2 to the current generation and waits until a new one accepts
    /// and the old one has exited; returns both pids and the old one's exit code.</summary>
    public async Task<(int OldPid, int NewPid, int? OldExitCode)> UpgradeAsync(TimeSpan? timeout = null)
    {
        int old = CurrentPid;
        Signal(old, 12);
        await WaitUntilAsync(() => CurrentPid != old && CurrentPid != 0, timeout ?? StartTimeout, $"a new generation to replace pid {old}");
        int next = CurrentPid;
        Track(next);
        int? exit = await WaitForExitAsync(old, timeout ?? StartTimeout);
        return (old, next, exit);
    }

    /// <summary>
    /// Upgrades <paramref name="times"/> times while <paramref name="load"/> runs, each after the
    /// load made progress, checking that every old generation exited with 0; stops the load and
    /// returns its report and every generation's pid, oldest first.
    /// </summary>
    public async Task<(LoadReport Report, IReadOnlyList<int> Pids)> UpgradeUnderLoadAsync(ILoad load, int times)
    {
        var pids = new List<int> { CurrentPid };
        try
        {
            for (int i = 0; i < times; i++)
            {
                await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
                var (oldPid, newPid, exitCode) = await UpgradeAsync();
                if (exitCode is not (0 or null) || oldPid != pids[^1] || pids.Contains(newPid))
                {
                    throw new InvalidOperationException($"upgrade {i + 1}: generation pid {oldPid} exited with {exitCode}; new pid {newPid}; pids so far {string.Join(",", pids)}");
                }

                pids.Add(newPid);
            }

            await load.WaitForProgressAsync(200, TimeSpan.FromSeconds(30));
        }
        catch
        {
            await load.StopAsync();
            throw;
        }

        return (await load.StopAsync(), pids);
    }

    /// <summary>Sends SIGUSR2 to the current generation and waits only until a new one
    /// serves for good (the old one has committed; it may still drain); returns the new pid.</summary>
    public async Task<int> UpgradeWithoutWaitingForExitAsync()
    {
        int old = CurrentPid;
        Signal(old, 12);
        await WaitUntilAsync(() => CurrentPid != old && CurrentPid != 0, StartTimeout, $"a new generation to replace pid {old}");
        Track(CurrentPid);
        await WaitForOutputAsync($"(pid {old}) is superseded");
        return CurrentPid;
    }

    public void Track(int pid)
    {
        lock (_knownPids)
        {
            _knownPids.Add(pid);
        }
    }

    /// <summary>Waits for a generation to exit; reaps it. The first generation is this
    /// process's own <see cref="Process"/> and is reaped by .NET.</summary>
    public async Task<int?> WaitForExitAsync(int pid, TimeSpan timeout)
    {
        if (pid == _first.Id)
        {
            // Not Process.WaitForExitAsync: it also waits for end-of-file on the output pipes,
            // which the newer generations inherited and keep open.
            await WaitUntilAsync(() => _first.HasExited, timeout, $"generation pid {pid} to exit");
            return _first.ExitCode;
        }

        return await ProcessTable.WaitForExitAsync(pid, timeout);
    }

    public static void Signal(int pid, int signal)
    {
        if (Interop.Libc.Kill(pid, signal) != 0)
        {
            throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>One GET on a new connection, no retry; returns the serving pid.</summary>
    public async Task<int> GetPidAsync(string path = "/?sleep=0", EndPoint? endPoint = null)
    {
        var response = await HttpProbe.GetAsync(endPoint ?? EndPoint, path, TimeSpan.FromSeconds(30));
        return response.Pid;
    }

    /// <summary>Waits until the output holds <paramref name="text"/> at least
    /// <paramref name="count"/> times.</summary>
    public Task WaitForOutputAsync(string text, int count = 1, TimeSpan? timeout = null) =>
        WaitUntilAsync(() => CountOf(text) >= count, timeout ?? StartTimeout, $"'{text}' in the output ({count} times)");

    /// <summary>Waits for <paramref name="pattern"/> in the output; returns its first match.</summary>
    public async Task<Match> WaitForOutputAsync(Regex pattern, TimeSpan? timeout = null)
    {
        await WaitUntilAsync(() => pattern.IsMatch(Output), timeout ?? StartTimeout, $"/{pattern}/ in the output");
        return pattern.Match(Output);
    }

    /// <summary>Waits until generation <paramref name="generation"/> has been spawned (for the
    /// <paramref name="attempt"/>th time) and returns its pid, tracked for clean-up.</summary>
    public async Task<int> WaitForSpawnAsync(int generation, int attempt = 1)
    {
        var pattern = new Regex($@"started generation {generation} as pid (\d+)");
        await WaitUntilAsync(() => pattern.Count(Output) >= attempt, StartTimeout, $"generation {generation} to be spawned ({attempt} times)");
        var match = pattern.Matches(Output)[attempt - 1];
        int pid = int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Track(pid);
        return pid;
    }

    /// <summary>Sends one slow request on a new connection and returns once the server has
    /// received it (it logs that), with the task of its response.</summary>
    public async Task<Task<int>> StartSlowRequestAsync(double seconds)
    {
        string line = $"received a request sleeping {seconds.ToString(System.Globalization.CultureInfo.InvariantCulture)} s";
        int before = CountOf(line);
        var request = GetPidAsync($"/?sleep={seconds.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
        await WaitForOutputAsync(line, before + 1);
        return request;
    }

    public int CountOf(string text)
    {
        string output = Output;
        int count = 0;
        for (int i = output.IndexOf(text, StringComparison.Ordinal); i >= 0; i = output.IndexOf(text, i + text.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    public async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out after {timeout.TotalSeconds} s waiting for {what}. Server output:\n{Output}");
            }

            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Everything this server ever became, and whatever those processes started.
        int[] known;
        lock (_knownPids)
        {
            known = [.. _knownPids, CurrentPid];
        }

        var doomed = ProcessTable.SignalTrees(known, 9);

        foreach (int pid in doomed)
        {
            try
            {
                await WaitForExitAsync(pid, TimeSpan.FromSeconds(10));
            }
            catch (TimeoutException)
            {
                // Not ours to reap (its parent is alive elsewhere); it was killed all the same.
            }
        }

        _first.Dispose();
        if (_ownsDirectory)
        {
            Directory.Delete(_directory, recursive: true);
        }
    }

    private int ListeningPort()
    {
        var match = ListeningRegex().Match(Output);
        return match.Success ? int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : 0;
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

    [GeneratedRegex(@"Now listening on: https?://127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningRegex();
}
