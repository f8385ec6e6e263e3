namespace Handoff;

/// <summary>
/// A process this generation started, as a handle: it reaps it (.NET reaps only children it
/// started with <see cref="System.Diagnostics.Process"/>), signals it, and says how it ended. A
/// generation started detached (through <c>setsid --fork</c>) is not this process's child: it is
/// watched and signalled through a pidfd, and its exit status goes to its parent, systemd.
/// </summary>
internal sealed class SpawnedProcess
{
    /// <summary>How a generation started detached ended: its parent, systemd, reaped it.</summary>
    public const string ExitStatusUnknown = "exit status unknown: its parent, the service manager, reaped it";

    // _exitStatus of a detached generation that exited.
    private const int DetachedExit = -2;

    private readonly Lock _gate = new();
    private int? _exitStatus;
    private int _pidfd = -1;
    private bool _reaping;

    public SpawnedProcess(int pid, bool detached)
    {
        Pid = pid;
        IsDetached = detached;
    }

    /// <summary>The pid; for a detached start, the intermediate's until <see cref="Adopt"/>.</summary>
    public int Pid { get; private set; }

    public bool IsDetached { get; }

    /// <summary>A detached start reported its pid: watched through a pidfd from now on (or
    /// known to have exited, if it is gone already).</summary>
    public void Adopt(int pid)
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
    }

    /// <summary>SIGTERM, then SIGKILL after <paramref name="grace"/>; reaps it. Returns how it
    /// ended, or null when it had exited already.</summary>
    public string? Stop(TimeSpan grace)
    {
        // A child that reported failure is usually exiting already: give it a moment, so the
        // log says how it ended rather than that it was killed.
        if ((WaitForExit(block: false) ?? WaitForExitBriefly()) is not null)
        {
            return null;
        }

        Signal(Interop.Libc.SIGTERM);
        long deadline = Environment.TickCount64 + (long)grace.TotalMilliseconds;
        while (Environment.TickCount64 < deadline)
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

    /// <summary>Reaps the process whenever it exits while this process runs (so it never stays
    /// a zombie), then calls <paramref name="exited"/> with how it ended.</summary>
    public void ReapWhenExited(Action<string> exited)
    {
        lock (_gate)
        {
            _reaping = true;
        }

        var thread = new Thread(() => exited(WaitForExit(block: true) ?? "exit status unknown")) { IsBackground = true, Name = $"Handoff reaper {Pid}" };
        thread.Start();
    }

    /// <summary>Waits a moment (half a second) for the process to become reapable: end-of-file
    /// on its pipe comes a moment before.</summary>
    public string? WaitForExitBriefly()
    {
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
    public string? WaitForExit(bool block)
    {
        lock (_gate)
        {
            if (_exitStatus is { } known)
            {
                return Describe(known);
            }
        }

        if (IsDetached)
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

    /// <summary>"exit code N", "killed by signal N", or why the status is not known.</summary>
    public static string Describe(int status)
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

    // A detached generation is not this process's child: once it exits, systemd reaps it and
    // its pid may be reused, so it is signalled through its pidfd.
    private void Signal(int signal)
    {
        lock (_gate)
        {
            if (!IsDetached)
            {
                Interop.Libc.Kill(Pid, signal);
            }
            else if (_pidfd >= 0)
            {
                Interop.Libc.PidfdSendSignal(_pidfd, signal);
            }
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
}
