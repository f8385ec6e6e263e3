using System.Buffers.Binary;

namespace Handoff;

/// <summary>What kind of connection moves, which decides who adopts it in the new generation.</summary>
internal enum MoveKind : byte
{
    /// <summary>An HTTP/1.1 connection between two requests; Kestrel adopts it as if accepted.</summary>
    Http1 = 1,

    /// <summary>A connection of the application's own protocol (the core's connection drain);
    /// the application adopts it, with the state it saved.</summary>
    Tcp = 2,

    /// <summary>A WebSocket between two messages (ASP.NET Core); the endpoint named in its state
    /// rebuilds it and its session goes on. Sent only to a generation that said it resumes that
    /// endpoint (<see cref="MoveChannel.ResumesPrefix"/>).</summary>
    WebSocket = 3,
}

/// <summary>One connection received from the previous generation: the new generation owns
/// <see cref="Fd"/> (FD_CLOEXEC set) and must serve or close it.</summary>
/// <param name="Fd">The connected socket; -1 when its descriptor did not arrive (this process
/// had none left: the kernel drops it, and the connection with it).</param>
/// <param name="Kind">Who adopts it.</param>
/// <param name="ListenerInode">The inode of the listening socket that accepted it (the same
/// socket in both generations), to serve it as that listener's connection.</param>
/// <param name="Bytes">Bytes the previous generation had read from it but not consumed (a
/// pipelined request): they come before anything read from the socket.</param>
/// <param name="State">The application's state for the connection (<see cref="MoveKind.Tcp"/>,
/// <see cref="MoveKind.WebSocket"/>).</param>
internal sealed record MovedConnection(int Fd, MoveKind Kind, ulong ListenerInode, byte[] Bytes, byte[] State);

/// <summary>
/// The wire format of the move channel: a Unix stream socket pair made for an upgrade, on which
/// the old generation sends the new one each connection it moves, one frame each. See
/// docs/protocol.md ("Connections that move").
/// </summary>
/// <remarks>
/// A frame is a 24-byte header, then the connection's unconsumed bytes, then its state. The
/// connection's descriptor goes as SCM_RIGHTS with the header's first byte. Header, big-endian:
/// magic "HM" (2 bytes), version (1), kind (1), bytes length (4), state length (4), reserved (4,
/// zero), listener inode (8). A stream, not datagrams, because a connection's bytes may be larger
/// than a datagram can be (Kestrel buffers up to 1 MB of a request by default). Blocking calls:
/// the sender and the receiver each run on a thread of their own for the duration.
/// </remarks>
internal static class MoveChannel
{
    /// <summary>The frame format's version; a receiver refuses any other.</summary>
    public const byte Version = 1;

    public const int HeaderLength = 24;

    /// <summary>The most unconsumed bytes a frame may carry: far above Kestrel's default request
    /// buffer (1 MB), and a bound a malformed frame cannot push the receiver past.</summary>
    public const int MaxBytes = 16 << 20;

    /// <summary>The most state a frame may carry.</summary>
    public const int MaxState = 1 << 20;

    private const ushort Magic = 0x484D; // "HM"

    /// <summary>The variable that names the new generation's end of the channel: <c>FD:INODE</c>.
    /// A variable of its own, not a field of <see cref="HandoverEnvironment"/>: an older build,
    /// which does not know it, starts all the same (it never says it adopts, so nothing is sent).</summary>
    public const string VariableName = "HANDOFF_MOVES";

    /// <summary>The line a new generation writes after <c>ready</c> when it reads the channel.</summary>
    public const string AcceptsLine = "moves 1";

    /// <summary>The line that names, after <c>ready</c>, what the new generation resumes beyond
    /// HTTP/1.1 and raw connections: WebSocket endpoints, each a URI-escaped name, separated by
    /// spaces. A build that does not write it gets no <see cref="MoveKind.WebSocket"/>.</summary>
    public const string ResumesPrefix = "resumes ";

    /// <summary>The <see cref="ResumesPrefix"/> line for <paramref name="names"/>.</summary>
    public static string ResumesLine(IEnumerable<string> names) =>
        ResumesPrefix + string.Join(' ', names.Select(Uri.EscapeDataString));

