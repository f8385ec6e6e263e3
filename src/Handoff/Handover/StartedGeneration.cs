using System.Text;

namespace Handoff;

/// <summary>The old generation's view of a new generation it spawned: its pid and the read
/// end of its ready pipe, which stays open after "ready" until the old generation commits (see
/// <see cref="WatchAsync"/>). Reaps the process itself, because .NET reaps only children it
/// started with <see cref="System.Diagnostics.Process"/>.</summary>
internal sealed class StartedGeneration : IStartedGeneration
{
    /// <summary>The withdrawal reason when the pipe reached end-of-file: the process is dying.</summary>
    public const string PipeClosed = "it closed its ready pipe";

    /// <summary>The withdrawal reason when the new generation wrote "stopping".</summary>
    public const string BeganStopping = "it began stopping";

    /// <summary>How a generation started detached ended: its parent, systemd, reaped it.</summary>
    public const string ExitStatusUnknown = "exit status unknown: its parent, the service manager, reaped it";

    // _exitStatus of a detached generation that exited.
    private const int DetachedExit = -2;

    // How often the wait loop looks at the process between pipe events.
    private const int PollMilliseconds = 50;

    private readonly Lock _gate = new();
    private readonly List<byte> _received = [];
    private readonly long _startedAt = Now;
    private int _readyFd;
    private int? _exitStatus;
    private bool _detached;
    private int _pidfd = -1;
    private bool _reaping;

    public StartedGeneration(int pid, int readyFd)
    {
        Pid = pid;
        _readyFd = readyFd;
    }

    /// <summary>The pid; for a generation started detached, the intermediate's until
    /// <see cref="AwaitPid"/> has read the real one.</summary>
    public int Pid { get; private set; }

    /// <summary>A generation started through an intermediate (<c>setsid --fork</c>, pid
    /// <paramref name="intermediatePid"/>) that exits at once: not this process's child, so it is
    /// watched through a pidfd, and its exit status goes to its parent, systemd.</summary>
    public static StartedGeneration Detached(int intermediatePid, int readyFd) => new(intermediatePid, readyFd) { _detached = true };

