using System.Text;

namespace Handoff;

/// <summary>
/// The pipe on which a new generation tells the old one whether it is ready. One line, then
/// the pipe is closed: <c>ready</c>, or <c>failed REASON</c>. If the new generation dies
/// first, the old one reads end-of-file. See docs/protocol.md.
/// </summary>
internal sealed class ReadyPipe
{
    public const string ReadyLine = "ready";
    public const string FailedPrefix = "failed ";

    // Longer reasons are cut: the line must fit in one atomic pipe write (PIPE_BUF is 4096).
    public const int MaxLineBytes = 4000;

    private readonly Lock _gate = new();
    private int _fd;

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

    /// <summary>Reports ready; false when nobody read it any more (the parent is gone or gave
    /// up) or it was reported already.</summary>
    public bool ReportReady() => WriteAndClose(ReadyLine);

    public bool ReportFailed(string reason) => WriteAndClose(FailedPrefix + reason.ReplaceLineEndings(" "));

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

    private unsafe bool WriteAndClose(string line)
    {
        lock (_gate)
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
            nint written;
            fixed (byte* data = bytes)
            {
                // A parent that died or gave up has closed its end: EPIPE (.NET ignores SIGPIPE).
                written = Interop.Libc.Write(_fd, data, (nuint)bytes.Length);
            }

            Interop.Libc.Close(_fd);
            _fd = -1;
            return written == bytes.Length;
        }
    }
}
