using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int AF_NETLINK = 16;
        internal const int NETLINK_SOCK_DIAG = 4;

        /// <summary>A netlink socket of <paramref name="protocol"/> with FD_CLOEXEC set, or -1
        /// with the errno in <paramref name="errno"/> (a sandbox may forbid netlink).</summary>
        internal static int NetlinkSocket(int protocol, out int errno)
        {
            int fd = SocketCore(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, protocol);
            errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
            return fd;
        }

        /// <summary>write(2) of one message on a socket that needs no address (a netlink socket
        /// sends to the kernel); returns 0 or the errno.</summary>
        internal static unsafe int Send(int fd, ReadOnlySpan<byte> message)
        {
            fixed (byte* data = message)
            {
                nint sent;
                do
                {
                    sent = Write(fd, data, (nuint)message.Length);
                }
                while (sent < 0 && Marshal.GetLastPInvokeError() == EINTR);
                return sent < 0 ? Marshal.GetLastPInvokeError() : 0;
            }
        }

        /// <summary>read(2) of one message; returns its length, or the negated errno.</summary>
        internal static unsafe int Receive(int fd, Span<byte> buffer)
        {
            fixed (byte* data = buffer)
            {
                nint received;
                do
                {
                    received = Read(fd, data, (nuint)buffer.Length);
                }
                while (received < 0 && Marshal.GetLastPInvokeError() == EINTR);
                return received < 0 ? -Marshal.GetLastPInvokeError() : (int)received;
            }
        }
    }
}
