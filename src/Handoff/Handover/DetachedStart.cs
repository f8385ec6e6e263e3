namespace Handoff;

/// <summary>
/// The first step of a generation started detached (<c>setsid --fork</c>, so that systemd sees
/// it as its own process, docs/systemd.md): the intermediate process exits at once, and the
/// new generation's first line on its ready pipe is its pid.
/// </summary>
internal static class DetachedStart
{
    // How often the wait looks at the intermediate between pipe events.
    private const int PollMilliseconds = 50;

    /// <summary>Reaps the intermediate and reads the pid the new generation reports first,
    /// both within <paramref name="timeout"/> and until <paramref name="cancellationToken"/>;
    /// then <paramref name="process"/> follows that pid.
    /// Throws when that fails; then the intermediate is killed, and so is the new generation if
    /// it can be found (a report read at the last moment, or the process holding the ready
    /// pipe's write end, inode <paramref name="pipeInode"/>): the old generation never knew its
    /// pid, and it must not serve on. The ready pipe is closed, so one that still reports later
    /// finds nobody waiting and stops itself.</summary>
    public static void AwaitPid(SpawnedProcess process, ReadyPipeReader pipe, TimeSpan timeout, ulong pipeInode, CancellationToken cancellationToken)
    {
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        int intermediate = process.Pid;
        bool intermediateReaped = false;
        try
        {
            while (true)
            {
                if (!intermediateReaped && Interop.Libc.WaitPid(intermediate, out int status, Interop.Libc.WNOHANG) == intermediate)
                {
                    // setsid forks and exits at once.
                    intermediateReaped = true;
                    if (status != 0)
                    {
                        throw new IOException($"'{GenerationLauncher.Setsid} --fork' failed ({SpawnedProcess.Describe(status)})");
                    }
                }

                cancellationToken.ThrowIfCancellationRequested();
                long remaining = deadline - Environment.TickCount64;
                if (remaining <= 0)
                {
                    throw new TimeoutException($"it did not report its pid within {timeout.TotalSeconds:0.###} s (Handoff:UpgradeTimeout)");
                }

                var outcome = pipe.ReadLine((int)Math.Min(remaining, PollMilliseconds), out string? line);
                if (outcome == ReadOutcome.Line && ParsePid(line!) is { } pid)
                {
                    process.Adopt(pid);
                    if (!intermediateReaped)
                    {
                        // It has forked (the report came through), so it exits now if it has not.
                        _ = Interop.Libc.WaitPid(intermediate, out _, 0);
                    }

                    return;
                }

                switch (outcome)
                {
                    case ReadOutcome.Line:
                        throw new IOException($"it failed before it reported its pid: {ReadyPipe.ParseLine(line!)}");
                    case ReadOutcome.EndOfFile:
                        throw new IOException("it exited before it reported its pid (it closed its ready pipe)");
                }
            }
        }
        catch
        {
            // A report written at the last moment, else whoever holds the pipe's write end.
            int? late = pipe.ReadLine(0, out string? last) == ReadOutcome.Line ? ParsePid(last!) : null;
            pipe.Close();
            if (!intermediateReaped)
            {
                Interop.Libc.Kill(intermediate, Interop.Libc.SIGKILL);
                _ = Interop.Libc.WaitPid(intermediate, out _, 0);
            }

            if ((late ?? FindPipeHolder(pipeInode)) is { } orphan)
            {
                Interop.Libc.Kill(orphan, Interop.Libc.SIGKILL);
            }

            throw;
        }
    }

    private static int? ParsePid(string line) =>
        line.StartsWith(ReadyPipe.PidPrefix, StringComparison.Ordinal)
            && int.TryParse(line.AsSpan(ReadyPipe.PidPrefix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid) && pid > 1
            ? pid
            : null;

    /// <summary>The process, other than this one, that holds the pipe with inode
    /// <paramref name="inode"/> (the new generation's end of the ready pipe), or null.</summary>
    private static int? FindPipeHolder(ulong inode)
    {
        string wanted = $"pipe:[{inode}]";
        foreach (int pid in ProcFs.Pids())
        {
            try
            {
                if (pid != Environment.ProcessId && ProcFs.Fds(pid).Any(d => d.Target == wanted))
                {
                    return pid;
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Gone, or not ours to read: not the new generation, which runs as this user.
            }
        }

        return null;
    }
}