    /// <summary>The names a <see cref="ResumesPrefix"/> line carries.</summary>
    public static IReadOnlySet<string> ParseResumes(string line) =>
        line[ResumesPrefix.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(Uri.UnescapeDataString).ToHashSet(StringComparer.Ordinal);

    public static string Format(int fd, ulong inode) => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{fd}:{inode}");

    /// <summary>The descriptor and inode named by <see cref="VariableName"/>, or null when the
    /// value is not two positive numbers.</summary>
    public static (int Fd, ulong Inode)? Parse(string? value)
    {
        string[] parts = value?.Split(':') ?? [];
        return parts.Length == 2 &&
            int.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int fd) && fd > 2 &&
            ulong.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong inode) && inode > 0
            ? (fd, inode)
            : null;
    }

    /// <summary>Sends one connection. The caller still owns <paramref name="connectionFd"/> and
    /// closes it afterwards (the receiver has its own descriptor for the connection by then).</summary>
    /// <exception cref="IOException">The channel is closed or broken (the new generation is gone).</exception>
    public static void Send(int channel, int connectionFd, MoveKind kind, ulong listenerInode, ReadOnlySpan<byte> bytes, ReadOnlySpan<byte> state)
    {
        if (bytes.Length > MaxBytes || state.Length > MaxState)
        {
            throw new ArgumentException($"A moved connection carries at most {MaxBytes} bytes and {MaxState} bytes of state, not {bytes.Length} and {state.Length}.");
        }

        byte[] frame = new byte[HeaderLength + bytes.Length + state.Length];
        var header = frame.AsSpan(0, HeaderLength);
        BinaryPrimitives.WriteUInt16BigEndian(header, Magic);
        header[2] = Version;
        header[3] = (byte)kind;
        BinaryPrimitives.WriteInt32BigEndian(header[4..], bytes.Length);
        BinaryPrimitives.WriteInt32BigEndian(header[8..], state.Length);
        BinaryPrimitives.WriteUInt64BigEndian(header[16..], listenerInode);
        bytes.CopyTo(frame.AsSpan(HeaderLength));
        state.CopyTo(frame.AsSpan(HeaderLength + bytes.Length));

        int sent = Interop.Libc.SendWithDescriptor(channel, frame, connectionFd);
        Interop.Libc.WriteAll(channel, frame.AsSpan(sent));
    }

    /// <summary>Receives the next connection, or null when the channel ended between frames
    /// (the old generation has moved all it will).</summary>
    /// <exception cref="HandoffProtocolException">A malformed frame (any descriptor that came
    /// with it is closed).</exception>
    public static MovedConnection? Receive(int channel)
    {
        Span<byte> header = stackalloc byte[HeaderLength];
        var fds = new List<int>(1);
        try
        {
            int got = 0;
            while (got < HeaderLength)
            {
                int n = Interop.Libc.ReceiveWithDescriptors(channel, header[got..], fds);
                if (n == 0)
                {
                    return got == 0 && fds.Count == 0 ? null : throw Malformed($"the channel ended inside a frame's header ({got} of {HeaderLength} bytes)");
                }

                got += n;
            }

            if (BinaryPrimitives.ReadUInt16BigEndian(header) != Magic || header[2] != Version)
            {
                throw Malformed($"expected magic 'HM' and version {Version}, found {Convert.ToHexString(header[..3])}");
            }

            var kind = (MoveKind)header[3];
            int bytesLength = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
            int stateLength = BinaryPrimitives.ReadInt32BigEndian(header[8..]);
            if (kind is not (MoveKind.Http1 or MoveKind.Tcp or MoveKind.WebSocket) || bytesLength is < 0 or > MaxBytes || stateLength is < 0 or > MaxState)
            {
                throw Malformed($"kind {header[3]}, {bytesLength} bytes and {stateLength} bytes of state (kinds 1 to 3, at most {MaxBytes} and {MaxState} bytes)");
            }

            if (fds.Count > 1)
            {
                throw Malformed($"a frame must bring one descriptor, not {fds.Count}");
            }

            byte[] bytes = new byte[bytesLength];
            byte[] state = new byte[stateLength];
            try
            {
                if ((bytesLength > 0 && !Interop.Libc.ReadAll(channel, bytes)) || (stateLength > 0 && !Interop.Libc.ReadAll(channel, state)))
                {
                    throw Malformed("the channel ended before a frame's bytes");
                }
            }
            catch (EndOfStreamException e)
            {
                throw Malformed($"the channel ended inside a frame's bytes ({e.Message})");
            }

            // No descriptor: the kernel could not give it to this process (it had none left,
            // EMFILE, and dropped it). That connection is lost, but not the frames after it.
            var connection = new MovedConnection(fds.Count == 1 ? fds[0] : -1, kind, BinaryPrimitives.ReadUInt64BigEndian(header[16..]), bytes, state);
            fds.Clear();
            return connection;
        }
        finally
        {
            // Descriptors of a frame that is not returned are never served: closed here.
            foreach (int fd in fds)
            {
                Interop.Libc.Close(fd);
            }
        }
    }

    /// <summary>The length of the new generation's answer at the channel's end.</summary>
    public const int TotalsLength = 12;

    private const ushort TotalsMagic = 0x4841; // "HA"

    /// <summary>
    /// The new generation's answer once the old one has moved all it will (its end of file): how
    /// many connections it took (served, or sent on to a newer generation) and how many it closed
    /// (no listener, no descriptor left). 12 bytes, big-endian: magic "HA", version, a zero byte,
    /// taken (4), closed (4). The one thing the new generation ever writes on the channel, at its
    /// end, so that neither side can block the other while connections are on their way.
    /// </summary>
    /// <returns>False when the old generation no longer listens (it has exited).</returns>
    public static bool WriteTotals(int channel, int taken, int closed)
    {
        Span<byte> totals = stackalloc byte[TotalsLength];
        BinaryPrimitives.WriteUInt16BigEndian(totals, TotalsMagic);
        totals[2] = Version;
        totals[3] = 0;
        BinaryPrimitives.WriteInt32BigEndian(totals[4..], taken);
        BinaryPrimitives.WriteInt32BigEndian(totals[8..], closed);
        try
        {
            Interop.Libc.WriteAll(channel, totals);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Reads the new generation's totals after this side shut down its writing; null
    /// when they do not come (the new generation died, or is an older build) or are malformed.</summary>
    public static (int Taken, int Closed)? ReadTotals(int channel)
    {
        Span<byte> totals = stackalloc byte[TotalsLength];
        try
        {
            if (!Interop.Libc.ReadAll(channel, totals))
            {
                return null;
            }
        }
        catch (Exception e) when (e is IOException or EndOfStreamException)
        {
            return null;
        }

        int taken = BinaryPrimitives.ReadInt32BigEndian(totals[4..]);
        int closed = BinaryPrimitives.ReadInt32BigEndian(totals[8..]);
        return BinaryPrimitives.ReadUInt16BigEndian(totals) == TotalsMagic && totals[2] == Version && taken >= 0 && closed >= 0
            ? (taken, closed)
            : null;
    }

    private static HandoffProtocolException Malformed(string why) =>
        new($"A malformed frame on the move channel from the previous generation: {why}. The connection it carried is closed; the channel is not read further.");
}
