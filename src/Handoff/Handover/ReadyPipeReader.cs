using System.Text;

namespace Handoff;

/// <summary>The old generation's end of a new generation's ready pipe (docs/protocol.md,
/// "Readiness"): the lines as they arrive. One reader at a time; <see cref="Close"/> from any
/// thread.</summary>
internal sealed class ReadyPipeReader(int fd)
{
    private readonly Lock _gate = new();
    private readonly List<byte> _received = [];
    private int _fd = fd;

    // A pipe of this process's own that Wake writes to, so that a wait for the new generation's
    // next line ends at once when the old generation commits, not at the wait's timeout.
    private int _wakeRead = -1;
    private int _wakeWrite = -1;

    /// <summary>True once <see cref="Close"/> ran.</summary>
    public bool IsClosed
    {
        get
        {
            lock (_gate)
            {
                return _fd < 0;
            }
        }
    }

    /// <summary>Waits up to <paramref name="milliseconds"/> for a whole line.</summary>
    public ReadOutcome ReadLine(int milliseconds, out string? line)
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

    /// <summary>The "released" line the new generation writes with its ready line (in the same
    /// write(2), so read with it), taken out of what was received; empty when there is none.</summary>
    public IReadOnlyList<int> TakeReleased() =>
        TakeLine(ReadyPipe.ReleasedPrefix) is { } line ? ReadyPipe.ParseReleased(line) : [];

    /// <summary>The "timeline" line the new generation writes with its ready line, taken out of
    /// what was received; null when there is none (a build older than this one).</summary>
    public ChildMoments? TakeTimeline() =>
        TakeLine(ChildMoments.Prefix) is { } line ? ChildMoments.Parse(line) : null;

    /// <summary>Whether the new generation wrote, with its ready line, that it adopts moved
    /// connections (<see cref="MoveChannel.AcceptsLine"/>); false for a build that does not.</summary>
    public bool TakeAcceptsMoves() => TakeLine(MoveChannel.AcceptsLine) is not null;

    /// <summary>What the new generation resumes beyond HTTP/1.1 and raw connections
    /// (<see cref="MoveChannel.ResumesPrefix"/>); empty for a build that does not say.</summary>
    public IReadOnlySet<string> TakeResumes() =>
        TakeLine(MoveChannel.ResumesPrefix) is { } line ? MoveChannel.ParseResumes(line) : new HashSet<string>();

    // A line the new generation wrote with "ready", in the same write: all of it is here, or
    // comes with the next read.
    private string? TakeLine(string prefix)
    {
        do
        {
            string[] lines = Encoding.UTF8.GetString([.. _received]).Split('\n');
            for (int i = 0; i < lines.Length - 1; i++)
            {
                if (lines[i].StartsWith(prefix, StringComparison.Ordinal))
                {
                    _received.Clear();
                    _received.AddRange(Encoding.UTF8.GetBytes(string.Join('\n', lines.Where((_, j) => j != i))));
                    return lines[i];
                }
            }
        }
        while (Receive(0) > 0);

        return null;
    }

    /// <summary>From now on <see cref="Wake"/> ends a wait of <see cref="ReadLine"/> at once.</summary>
    public void PrepareWake()
    {
        lock (_gate)
        {
            if (_fd >= 0 && _wakeRead < 0)
            {
                try
                {
                    (_wakeRead, _wakeWrite) = Interop.Libc.CreatePipe();
                }
                catch (IOException)
                {
                    // No descriptor left (EMFILE): the commit waits for the wait's timeout
                    // instead, as it did before there was a wake-up.
                }
            }
        }
    }

    /// <summary>Ends the current or next wait of <see cref="ReadLine"/> (it returns with what it
    /// has), after <see cref="PrepareWake"/>.</summary>
    public unsafe void Wake()
    {
        lock (_gate)
        {
            if (_wakeWrite >= 0)
            {
                byte one = 1;
                _ = Interop.Libc.Write(_wakeWrite, &one, 1);
            }
        }
    }

    /// <summary>Closes this end: the new generation learns (end-of-file on its next write, or
    /// its watch of the pipe) that this generation is no longer reading.</summary>
    public void Close()
    {
        lock (_gate)
        {
            if (_fd >= 0)
            {
                Interop.Libc.Close(_fd);
                _fd = -1;
            }

            if (_wakeRead >= 0)
            {
                Interop.Libc.Close(_wakeRead);
                Interop.Libc.Close(_wakeWrite);
                _wakeRead = _wakeWrite = -1;
            }
        }
    }

    /// <summary>Waits up to <paramref name="milliseconds"/> for bytes and keeps them; returns
    /// how many (0: none yet), or null at end-of-file or once the pipe is closed.</summary>
    private unsafe int? Receive(int milliseconds)
    {
        int fd;
        int wake;
        lock (_gate)
        {
            fd = _fd;
            wake = _wakeRead;
        }

        if (fd < 0)
        {
            return null;
        }

        var polls = stackalloc Interop.Libc.PollFd[2];
        polls[0] = new Interop.Libc.PollFd { Fd = fd, Events = Interop.Libc.POLLIN };
        polls[1] = new Interop.Libc.PollFd { Fd = wake, Events = Interop.Libc.POLLIN };
        if (Interop.Libc.Poll(polls, wake >= 0 ? 2u : 1u, milliseconds) <= 0)
        {
            return 0;
        }

        if (wake >= 0 && polls[1].Revents != 0)
        {
            byte woken;
            _ = Interop.Libc.Read(wake, &woken, 1);
            if (polls[0].Revents == 0)
            {
                return 0;
            }
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
}

/// <summary>What a wait for a line on the ready pipe found.</summary>
internal enum ReadOutcome
{
    Nothing,
    Line,
    EndOfFile,
}
