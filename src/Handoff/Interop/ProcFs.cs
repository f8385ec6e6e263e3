using System.Globalization;
using System.Text;

namespace Handoff;

/// <summary>
/// Everything Handoff reads from <c>/proc</c>, in one place: what the kernel says about
/// processes (their list, stat line, descriptors, signal handlers, command line) and about the
/// sockets of a network namespace. Each read returns null (or nothing) when the process is gone
/// or is not ours to read, never throws for that.
/// </summary>
internal static class ProcFs
{
    /// <summary>The pids of every process this one can see.</summary>
    public static IEnumerable<int> Pids()
    {
        foreach (string entry in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                yield return pid;
            }
        }
    }

    /// <summary>The fields of <c>/proc/PID/stat</c> from the state on (field 3 is [0]); null
    /// when the process is gone. The command name before them is in parentheses and may hold
    /// spaces: fields are counted after the last ')'.</summary>
    public static string[]? StatFields(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }

    /// <summary>The boot time (<c>btime</c> of <c>/proc/stat</c>), or null.</summary>
    public static DateTimeOffset? BootTime()
    {
        try
        {
            string? boot = File.ReadLines("/proc/stat").FirstOrDefault(l => l.StartsWith("btime ", StringComparison.Ordinal));
            return boot is not null && long.TryParse(boot.AsSpan(6), NumberStyles.None, CultureInfo.InvariantCulture, out long seconds)
                ? DateTimeOffset.FromUnixTimeSeconds(seconds)
                : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>This process's command line as the kernel has it (with the <c>dotnet</c> host,
    /// unlike <see cref="Environment.GetCommandLineArgs"/>).</summary>
    public static string[] SelfCommandLine() =>
        Encoding.UTF8.GetString(File.ReadAllBytes("/proc/self/cmdline")).TrimEnd('\0').Split('\0');

    /// <summary>What descriptor <paramref name="fd"/> of this process is ("socket:[123]",
    /// "pipe:[45]", a path), or null when it is not open.</summary>
    public static string? SelfFd(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>The inode of socket or pipe descriptor <paramref name="fd"/> of this process
    /// ("socket:[12345]" gives 12345). Throws <see cref="IOException"/> when it is not open or
    /// is something else.</summary>
    public static ulong SelfInode(int fd)
    {
        string link = SelfFd(fd) ?? throw new IOException($"fd {fd} is not open.");
        return Inode(link) ?? throw new IOException($"fd {fd} is '{link}', not a socket or pipe.");
    }

    /// <summary>The open descriptors of <paramref name="pid"/> and what each is. Throws
    /// <see cref="IOException"/> or <see cref="UnauthorizedAccessException"/> when the process
    /// is gone or not ours.</summary>
    public static IEnumerable<(int Fd, string? Target)> Fds(int pid)
    {
        foreach (string entry in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            if (int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
            {
                yield return (fd, new FileInfo(entry).LinkTarget);
            }
        }
    }

    /// <summary>
    /// Every registration in every epoll instance of this process: the epoll descriptor, the
    /// registered descriptor number (<c>tfd</c>), its event mask, its user data and the inode of
    /// the file registered (an entry stays while any descriptor of any process still refers to
    /// that file, so the number alone may name another file by now), by number and inode. From the
    /// <c>/proc/self/fdinfo</c> of each <c>anon_inode:[eventpoll]</c> descriptor.
    /// </summary>
    public static IReadOnlyDictionary<(int Fd, ulong Inode), EpollRegistration> SelfEpollRegistrations()
    {
        var registrations = new Dictionary<(int Fd, ulong Inode), EpollRegistration>();
        foreach (var (fd, target) in Fds(Environment.ProcessId))
        {
            if (target != "anon_inode:[eventpoll]")
            {
                continue;
            }

            string[] lines;
            try
            {
                lines = File.ReadAllLines($"/proc/self/fdinfo/{fd}");
            }
            catch (IOException)
            {
                continue; // Closed meanwhile.
            }

            // "tfd:       12 events:   80002019 data:                c  pos:0 ino:4a1b sdev:8"
            foreach (string line in lines)
            {
                if (!line.StartsWith("tfd:", StringComparison.Ordinal))
                {
                    continue;
                }

                string[] f = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
                int Index(string name) => Array.IndexOf(f, name);
                if (Index("tfd:") is int t and >= 0 && Index("events:") is int e and >= 0 && Index("data:") is int d and >= 0 &&
                    f.FirstOrDefault(x => x.StartsWith("ino:", StringComparison.Ordinal)) is { } ino &&
                    int.TryParse(f[t + 1], NumberStyles.None, CultureInfo.InvariantCulture, out int registered) &&
                    uint.TryParse(f[e + 1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out uint events) &&
                    ulong.TryParse(f[d + 1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong data) &&
                    ulong.TryParse(ino.AsSpan(4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong inode))
                {
                    registrations[(registered, inode)] = new EpollRegistration(fd, registered, events, data, inode);
                }
            }
        }

        return registrations;
    }

    /// <summary>The inode in a descriptor's target ("socket:[123]" gives 123), or null.</summary>
    public static ulong? Inode(string? target)
    {
        int open = target?.IndexOf('[', StringComparison.Ordinal) ?? -1;
        return open > 0 && target!.EndsWith(']') && ulong.TryParse(target.AsSpan(open + 1, target.Length - open - 2), NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode)
            ? inode
            : null;
    }

    /// <summary>The rows of a socket table of <paramref name="pid"/>'s network namespace
    /// (<c>tcp</c>, <c>tcp6</c>, <c>unix</c>), split into fields, without the header.</summary>
    public static IEnumerable<string[]> NetTable(int pid, string table) =>
        File.ReadLines($"/proc/{pid}/net/{table}").Skip(1).Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries));

    /// <summary>Whether <paramref name="pid"/> has a handler for <paramref name="signal"/>
    /// (the SigCgt mask of <c>/proc/PID/status</c>); null when that cannot be read.</summary>
    public static bool? CatchesSignal(int pid, int signal) => InSignalMask(pid, "SigCgt:", signal);

    /// <summary>Whether <paramref name="pid"/> ignores <paramref name="signal"/> (the SigIgn
    /// mask of <c>/proc/PID/status</c>); null when that cannot be read.</summary>
    public static bool? IgnoresSignal(int pid, int signal) => InSignalMask(pid, "SigIgn:", signal);

    private static bool? InSignalMask(int pid, string mask, int signal)
    {
        try
        {
            string? line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith(mask, StringComparison.Ordinal));
            return line is not null && ulong.TryParse(line.AsSpan(mask.Length).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong bits)
                ? (bits & (1UL << (signal - 1))) != 0
                : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>One entry of an epoll instance's interest list (see
/// <see cref="ProcFs.SelfEpollRegistrations"/>).</summary>
internal readonly record struct EpollRegistration(int EpollFd, int Fd, uint Events, ulong Data, ulong Inode);
