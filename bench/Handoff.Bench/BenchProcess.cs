using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Handoff.Testing;

namespace Handoff.Bench;

/// <summary>Starting, watching and stopping the processes a benchmark runs.</summary>
internal static class BenchProcess
{
    /// <summary>Starts <paramref name="program"/> with its output appended to
    /// <paramref name="logPath"/> (through <c>sh -c exec</c>, so the pid is the program's own
    /// and no pipe to this process is inherited by later generations).</summary>
    public static Process Start(string program, IEnumerable<string> arguments, string logPath, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add($"exec {Pinned} \"$0\" \"$@\" >>'{logPath}' 2>&1 </dev/null");
        info.ArgumentList.Add(program);
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[key] = value;
        }

        return Process.Start(info) ?? throw new InvalidOperationException($"cannot start {program}");
    }

    /// <summary>The cpus servers run on (taskset's list, e.g. "1"), or null: not pinned. Every
    /// later generation inherits the affinity from the process that starts it.</summary>
    public static string? ServerCpus { get; set; }

    /// <summary>What to put before a server's command line: "taskset -c LIST" or nothing.</summary>
    public static string Pinned => ServerCpus is { } cpus ? $"taskset -c {cpus}" : "";

    /// <summary>The cpus this process may run on (and the load generators it starts).</summary>
    public static IEnumerable<string> OwnCpus() =>
        File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal))?.Split(':', 2)[1].Trim().Split(',') ?? [];

    /// <summary>Runs a command to its end and returns its exit code and output.</summary>
    public static async Task<(int ExitCode, string Output)> RunAsync(string program, IEnumerable<string> arguments, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(program) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException($"cannot start {program}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} did not finish within {timeout.TotalSeconds} s");
        }

        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>Waits until something accepts TCP connections on the port.</summary>
    public static async Task WaitForPortAsync(int port, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(5);
            }
        }
    }

    public static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    /// <summary>Resident memory: peak (VmHWM) and current (VmRSS), in MiB.</summary>
    public static (double PeakMiB, double CurrentMiB) Memory(int pid)
    {
        double peak = 0, current = 0;
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                {
                    peak = Kilobytes(line) / 1024;
                }
                else if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    current = Kilobytes(line) / 1024;
                }
            }
        }
        catch (IOException)
        {
        }

        return (peak, current);
    }

    public static int OpenFds(int pid)
    {
        try
        {
            return ProcessTable.OpenFds(pid).Count;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>Waits until the process is gone or a zombie, and reaps it when it is an
    /// orphan re-parented here. Never pass a process started with <see cref="Process"/>: .NET
    /// reaps those itself and fails fast ("Error while reaping child. errno = 10") if someone
    /// else did.</summary>
    /// <returns>Whether it is gone.</returns>
    public static async Task<bool> WaitGoneAsync(int pid, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            // Not running (a zombie, or /proc no longer shows it): reap it if it is a child of
            // this process (the subreaper of every generation). waitpid says 0 while the child
            // is still exiting, so ask again rather than leave a zombie behind.
            if (!ProcessTable.IsRunning(pid) && Interop.Libc.WaitPid(pid, out _, Interop.Libc.WNOHANG) != 0)
            {
                return true; // reaped, or not a child of this process (ECHILD): gone for us
            }

            await Task.Delay(5);
        }

        return !ProcessTable.IsRunning(pid);
    }

    /// <summary>Waits until <paramref name="pid"/> is gone, bounded; <paramref name="startedHere"/>
    /// is the <see cref="Process"/> this process started, when it is that one (the runtime reaps
    /// it, and a waitpid here would race with it). Returns whether it is gone.</summary>
    public static async Task<bool> WaitGoneAsync(int pid, Process? startedHere, TimeSpan timeout)
    {
        if (startedHere is null || startedHere.Id != pid)
        {
            return await WaitGoneAsync(pid, timeout);
        }

        using var limit = new CancellationTokenSource(timeout);
        try
        {
            await startedHere.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
        }

        return startedHere.HasExited;
    }

    /// <summary>Stops what a scenario left: SIGTERM, and SIGKILL to whatever is still there after
    /// <paramref name="grace"/>, so that no generation keeps running into the next scenario.</summary>
    public static async Task StopAllAsync(IEnumerable<int> pids, Process? startedHere, TimeSpan grace)
    {
        var all = ProcessTable.SignalTrees([.. pids.Where(p => p > 0)], 15);
        var gone = await Task.WhenAll(all.Select(async pid => (pid, await WaitGoneAsync(pid, startedHere, grace))));
        foreach (var (pid, _) in gone.Where(g => !g.Item2))
        {
            Console.Error.WriteLine($"pid {pid} did not exit {grace.TotalSeconds:0} s after SIGTERM; SIGKILL");
            Signal(pid, 9);
            _ = await WaitGoneAsync(pid, startedHere, TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>Sends a signal; never to 0 or a negative pid (which would reach a process group,
    /// this one's included).</summary>
    public static void Signal(int pid, int signal)
    {
        if (pid > 0)
        {
            _ = Interop.Libc.Kill(pid, signal);
        }
    }

    /// <summary>User and system CPU time the process used so far, in seconds (from
    /// /proc/PID/stat, in clock ticks of 1/100 s); 0 when it is gone.</summary>
    public static double CpuSeconds(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // The command name (field 2) may contain spaces; the fields after its ')' are fixed.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / 100.0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>The cpus a process may run on (its Cpus_allowed_list), or "?" when it is gone.</summary>
    public static string CpusOf(int pid)
    {
        try
        {
            return File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private static double Kilobytes(string line) =>
        double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
}
