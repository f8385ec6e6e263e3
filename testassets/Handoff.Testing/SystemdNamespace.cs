using System.Diagnostics;
using System.Text;

namespace Handoff.Testing;

/// <summary>
/// A real systemd (the machine's /lib/systemd/systemd) booted as PID 1 of a private pid and
/// mount namespace, with private tmpfs mounts on /tmp, /var/tmp and /run: without them its
/// tmpfiles clean-up would empty the machine's /tmp. The network namespace is shared, so a unit
/// listening on 127.0.0.1 is reachable from the test. Unit files go to /etc/systemd/system
/// (the machine's /etc) under unique names and are removed on dispose; killing systemd with
/// SIGKILL ends everything in the namespace.
/// </summary>
public sealed class SystemdNamespace : IAsyncDisposable
{
    private const string SystemdBinary = "/lib/systemd/systemd";
    private const string UnitDirectory = "/etc/systemd/system";

    private readonly Process _unshare;
    private readonly List<string> _unitFiles = [];

    private SystemdNamespace(Process unshare, int pid)
    {
        _unshare = unshare;
        Pid = pid;
    }

    /// <summary>systemd's pid as this process sees it.</summary>
    public int Pid { get; }

    /// <summary>Why systemd cannot boot here, or null when it can (checked without booting).</summary>
    public static string? Unavailable()
    {
        if (!File.Exists(SystemdBinary))
        {
            return $"{SystemdBinary} is not installed (apt-get install systemd)";
        }

        if (Environment.UserName != "root")
        {
            return "booting systemd in a namespace needs root";
        }

        return File.Exists("/usr/bin/unshare") && File.Exists("/usr/bin/nsenter") ? null : "unshare/nsenter (util-linux) are missing";
    }

    /// <summary>Boots systemd and waits until it reports "running" (or "degraded").</summary>
    public static async Task<SystemdNamespace> BootAsync()
    {
        var start = new ProcessStartInfo("/usr/bin/unshare")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string argument in (string[])["--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private", "sh", "-c",
                     $"mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /var/tmp && mount -t tmpfs tmpfs /run && exec {SystemdBinary} --system --unit=basic.target"])
        {
            start.ArgumentList.Add(argument);
        }

        var unshare = Process.Start(start)!;
        var output = new StringBuilder();
        unshare.OutputDataReceived += (_, e) => { lock (output) { output.AppendLine(e.Data); } };
        unshare.ErrorDataReceived += (_, e) => { lock (output) { output.AppendLine(e.Data); } };
        unshare.BeginOutputReadLine();
        unshare.BeginErrorReadLine();

        int pid = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        try
        {
            while (pid == 0)
            {
                if (unshare.HasExited || DateTime.UtcNow > deadline)
                {
                    throw new InvalidOperationException($"systemd did not start in a namespace: {output}");
                }

                string children = File.ReadAllText($"/proc/{unshare.Id}/task/{unshare.Id}/children").Trim();
                if (int.TryParse(children.Split(' ')[0], out int child) && File.ReadAllText($"/proc/{child}/comm").Trim() == "systemd")
                {
                    pid = child;
                }
                else
                {
                    await Task.Delay(20);
                }
            }

            var booted = new SystemdNamespace(unshare, pid);
            while (true)
            {
                var (_, state) = await booted.SystemctlAsync("is-system-running");
                if (state.Trim() is "running" or "degraded")
                {
                    return booted;
                }

                if (DateTime.UtcNow > deadline)
                {
                    await booted.DisposeAsync();
                    throw new InvalidOperationException($"systemd did not finish booting: is-system-running says '{state.Trim()}'. {output}");
                }

                await Task.Delay(100);
            }
        }
        catch when (pid == 0)
        {
            unshare.Kill(entireProcessTree: true);
            unshare.Dispose();
            throw;
        }
    }

    /// <summary>Runs systemctl inside the namespace; returns its exit code and output.</summary>
    public Task<(int ExitCode, string Output)> SystemctlAsync(params string[] arguments) => RunInsideAsync("systemctl", arguments);

    /// <summary>Runs a program inside the namespace (its mounts and pids).</summary>
    public async Task<(int ExitCode, string Output)> RunInsideAsync(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo("/usr/bin/nsenter")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string argument in (string[])["-t", Pid.ToString(System.Globalization.CultureInfo.InvariantCulture), "-m", "-p", program, .. arguments])
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>One property of a unit (<c>systemctl show -p NAME --value</c>).</summary>
    public async Task<string> ShowAsync(string unit, string property)
    {
        var (_, output) = await SystemctlAsync("show", unit, "-p", property, "--value");
        return output.Trim();
    }

    /// <summary>The unit's log, for failure messages.</summary>
    public async Task<string> JournalAsync(string unit)
    {
        var (_, output) = await RunInsideAsync("journalctl", "-u", unit, "--no-pager", "-o", "short-monotonic");
        return output;
    }

    /// <summary>Writes a unit file and reloads systemd's configuration.</summary>
    public async Task InstallUnitAsync(string name, string content)
    {
        string path = Path.Combine(UnitDirectory, name);
        await File.WriteAllTextAsync(path, content);
        _unitFiles.Add(path);
        var (code, output) = await SystemctlAsync("daemon-reload");
        if (code != 0)
        {
            throw new InvalidOperationException($"systemctl daemon-reload failed: {output}");
        }
    }

    /// <summary>Polls a unit property until <paramref name="condition"/> holds, with a deadline.</summary>
    public async Task<string> WaitForAsync(string unit, string property, Func<string, bool> condition, TimeSpan timeout, string what) =>
        await PollAsync(() => ShowAsync(unit, property), condition, timeout, async value => $"{what}: {unit} {property} is '{value}' after {timeout.TotalSeconds} s.\n{await JournalAsync(unit)}");

    /// <summary>Reads a value every 50 ms until <paramref name="done"/> holds; after
    /// <paramref name="timeout"/> throws a <see cref="TimeoutException"/> that
    /// <paramref name="describe"/> words from the last value.</summary>
    public static async Task<T> PollAsync<T>(Func<Task<T>> read, Func<T, bool> done, TimeSpan timeout, Func<T, Task<string>> describe)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            T value = await read();
            if (done(value))
            {
                return value;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException(await describe(value));
            }

            await Task.Delay(50);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (string path in _unitFiles)
        {
            File.Delete(path);
        }

        // The kernel kills every process of the namespace with its init.
        try
        {
            Process.GetProcessById(Pid).Kill();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            // Gone already.
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await _unshare.WaitForExitAsync(timeout.Token);
        _unshare.Dispose();
    }
}
