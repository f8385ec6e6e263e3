using System.Buffers.Binary;

namespace Handoff;

/// <summary>
/// How many connections wait in the accept queues of this network namespace's listening TCP
/// sockets, and how many each queue takes: what <c>ss -lt</c> shows as Recv-Q and Send-Q.
/// </summary>
/// <remarks>
/// <para>
/// A draining generation closes its idle keep-alive connections, and their clients reconnect
/// to the socket the new generation accepts on. When they come faster than the new generation
/// accepts (a process that has just started runs its code cold), the queue fills and the kernel
/// drops the next SYNs; each such client waits for its SYN to be sent again, a second later.
/// Watching the queue lets the drain close connections only as fast as they are accepted.
/// </para>
/// <para>
/// The queues are read through the kernel's sock_diag netlink interface, as <c>ss</c> reads
/// them, by socket inode: the draining generation may already have closed its own descriptor
/// of the socket (it must, once the new generation is committed), and no descriptor is needed.
/// A dump filtered to listening sockets walks only the kernel's listening hash, not the
/// established connections, so reading it every tick of a drain costs little.
/// </para>
/// </remarks>
internal sealed class AcceptQueues : IDisposable
{
    // struct nlmsghdr (16 bytes) followed by struct inet_diag_req_v2 (56 bytes).
    private const int RequestSize = 72;
    private const int HeaderSize = 16;
    private const ushort SOCK_DIAG_BY_FAMILY = 20;
    private const ushort NLM_F_REQUEST = 0x1;
    private const ushort NLM_F_DUMP = 0x300;
    private const ushort NLMSG_ERROR = 2;
    private const ushort NLMSG_DONE = 3;
    private const byte AF_INET = 2;
    private const byte AF_INET6 = 10;
    private const byte IPPROTO_TCP = 6;
    private const int TCP_LISTEN = 10;

    // struct inet_diag_msg: idiag_rqueue, idiag_wqueue and idiag_inode; for a listening socket
    // the first two are sk_ack_backlog and sk_max_ack_backlog.
    private const int QueuedOffset = 56;
    private const int CapacityOffset = 60;
    private const int InodeOffset = 68;
    private const int MessageSize = 72;

    private readonly byte[] _buffer = new byte[32 * 1024];
    private int _fd;
    private uint _sequence;

    private AcceptQueues(int fd) => _fd = fd;

    /// <summary>Opens the netlink socket; null, with the reason, where the kernel or a sandbox
    /// does not allow it.</summary>
    public static AcceptQueues? TryOpen(out string? error)
    {
        int fd = Interop.Libc.NetlinkSocket(Interop.Libc.NETLINK_SOCK_DIAG, out int errno);
        error = fd < 0 ? $"socket(AF_NETLINK, NETLINK_SOCK_DIAG) failed: errno {errno}" : null;
        return fd < 0 ? null : new AcceptQueues(fd);
    }

    /// <summary>Fills <paramref name="queues"/> (cleared first) with every listening TCP socket's
    /// queue, by inode; false, with the reason, if the kernel did not answer as expected.</summary>
    public bool TryRead(Dictionary<uint, AcceptQueue> queues, out string? error)
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        queues.Clear();
        return TryDump(AF_INET, queues, out error) && TryDump(AF_INET6, queues, out error);
    }

    public void Dispose()
    {
        if (_fd >= 0)
        {
            Interop.Libc.Close(_fd);
            _fd = -1;
        }
    }

    private bool TryDump(byte family, Dictionary<uint, AcceptQueue> queues, out string? error)
    {
        uint sequence = ++_sequence;
        Span<byte> request = stackalloc byte[RequestSize];
        request.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(request, RequestSize);
        BinaryPrimitives.WriteUInt16LittleEndian(request[4..], SOCK_DIAG_BY_FAMILY);
        BinaryPrimitives.WriteUInt16LittleEndian(request[6..], NLM_F_REQUEST | NLM_F_DUMP);
        BinaryPrimitives.WriteUInt32LittleEndian(request[8..], sequence);
        request[HeaderSize] = family;
        request[HeaderSize + 1] = IPPROTO_TCP;
        BinaryPrimitives.WriteUInt32LittleEndian(request[(HeaderSize + 4)..], 1u << TCP_LISTEN);
        if (Interop.Libc.Send(_fd, request) is var sendError and not 0)
        {
            error = $"sock_diag request failed: errno {sendError}";
            return false;
        }

        // The kernel answers a dump with as many datagrams as it needs and ends it with
        // NLMSG_DONE (or NLMSG_ERROR); it always does, so these reads cannot wait forever.
        while (true)
        {
            int received = Interop.Libc.Receive(_fd, _buffer);
            if (received < 0)
            {
                error = $"sock_diag read failed: errno {-received}";
                return false;
            }

            switch (Parse(_buffer.AsSpan(0, received), sequence, queues))
            {
                case ParseResult.More:
                    continue;
                case ParseResult.Done:
                    error = null;
                    return true;
                default:
                    error = "sock_diag answered with an error or a malformed message";
                    return false;
            }
        }
    }

    internal enum ParseResult
    {
        More,
        Done,
        Failed,
    }

    /// <summary>Reads one datagram of a sock_diag dump into <paramref name="queues"/>.</summary>
    internal static ParseResult Parse(ReadOnlySpan<byte> datagram, uint sequence, Dictionary<uint, AcceptQueue> queues)
    {
        while (datagram.Length >= HeaderSize)
        {
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(datagram);
            ushort type = BinaryPrimitives.ReadUInt16LittleEndian(datagram[4..]);
            if (length < HeaderSize || length > datagram.Length)
            {
                return ParseResult.Failed;
            }

            if (BinaryPrimitives.ReadUInt32LittleEndian(datagram[8..]) == sequence)
            {
                if (type == NLMSG_DONE)
                {
                    return ParseResult.Done;
                }

                if (type == NLMSG_ERROR || type != SOCK_DIAG_BY_FAMILY || length < HeaderSize + MessageSize)
                {
                    return ParseResult.Failed;
                }

                var message = datagram[HeaderSize..(int)length];
                uint inode = BinaryPrimitives.ReadUInt32LittleEndian(message[InodeOffset..]);
                queues[inode] = new AcceptQueue(
                    (int)BinaryPrimitives.ReadUInt32LittleEndian(message[QueuedOffset..]),
                    (int)BinaryPrimitives.ReadUInt32LittleEndian(message[CapacityOffset..]));
            }

            // Messages are aligned to 4 bytes.
            int next = (int)((length + 3) & ~3u);
            datagram = next >= datagram.Length ? [] : datagram[next..];
        }

        return ParseResult.More;
    }
}

/// <summary>One listening socket's accept queue: the connections waiting to be accepted, and
/// how many it takes before the kernel drops the next SYN (the backlog, capped by
/// net.core.somaxconn).</summary>
internal readonly record struct AcceptQueue(int Queued, int Capacity);
