using System.Text;

namespace Handoff;

/// <summary>The old generation's view of a new generation it spawned: its pid and the read
/// end of its ready pipe. Reaps the process itself, because .NET reaps only children it
/// started with <see cref="System.Diagnostics.Process"/>.</summary>
internal sealed class StartedGeneration : IStartedGeneration
{
    // How often the wait loop looks at the process between pipe events.
    private const int PollMilliseconds = 50;

    private readonly Lock _gate = new();
    private int _readyFd;
    private int? _exitStatus;

    public StartedGeneration(int pid, int readyFd)
    {
        Pid = pid;
        _readyFd = readyFd;
    }

    public int Pid { get; }

    public Task<string?> WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(() => WaitReady(timeout, cancellationToken), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public Task<string?> TerminateAsync(TimeSpan grace) =>
        Task.Factory.StartNew(() => Terminate(grace), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    public void ReapWhenExited(Action<string> exited)
    {
        CloseReadyPipe();
        var thread = new Thread(() => exited(WaitForExit(block: true) ?? "exit status unknown")) { IsBackground = true, Name = $"Handoff reaper {Pid}" };
        thread.Start();
    }

    // Deadlines on the monotonic clock: a wall-clock step must not cut or stretch a wait.
    private static long Now => Environment.TickCount64;

    private unsafe string? WaitReady(TimeSpan timeout, CancellationToken cancellationToken)
    {
        long deadline = Now + (long)timeout.TotalMilliseconds;
        var line = new List<byte>();
        byte* buffer = stackalloc byte[512];
        try
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long remaining = deadline - Now;
                if (remaining <= 0)
                {
                    return $"it did not report ready within {timeout.TotalSeconds:0.###} s (Handoff:UpgradeTimeout)";
                }

                var poll = new Interop.Libc.PollFd { Fd = _readyFd, Events = Interop.Libc.POLLIN };
                int ready = Interop.Libc.Poll(&poll, 1, (int)Math.Min(remaining, PollMilliseconds));
                if (ready > 0)
                {
                    nint n = Interop.Libc.Read(_readyFd, buffer, 512);
                    if (n > 0)
                    {
                        line.AddRange(new ReadOnlySpan<byte>(buffer, (int)n));
                        int newline = line.IndexOf((byte)'\n');
                        if (newline >= 0)
                        {
                            return ReadyPipe.ParseLine(Encoding.UTF8.GetString([.. line.Take(newline)]));
                        }

                        continue;
                    }

                    if (n == 0)
                    {
                        // The child closed the pipe without a line: it exited or is exiting.
                        string? exit = WaitForExit(block: false) ?? WaitForExitBriefly();
                        return exit is null
                            ? "it closed its ready pipe without reporting ready"
                            : $"it exited ({exit}) before reporting ready";
                    }
                }

                if (WaitForExit(block: false) is { } ended)
                {
                    return $"it exited ({ended}) before reporting ready";
                }
            }
        }
        finally
        {
            CloseReadyPipe();
        }
    }

    private string? Terminate(TimeSpan grace)
    {
        if (WaitForExit(block: false) is not null)
        {
            return null;
        }

        Interop.Libc.Kill(Pid, Interop.Libc.SIGTERM);
        long deadline = Now + (long)grace.TotalMilliseconds;
        while (Now < deadline)
        {
            if (WaitForExit(block: false) is { } ended)
            {
                return ended + " after SIGTERM";
            }

            Thread.Sleep(20);
        }

        Interop.Libc.Kill(Pid, Interop.Libc.SIGKILL);
        return (WaitForExit(block: true) ?? "unknown status") + " after SIGKILL";
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

    private static string Describe(int status)
    {
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
