using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>
/// This generation's part in the pid file (<see cref="HandoffOptions.PidFile"/>): it writes the
/// pid of whichever generation serves, and at its stop removes the file if it still names this
/// process (or, after a failed write, a generation that is gone). A failure is logged and
/// changes nothing else: the generation it should name serves either way.
/// </summary>
internal sealed partial class PidFileOwner(string? path, ILogger logger, int generation)
{
    private volatile bool _owns;

    /// <summary>Whether <see cref="HandoffOptions.PidFile"/> is set.</summary>
    public bool IsEnabled => path is not null;

    /// <summary>From this generation's ready on, its stop removes the file (unless a newer
    /// generation took over, or its parent keeps serving after giving up on it).</summary>
    public bool Owns
    {
        get => _owns;
        set => _owns = value && path is not null;
    }

    public void Write(int pid)
    {
        if (path is null)
        {
            return;
        }

        try
        {
            PidFile.Write(path, pid);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.PidFileFailed(logger, Environment.ProcessId, generation, path, $"write pid {pid} to", e.Message);
        }
    }

    /// <summary>Whether the file names <paramref name="pid"/> now.</summary>
    public bool Names(int pid) => path is not null && PidFile.Read(path) == pid;

    /// <summary>At the stop: removes the file if it names this process (when no successor took
    /// over) or one of <paramref name="others"/> that is gone (a write that failed, disk full or
    /// read-only at the time, left an older generation's or the successor's pid there); never
    /// one that still serves.</summary>
    public void RemoveAtStop(int? successor, IEnumerable<int> others)
    {
        if (!_owns || path is null)
        {
            return;
        }

        try
        {
            int[] stale = [.. others.Append(successor ?? 0).Where(p => p > 0 && !GenerationProcess.IsRunning(p))];
            PidFile.RemoveIfOwner(path, successor is null ? [Environment.ProcessId, .. stale] : stale);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.PidFileFailed(logger, Environment.ProcessId, generation, path, "remove", e.Message);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(24, LogLevel.Error, "Generation {Generation} (pid {Pid}) could not {Action} the pid file {PidFile} (Handoff:PidFile): {Error}. Nothing else changes.", EventName = "PidFileFailed")]
        public static partial void PidFileFailed(ILogger logger, int pid, int generation, string pidFile, string action, string error);
    }
}
