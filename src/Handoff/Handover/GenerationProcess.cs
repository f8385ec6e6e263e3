using System.Globalization;

namespace Handoff;

/// <summary>
/// A process of an older generation, named so that a recycled pid is not mistaken for it: its
/// pid and its start time in clock ticks since boot (field 22 of <c>/proc/PID/stat</c>).
/// </summary>
internal readonly record struct GenerationProcess(int Pid, ulong StartTime)
{
    public static GenerationProcess? Current(int pid) =>
        ReadStat(pid) is { } stat ? new GenerationProcess(pid, stat.StartTime) : null;

    /// <summary>True while the process runs (not a zombie) and is the same process.</summary>
    public bool IsAlive() => ReadStat(Pid) is { } stat && stat.State is not ("Z" or "X") && stat.StartTime == StartTime;

    /// <summary>True while a process with this pid runs (exists and is not a zombie).</summary>
    public static bool IsRunning(int pid) => ReadStat(pid) is { } stat && stat.State is not ("Z" or "X");

    public static GenerationProcess? TryParse(string text)
    {
        string[] parts = text.Split(':');
        return parts.Length == 2 &&
               int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0 &&
               ulong.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out ulong start)
            ? new GenerationProcess(pid, start)
            : null;
    }

    /// <summary>When the process started, from its start time and the boot time in
    /// <c>/proc/stat</c>; null if either cannot be read.</summary>
    public DateTimeOffset? StartedAt()
    {
        try
        {
            string? boot = File.ReadLines("/proc/stat").FirstOrDefault(l => l.StartsWith("btime ", StringComparison.Ordinal));
            // USER_HZ, the unit of the start time, is 100 on every Linux architecture .NET runs on.
            return boot is not null && long.TryParse(boot.AsSpan(6), NumberStyles.None, CultureInfo.InvariantCulture, out long seconds)
                ? DateTimeOffset.FromUnixTimeSeconds(seconds).AddMilliseconds(StartTime * 10.0)
                : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Pid}:{StartTime}");

    // The state (field 3) and start time (field 22) of /proc/PID/stat. The command name before
    // them is in parentheses and may hold spaces: fields are counted after the last ')'.
    private static (string State, ulong StartTime)? ReadStat(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (fields[0], ulong.Parse(fields[19], CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }
}
