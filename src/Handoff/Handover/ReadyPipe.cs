using System.Text;

namespace Handoff;

/// <summary>
/// The new generation's end of the pipe to the old one. It writes one line: <c>ready</c>, or
/// <c>failed REASON</c>. After <c>ready</c> it keeps the pipe open while the old generation can
/// still roll back (<see cref="HandoffOptions.RollbackWindow"/>): the old one closes its end
/// when it commits to the handover, and until then this one does not start an upgrade of its
/// own, and withdraws with a second line, <c>stopping</c>, if it begins to stop. If the new
/// generation dies, the old one reads end-of-file. See docs/protocol.md.
/// </summary>
internal sealed class ReadyPipe
{
    public const string ReadyLine = "ready";
    public const string StoppingLine = "stopping";
    public const string FailedPrefix = "failed ";
    public const string PidPrefix = "pid ";

    // After "ready", in the same write: the inherited listeners (by position) this generation
    // does not serve. Older parents ignore lines they do not know after "ready".
    public const string ReleasedPrefix = "released ";

    // Longer reasons are cut: the line must fit in one atomic pipe write (PIPE_BUF is 4096).
    public const int MaxLineBytes = 4000;

    private readonly Lock _gate = new();
    private int _fd;
    private bool _reportedReady;

    public ReadyPipe(int fd) => _fd = fd;

    public bool IsOpen
    {
        get
        {
            lock (_gate)
            {
                return _fd >= 0;
            }
        }
    }

    /// <summary>Reports ready and keeps the pipe open; false when nobody read it any more
    /// (the parent is gone or gave up) or a report was made already. <paramref name="released"/>:
    /// the positions of the inherited listeners this generation does not serve, which the
    /// parent then keeps serving until it commits. <paramref name="moments"/>: when this process
    /// started, adopted and became ready, for the parent's timeline of the upgrade.</summary>
    public bool ReportReady(IReadOnlyList<int>? released = null, ChildMoments? moments = null, bool acceptsMoves = false, IReadOnlyCollection<string>? resumes = null)
    {
        string report = released is { Count: > 0 }
            ? ReadyLine + "\n" + ReleasedPrefix + string.Join(',', released.Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)))
            : ReadyLine;
        if (moments is { } timeline)
        {
            report += "\n" + timeline.ToLine();
        }

        if (acceptsMoves)
        {
            report += "\n" + MoveChannel.AcceptsLine;
            if (resumes is { Count: > 0 })
            {
                report += "\n" + MoveChannel.ResumesLine(resumes);
            }
        }

        lock (_gate)
        {
            if (_reportedReady || !Write(report))
            {
                Close();
                return false;
            }

            _reportedReady = true;
            return true;
        }
    }

    /// <summary>For a generation started detached (see <see cref="HandoverEnvironment"/>):
    /// tells the old generation this process's pid, first thing. False when nobody reads any
    /// more (the old generation gave up or is gone).</summary>
    public bool ReportPid(int pid)
    {
        lock (_gate)
        {
            return Write(PidPrefix + pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    /// <summary>Reports that this generation cannot become ready, and closes the pipe.</summary>
    public bool ReportFailed(string reason)
    {
        lock (_gate)
        {
            bool written = !_reportedReady && Write(FailedPrefix + reason.ReplaceLineEndings(" "));
            Close();
            return written;
        }
    }

    /// <summary>After ready: tells a parent that can still roll back that this generation
    /// begins to stop, so it accepts again; closes the pipe. Nothing when the parent has
    /// committed or is gone.</summary>
    public void ReportStopping()
    {
        lock (_gate)
        {
            if (_reportedReady && !PeerClosedLocked())
            {
                Write(StoppingLine);
            }

            Close();
        }
    }

    /// <summary>True when the parent can no longer roll back: it has closed its end (it
    /// committed to the handover, or it is gone), or this is not an inherited generation.</summary>
    public bool IsParentCommitted()
    {
        lock (_gate)
        {
            if (PeerClosedLocked())
            {
                Close();
                return true;
            }

            return false;
        }
    }

    /// <summary>The positions in a <see cref="ReleasedPrefix"/> line; nothing it cannot read.</summary>
    public static IReadOnlyList<int> ParseReleased(string line) =>
        [.. line[ReleasedPrefix.Length..].Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(part => int.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i) ? i : -1)
            .Where(i => i >= 0)];

    /// <summary>Parses what the old generation read: null means the line was "ready", anything
    /// else is the reason for failure.</summary>
    public static string? ParseLine(string line)
    {
        line = line.TrimEnd('\n');
        if (line == ReadyLine)
        {
            return null;
        }

        return line.StartsWith(FailedPrefix, StringComparison.Ordinal)
            ? line[FailedPrefix.Length..]
            : $"the new generation sent '{line}' instead of '{ReadyLine}'";
    }

    // A pipe's write end polls POLLERR once no read end is left.
    private unsafe bool PeerClosedLocked()
    {
        if (_fd < 0)
        {
            return true;
        }

        var poll = new Interop.Libc.PollFd { Fd = _fd, Events = Interop.Libc.POLLOUT };
        return Interop.Libc.Poll(&poll, 1, 0) > 0 && (poll.Revents & (Interop.Libc.POLLERR | Interop.Libc.POLLHUP)) != 0;
    }

    private unsafe bool Write(string line)
    {
        if (_fd < 0)
        {
            return false;
        }

        byte[] bytes = Encoding.UTF8.GetBytes(line);
        if (bytes.Length > MaxLineBytes)
        {
            Array.Resize(ref bytes, MaxLineBytes);
        }

        bytes = [.. bytes, (byte)'\n'];
        fixed (byte* data = bytes)
        {
            // A parent that died or gave up has closed its end: EPIPE (.NET ignores SIGPIPE).
            return Interop.Libc.Write(_fd, data, (nuint)bytes.Length) == bytes.Length;
        }
    }

    private void Close()
    {
        if (_fd >= 0)
        {
            Interop.Libc.Close(_fd);
            _fd = -1;
        }
    }
}
