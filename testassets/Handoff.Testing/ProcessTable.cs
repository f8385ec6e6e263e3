using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Handoff.Testing;

/// <summary>
/// What the tests read about processes from /proc, and reaping of the generations that are
/// not this process's own children. The test process is made a child subreaper at load, so an
/// old generation's orphaned successor is re-parented here rather than to PID 1, which in this
/// sandbox never reaps (docs/platform-notes.md).
/// </summary>
public static class ProcessTable
{
#pragma warning disable CA2255 // Deliberate: whoever loads these helpers must reap generations.
    [ModuleInitializer]
    internal static void BecomeSubreaper()
    {
        if (Interop.Libc.Prctl(Interop.Libc.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        {
            throw new InvalidOperationException("prctl(PR_SET_CHILD_SUBREAPER) failed: " + Marshal.GetLastPInvokeError());
        }
    }
#pragma warning restore CA2255

    /// <summary>The state letter from /proc/PID/status (R, S, Z, ...), or null when gone.</summary>
    public static char? State(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("State:", StringComparison.Ordinal))
                {
                    return line[6..].Trim()[0];
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }

    /// <summary>The inode of a file (a Unix socket's, say); 0 when it does not exist.</summary>
    public static ulong Inode(string path) => Interop.Libc.Inode(path) ?? 0;

    /// <summary>The inode of the socket listening on TCP <paramref name="port"/> (IPv4), from
    /// /proc/net/tcp; 0 if none listens. The same inode before and after means the same socket.</summary>
    public static ulong ListeningSocketInode(int port)
    {
        foreach (string line in File.ReadLines("/proc/net/tcp").Skip(1))
        {
            string[] fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length > 9 && fields[3] == "0A" &&
                int.Parse(fields[1].Split(':')[1], System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture) == port)
            {
                return ulong.Parse(fields[9], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    public static bool IsRunning(int pid) => State(pid) is { } state && state != 'Z' && state != 'X';

    public static int ParentOf(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // The command name is in parentheses and may hold spaces: parse after the last ')'.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException or ArgumentOutOfRangeException)
        {
            return 0;
        }
    }

    /// <summary>The open descriptors of <paramref name="pid"/> with what they point to.</summary>
    public static IReadOnlyList<string> OpenFds(int pid) =>
        [.. new DirectoryInfo($"/proc/{pid}/fd").GetFileSystemInfos()
            .Select(f => $"{f.Name} -> {f.LinkTarget}")
            .OrderBy(f => int.Parse(f[..f.IndexOf(' ', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture))];

    /// <summary>True when <paramref name="pid"/> ignores <paramref name="signal"/> (the SigIgn
    /// mask of /proc/PID/status).</summary>
    public static bool Ignores(int pid, int signal) => ProcFs.IgnoresSignal(pid, signal) == true;

    /// <summary>The message of a test that sends a signal the server ignores since its start:
    /// a process started with a signal ignored passes that on to what it starts, and .NET keeps
    /// it ignored (a test run started as a background job of a non-interactive shell ignores
    /// SIGINT and SIGQUIT).</summary>
    public static string IgnoredSignalMessage(int pid, int signal) =>
        $"pid {pid} ignores signal {signal}, inherited from this test process: run the tests in the foreground, or under 'env --default-signal=INT,QUIT'.";

    /// <summary>True when fd <paramref name="fd"/> of <paramref name="pid"/> has O_CLOEXEC
    /// (the "flags" line of /proc/PID/fdinfo/FD, octal).</summary>
    public static bool IsCloseOnExec(int pid, int fd)
    {
        const int OCloexec = 0x80000; // 02000000 octal
        string flags = File.ReadLines($"/proc/{pid}/fdinfo/{fd}").First(l => l.StartsWith("flags:", StringComparison.Ordinal))[6..].Trim();
        return (Convert.ToInt32(flags, 8) & OCloexec) != 0;
    }

    /// <summary>Sends <paramref name="signal"/> to every process of <paramref name="roots"/>
    /// that still runs and to everything below them; returns all of those pids.</summary>
    public static IReadOnlySet<int> SignalTrees(IEnumerable<int> roots, int signal)
    {
        var all = new HashSet<int>(roots.Where(pid => pid > 0));
        foreach (int pid in all.ToList())
        {
            all.UnionWith(Descendants(pid));
        }

        foreach (int pid in all.Where(IsRunning))
        {
            _ = Interop.Libc.Kill(pid, signal);
        }

        return all;
    }

    /// <summary>Every process below <paramref name="root"/> in the process tree.</summary>
    public static IReadOnlyList<int> Descendants(int root)
    {
        var parents = new Dictionary<int, int>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid))
            {
                parents[pid] = ParentOf(pid);
            }
        }

        var result = new List<int>();
        var queue = new Queue<int>([root]);
        while (queue.Count > 0)
        {
            int parent = queue.Dequeue();
            foreach (var (pid, ppid) in parents)
            {
                if (ppid == parent && !result.Contains(pid))
                {
                    result.Add(pid);
                    queue.Enqueue(pid);
                }
            }
        }

        return result;
    }

    /// <summary>
    /// Waits until <paramref name="pid"/> has exited and reaps it if it is (or becomes) this
    /// process's child. Returns its exit code (128 + signal if killed), or null when it was
    /// reaped by someone else, or throws on timeout.
    /// </summary>
    public static async Task<int?> WaitForExitAsync(int pid, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            int result = Interop.Libc.WaitPid(pid, out int status, Interop.Libc.WNOHANG);
            if (result == pid)
            {
                int signal = status & 0x7f;
                return signal == 0 ? (status >> 8) & 0xff : 128 + signal;
            }

            if (result < 0 && State(pid) is null)
            {
                return null; // Not our child and gone: its parent reaped it.
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"pid {pid} did not exit within {timeout.TotalSeconds} s (state {State(pid)}).");
            }

            await Task.Delay(20);
        }
    }
}
