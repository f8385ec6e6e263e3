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
    public IReadOnlyList<int> TakeReleased()
    {
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
        }
    }

    /// <summary>Waits up to <paramref name="milliseconds"/> for bytes and keeps them; returns
    /// how many (0: none yet), or null at end-of-file or once the pipe is closed.</summary>
    private unsafe int? Receive(int milliseconds)
    {
        int fd;
        lock (_gate)
        {
            fd = _fd;
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
}

/// <summary>What a wait for a line on the ready pipe found.</summary>
internal enum ReadOutcome
{
    Nothing,
    Line,
    EndOfFile,
}
