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
        // USER_HZ, the unit of the start time, is 100 on every Linux architecture .NET runs on.
        return ProcFs.BootTime()?.AddMilliseconds(StartTime * 10.0);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Pid}:{StartTime}");

    /// <summary>The parent pid (field 4 of /proc/PID/stat), or null when the process is gone.</summary>
    public static int? ParentOf(int pid) =>
        ProcFs.StatFields(pid) is { } fields && int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out int parent) ? parent : null;

    // The state (field 3) and start time (field 22) of /proc/PID/stat.
    private static (string State, ulong StartTime)? ReadStat(int pid)
    {
        try
        {
            return ProcFs.StatFields(pid) is { } fields ? (fields[0], ulong.Parse(fields[19], CultureInfo.InvariantCulture)) : null;
        }
        catch (Exception e) when (e is FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }
}
