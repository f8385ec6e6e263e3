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

    /// <summary>The parent pid (field 4 of /proc/PID/stat), or null when the process is gone.</summary>
    public static int? ParentOf(int pid) =>
        StatFields(pid) is { } fields && int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out int parent) ? parent : null;

    // The state (field 3) and start time (field 22) of /proc/PID/stat.
    private static (string State, ulong StartTime)? ReadStat(int pid)
    {
        try
        {
            return StatFields(pid) is { } fields ? (fields[0], ulong.Parse(fields[19], CultureInfo.InvariantCulture)) : null;
        }
        catch (Exception e) when (e is FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    // The fields of /proc/PID/stat from the state on (field 3 is [0]). The command name before
    // them is in parentheses and may hold spaces: fields are counted after the last ')'.
    private static string[]? StatFields(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        }
        catch (Exception e) when (e is IOException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }
}
