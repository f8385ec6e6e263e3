namespace Handoff;

/// <summary>
/// Counts the connections a process holds, as the kernel sees them: its TCP sockets in any state
/// but LISTEN and the connected Unix stream sockets that a listener accepted (they carry its
/// path; a socket pair has none, such as the channel on which a generation moves its
/// connections), other than standard input, output and error (under systemd those are sockets to
/// the journal). Used for older generations, which no longer answer on the control socket while
/// they drain.
/// </summary>
internal static class ProcessSockets
{
    private const string TcpListen = "0A";
    private const string UnixConnected = "03";
    private const string UnixStream = "0001";

    /// <summary>The count, or null when the process is gone or its descriptors cannot be read
    /// (another user's process).</summary>
    public static int? CountConnections(int pid)
    {
        try
        {
            var inodes = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (fd, target) in ProcFs.Fds(pid))
            {
                if (fd > 2 && target is not null && target.StartsWith("socket:[", StringComparison.Ordinal))
                {
                    inodes.Add(target[8..^1]);
                }
            }

            if (inodes.Count == 0)
            {
                return 0;
            }

            // The process's own network namespace: /proc/PID/net.
            int count = 0;
            foreach (string table in (string[])["tcp", "tcp6"])
            {
                count += CountRows(ProcFs.NetTable(pid, table), inodes, fields => fields.Length > 9 && fields[3] != TcpListen ? fields[9] : null);
            }

            // Num RefCount Protocol Flags Type St Inode Path (an accepted socket has its listener's)
            count += CountRows(ProcFs.NetTable(pid, "unix"), inodes, fields => fields.Length > 7 && fields[4] == UnixStream && fields[5] == UnixConnected ? fields[6] : null);
            return count;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static int CountRows(IEnumerable<string[]> rows, HashSet<string> inodes, Func<string[], string?> inodeOf) =>
        rows.Count(fields => inodeOf(fields) is { } inode && inodes.Contains(inode));
}