    /// <summary>Reaps the intermediate and reads the pid the detached generation reports first,
    /// both within <paramref name="timeout"/> and until <paramref name="cancellationToken"/>.
    /// Throws when that fails; then the intermediate is killed, and so is the new generation if
    /// it can be found (a report read at the last moment, or the process holding the ready pipe's
    /// write end, inode <paramref name="pipeInode"/>): the old generation never knew its pid, and
    /// it must not serve on. The ready pipe is closed, so one that still reports later finds
    /// nobody waiting and stops itself.</summary>
    public unsafe void AwaitPid(TimeSpan timeout, ulong pipeInode, CancellationToken cancellationToken)
    {
        int intermediate = Pid;
        bool intermediateReaped = false;
        try
        {
            long deadline = Now + (long)timeout.TotalMilliseconds;
            while (true)
            {
                if (!intermediateReaped && Interop.Libc.WaitPid(intermediate, out int status, Interop.Libc.WNOHANG) == intermediate)
                {
                    // setsid forks and exits at once.
                    intermediateReaped = true;
                    if (status != 0)
                    {
                        throw new IOException($"'{GenerationLauncher.Setsid} --fork' failed ({Describe(status)})");
                    }
                }

                cancellationToken.ThrowIfCancellationRequested();
                long remaining = deadline - Now;
                if (remaining <= 0)
                {
                    throw new TimeoutException($"it did not report its pid within {timeout.TotalSeconds:0.###} s (Handoff:UpgradeTimeout)");
                }

                var outcome = ReadLine((int)Math.Min(remaining, PollMilliseconds), out string? line);
                if (outcome == ReadOutcome.Line && ParsePid(line!) is { } pid)
                {
                    lock (_gate)
                    {
                        Pid = pid;
                        _pidfd = Interop.Libc.PidfdOpen(pid);
                        if (_pidfd < 0)
                        {
                            _exitStatus = DetachedExit; // Gone already.
                        }
                    }

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
            int? late = ReadLine(0, out string? last) == ReadOutcome.Line ? ParsePid(last!) : null;
            CloseReadyPipe();
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

    public Task<StartFailure?> WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(() => WaitReady(timeout, cancellationToken), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public Task<string?> TerminateAsync(TimeSpan grace) =>
        Task.Factory.StartNew(() => Terminate(grace), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public Task<string?> WatchAsync(CancellationToken commit) =>
        Task.Factory.StartNew(() => Watch(commit), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public Task<string?> CommitAsync()
    {
        lock (_gate)
        {
            if (_readyFd < 0)
            {
                return Task.FromResult<string?>(null);
            }
        }

        try
        {
            return Task.FromResult(LastLook());
        }
        finally
        {
            CloseReadyPipe();
        }
    }

    public IReadOnlyList<int> TakeReleased()
    {
        // Written in the same write(2) as the ready line, so read with it; called before the
        // watch starts reading, so nothing else takes lines meanwhile.
        do
        {
            string[] lines = Encoding.UTF8.GetString([.. _received]).Split('\n');
            for (int i = 0; i < lines.Length - 1; i++)
            {
                if (lines[i].StartsWith(ReadyPipe.ReleasedPrefix, StringComparison.Ordinal))
                {
                    _received.Clear();
                    _received.AddRange(Encoding.UTF8.GetBytes(string.Join('\n', lines.Where((_, j) => j != i))));
                    return ReadyPipe.ParseReleased(lines[i]);
                }
            }
        }
        while (Receive(0) > 0);

        return [];
    }



    public void ReapWhenExited(Action<string> exited)
    {
        lock (_gate)
        {
            _reaping = true;
        }

        var thread = new Thread(() => exited(WaitForExit(block: true) ?? "exit status unknown")) { IsBackground = true, Name = $"Handoff reaper {Pid}" };
        thread.Start();
    }

    // Deadlines on the monotonic clock: a wall-clock step must not cut or stretch a wait.
    private static long Now => Environment.TickCount64;

    private unsafe StartFailure? WaitReady(TimeSpan timeout, CancellationToken cancellationToken)
    {
        // From the spawn on: a detached start's wait for the pid report counts too.
        long deadline = _startedAt + (long)timeout.TotalMilliseconds;
        StartFailure? result = new(UpgradeFailureReason.Unexpected, "not read");
        try
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long remaining = deadline - Now;
                if (remaining <= 0)
                {
                    return result = new(UpgradeFailureReason.Timeout, $"it did not report ready within {timeout.TotalSeconds:0.###} s (Handoff:UpgradeTimeout)");
                }

                switch (ReadLine((int)Math.Min(remaining, PollMilliseconds), out string? line))
                {
                    case ReadOutcome.Line:
                        return result = ReadyPipe.ParseLine(line!) is { } failure ? new(UpgradeFailureReason.StartFailed, failure) : null;
                    case ReadOutcome.EndOfFile:
                        // The child closed the pipe without a line: it exited or is exiting.
                        string? exit = WaitForExit(block: false) ?? WaitForExitBriefly();
                        return result = new(UpgradeFailureReason.Exited, exit is null
                            ? $"{PipeClosed} without reporting ready"
                            : $"it exited ({exit}) before reporting ready");
                }

                if (WaitForExit(block: false) is { } ended)
                {
                    return result = new(UpgradeFailureReason.Exited, $"it exited ({ended}) before reporting ready");
                }
            }
        }
        finally
        {
            // After "ready" the pipe stays open: it is how the new generation learns that this
            // one has committed (WatchAsync closes it), and how it withdraws.
            if (result is not null)
            {
                CloseReadyPipe();
            }
        }
    }

    /// <summary>After ready, until <paramref name="commit"/>: returns why the new generation
    /// withdrew (it wrote "stopping", or closed the pipe by dying) and closes the pipe, or takes
    /// a last look and returns null once committed, leaving the pipe to
    /// <see cref="CommitAsync"/>.</summary>
    private string? Watch(CancellationToken commit)
    {
        string? reason = null;
        try
        {
            while (!commit.IsCancellationRequested)
            {
                if ((reason = Withdrawal(ReadLine(PollMilliseconds, out string? line), line)) is not null)
                {
                    return reason;
                }
            }

            // A "stopping" written just before the commit must still count.
            return reason = LastLook();
        }
        finally
        {
            if (reason is not null)
            {
                CloseReadyPipe();
            }
        }
    }

    private string? LastLook()
    {
        ReadOutcome outcome;
        while ((outcome = ReadLine(0, out string? last)) != ReadOutcome.Nothing)
        {
            if (Withdrawal(outcome, last) is { } reason)
            {
                return reason;
            }
        }

        return null;
    }

    private static string? Withdrawal(ReadOutcome outcome, string? line) => outcome switch
    {
        ReadOutcome.Line when line == ReadyPipe.StoppingLine => BeganStopping,
        ReadOutcome.EndOfFile => PipeClosed,
        _ => null,
    };

    private enum ReadOutcome
    {
        Nothing,
        Line,
        EndOfFile,
    }

    /// <summary>Waits up to <paramref name="milliseconds"/> for a whole line on the pipe.</summary>
    private ReadOutcome ReadLine(int milliseconds, out string? line)
    {
        if (TakeLine(out line))
        {
            return ReadOutcome.Line;
        }

        if (Receive(milliseconds) is null)
        {
            return ReadOutcome.EndOfFile;
        }

        return TakeLine(out line) ? ReadOutcome.Line : ReadOutcome.Nothing;
    }

    /// <summary>Waits up to <paramref name="milliseconds"/> for bytes on the pipe and keeps them;
    /// returns how many (0: none yet), or null at end-of-file or once the pipe is closed.</summary>
    private unsafe int? Receive(int milliseconds)
    {
        int fd;
        lock (_gate)
        {
            fd = _readyFd;
        }

        if (fd < 0)
        {
            return null;
        }

        var poll = new Interop.Libc.PollFd { Fd = fd, Events = Interop.Libc.POLLIN };
        if (Interop.Libc.Poll(&poll, 1, milliseconds) <= 0)
        {
            return 0;
        }

        byte* buffer = stackalloc byte[512];
        nint n = Interop.Libc.Read(fd, buffer, 512);
        if (n <= 0)
        {
            return null;
        }

        _received.AddRange(new ReadOnlySpan<byte>(buffer, (int)n));
        return (int)n;
    }

    private bool TakeLine(out string? line)
    {
        int newline = _received.IndexOf((byte)'\n');
        if (newline < 0)
        {
            line = null;
            return false;
        }

        line = Encoding.UTF8.GetString([.. _received.Take(newline)]);
        _received.RemoveRange(0, newline + 1);
        return true;
    }

    private string? Terminate(TimeSpan grace)
    {
        CloseReadyPipe();

        // A child that reported failure is usually exiting already: give it a moment, so the
        // log says how it ended rather than that it was killed.
        if ((WaitForExit(block: false) ?? WaitForExitBriefly()) is not null)
        {
            return null;
        }

        Signal(Interop.Libc.SIGTERM);
        long deadline = Now + (long)grace.TotalMilliseconds;
        while (Now < deadline)
        {
            if (WaitForExit(block: false) is { } ended)
            {
                return ended + " after SIGTERM";
            }

            Thread.Sleep(20);
        }

        Signal(Interop.Libc.SIGKILL);
        return (WaitForExit(block: true) ?? "unknown status") + " after SIGKILL";
    }

    // A detached generation is not this process's child: once it exits, systemd reaps it and
    // its pid may be reused, so it is signalled through its pidfd.
    private void Signal(int signal)
    {
        lock (_gate)
        {
            if (!_detached)
            {
                Interop.Libc.Kill(Pid, signal);
            }
            else if (_pidfd >= 0)
            {
                Interop.Libc.PidfdSendSignal(_pidfd, signal);
            }
        }
    }

    private string? WaitForExitBriefly()
    {
        // End-of-file comes a moment before the process becomes reapable.
        for (int i = 0; i < 50; i++)
        {
            if (WaitForExit(block: false) is { } ended)
            {
                return ended;
            }

            Thread.Sleep(10);
        }

        return null;
    }

    /// <summary>Reaps the process if it has exited (or, with <paramref name="block"/>, once it
    /// does) and describes how it ended; null while it still runs.</summary>
    private string? WaitForExit(bool block)
    {
        lock (_gate)
        {
            if (_exitStatus is { } known)
            {
                return Describe(known);
            }
        }

        if (_detached)
        {
            return WaitForDetachedExit(block);
        }

        // Outside the lock: a blocking wait (the reaper thread) must not hold up anyone else.
        int result;
        int status;
        do
        {
            result = Interop.Libc.WaitPid(Pid, out status, block ? 0 : Interop.Libc.WNOHANG);
        }
        while (result < 0 && System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Interop.Libc.EINTR);

        lock (_gate)
        {
            if (result == Pid)
            {
                _exitStatus = status;
            }
            else if (result < 0)
            {
                // ECHILD: another thread reaped it; it is gone all the same.
                _exitStatus ??= -1;
            }
            else
            {
                return null;
            }

            return Describe(_exitStatus.Value);
        }
    }

    private unsafe string? WaitForDetachedExit(bool block)
    {
        int fd;
        lock (_gate)
        {
            fd = _pidfd;
            if (fd < 0)
            {
                return null; // Its pid was never read: nothing to watch.
            }

            if (!block)
            {
                // Under the lock: the reaper thread closes the pidfd under it too.
                var poll = new Interop.Libc.PollFd { Fd = fd, Events = Interop.Libc.POLLIN };
                if (Interop.Libc.Poll(&poll, 1, 0) <= 0)
                {
                    return null;
                }

                _exitStatus = DetachedExit;
                if (!_reaping)
                {
                    Interop.Libc.Close(_pidfd);
                    _pidfd = -1;
                }

                return ExitStatusUnknown;
            }
        }

        // The reaper thread: the only blocking waiter, and the one that closes the pidfd.
        var wait = new Interop.Libc.PollFd { Fd = fd, Events = Interop.Libc.POLLIN };
        while (Interop.Libc.Poll(&wait, 1, -1) < 0 && System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Interop.Libc.EINTR)
        {
        }

        lock (_gate)
        {
            _exitStatus ??= DetachedExit;
            Interop.Libc.Close(_pidfd);
            _pidfd = -1;
        }

        return ExitStatusUnknown;
    }

    private static string Describe(int status)
    {
        if (status == DetachedExit)
        {
            return ExitStatusUnknown;
        }

        if (status < 0)
        {
            return "exit status unknown";
        }

        int signal = status & 0x7f;
        return signal == 0 ? $"exit code {(status >> 8) & 0xff}" : $"killed by signal {signal}";
    }

    private void CloseReadyPipe()
    {
        lock (_gate)
        {
            if (_readyFd >= 0)
            {
                Interop.Libc.Close(_readyFd);
                _readyFd = -1;
            }
        }
    }
}
