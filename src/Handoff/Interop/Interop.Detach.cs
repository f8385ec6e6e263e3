using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int EPOLL_CTL_ADD = 1;
        internal const int EPOLL_CTL_DEL = 2;

        internal const int IPPROTO_TCP = 6;
        internal const int TCP_INFO = 11;
        internal const uint SIOCOUTQ = 0x5411;

        // struct tcp_info: tcpi_bytes_acked at 120 (Linux 4.1 on); 232 bytes in Linux 6.
        private const int TcpInfoLength = 256;
        private const int BytesAckedOffset = 120;

        [LibraryImport(LibraryName, EntryPoint = "getsockopt", SetLastError = true)]
        private static unsafe partial int GetSockOptBytes(int fd, int level, int name, byte* value, uint* length);

        [LibraryImport(LibraryName, EntryPoint = "ioctl", SetLastError = true)]
        private static unsafe partial int IoctlInt(int fd, nuint request, int* value);

        /// <summary>
        /// How many bytes this side of TCP connection <paramref name="fd"/> has written into it
        /// since it was established: the bytes the peer acknowledged (tcp_info) and those still
        /// in the send queue (SIOCOUTQ), read until an acknowledgement does not arrive between
        /// the two. Null when the kernel does not say (too old, not TCP).
        /// </summary>
        internal static unsafe long? TcpWrittenBytes(int fd)
        {
            byte* info = stackalloc byte[TcpInfoLength];
            for (int attempt = 0; attempt < 100; attempt++)
            {
                uint length = TcpInfoLength;
                int queued;
                if (GetSockOptBytes(fd, IPPROTO_TCP, TCP_INFO, info, &length) != 0 || length < BytesAckedOffset + 8)
                {
                    return null;
                }

                ulong before = *(ulong*)(info + BytesAckedOffset);
                if (IoctlInt(fd, SIOCOUTQ, &queued) != 0)
                {
                    return null;
                }

                length = TcpInfoLength;
                if (GetSockOptBytes(fd, IPPROTO_TCP, TCP_INFO, info, &length) != 0)
                {
                    return null;
                }

                if (*(ulong*)(info + BytesAckedOffset) == before)
                {
                    return (long)before + queued;
                }
            }

            return null;
        }

        private const int RLIMIT_NOFILE = 7;

        [LibraryImport(LibraryName, EntryPoint = "getrlimit", SetLastError = true)]
        private static unsafe partial int GetRLimitCore(int resource, ulong* limits);

        /// <summary>The soft limit on this process's descriptors (RLIMIT_NOFILE), read each time:
        /// an operator may change it while the process runs (prlimit).</summary>
        internal static unsafe long DescriptorLimit()
        {
            // struct rlimit: the soft and the hard limit, two unsigned longs.
            ulong* limits = stackalloc ulong[2];
            return GetRLimitCore(RLIMIT_NOFILE, limits) == 0 ? (long)Math.Min(limits[0], long.MaxValue) : long.MaxValue;
        }

        private const int SO_RCVTIMEO = 20;
        private const int SO_SNDTIMEO = 21;

        [LibraryImport(LibraryName, EntryPoint = "setsockopt", SetLastError = true)]
        private static unsafe partial int SetSockOptCore(int fd, int level, int name, void* value, uint length);

        /// <summary>SO_SNDTIMEO: a blocking send that cannot go on for <paramref name="timeout"/>
        /// fails with EAGAIN instead of waiting for a receiver that may never read again.</summary>
        internal static void SetSendTimeout(int fd, TimeSpan timeout) => SetTimeout(fd, SO_SNDTIMEO, timeout);

        /// <summary>SO_RCVTIMEO: a blocking read that gets nothing for <paramref name="timeout"/>
        /// fails with EAGAIN.</summary>
        internal static void SetReceiveTimeout(int fd, TimeSpan timeout) => SetTimeout(fd, SO_RCVTIMEO, timeout);

        private static unsafe void SetTimeout(int fd, int option, TimeSpan timeout)
        {
            // struct timeval: seconds and microseconds, two longs.
            long* value = stackalloc long[2];
            value[0] = (long)timeout.TotalSeconds;
            value[1] = timeout.Microseconds + (timeout.Milliseconds * 1000L);
            if (SetSockOptCore(fd, SOL_SOCKET, option, value, 16) != 0)
            {
                throw Error("setsockopt(SO_SNDTIMEO/SO_RCVTIMEO)");
            }
        }

        [LibraryImport(LibraryName, EntryPoint = "shutdown", SetLastError = true)]
        private static partial int ShutdownCore(int fd, int how);

        /// <summary>shutdown(2) of both directions: wakes a thread blocked reading the socket
        /// (closing it would not). Returns 0 or -1.</summary>
        internal static int Shutdown(int fd) => ShutdownCore(fd, 2);

        /// <summary>shutdown(2) of the writing direction: the peer reads end of file, and may
        /// still answer.</summary>
        internal static int ShutdownWrite(int fd) => ShutdownCore(fd, 1);

        [LibraryImport(LibraryName, EntryPoint = "dup3", SetLastError = true)]
        private static partial int Dup3Core(int oldFd, int newFd, int flags);

        [LibraryImport(LibraryName, EntryPoint = "socketpair", SetLastError = true)]
        private static unsafe partial int SocketPairCore(int domain, int type, int protocol, int* fds);

        [LibraryImport(LibraryName, EntryPoint = "epoll_ctl", SetLastError = true)]
        private static unsafe partial int EpollCtlCore(int epollFd, int operation, int fd, EpollEvent* @event);

        // struct epoll_event is packed on x86-64 (12 bytes) and naturally aligned elsewhere (16).
        [StructLayout(LayoutKind.Sequential, Pack = 4)]
        private struct EpollEvent
        {
            public uint Events;
            public ulong Data;
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct EpollEventAligned
        {
            public uint Events;
            public ulong Data;
        }

        /// <summary>dup3(2): makes <paramref name="newFd"/> refer to what <paramref name="oldFd"/>
        /// refers to, atomically, with FD_CLOEXEC.</summary>
        internal static void Dup3(int oldFd, int newFd)
        {
            if (Dup3Core(oldFd, newFd, O_CLOEXEC) < 0)
            {
                throw Error($"dup3({oldFd}, {newFd})");
            }
        }

        /// <summary>A connected pair of Unix stream sockets, both with FD_CLOEXEC.</summary>
        internal static unsafe (int First, int Second) StreamSocketPair()
        {
            int* fds = stackalloc int[2];
            if (SocketPairCore(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
            {
                throw Error("socketpair(AF_UNIX, SOCK_STREAM)");
            }

            return (fds[0], fds[1]);
        }

        /// <summary>epoll_ctl(2) ADD or DEL; returns 0 or the errno.</summary>
        internal static unsafe int EpollControl(int epollFd, int operation, int fd, uint events, ulong data)
        {
            int result;
            if (RuntimeInformation.ProcessArchitecture == Architecture.X64)
            {
                var packed = new EpollEvent { Events = events, Data = data };
                result = EpollCtlCore(epollFd, operation, fd, &packed);
            }
            else
            {
                var aligned = new EpollEventAligned { Events = events, Data = data };
                result = EpollCtlCore(epollFd, operation, fd, (EpollEvent*)&aligned);
            }

            return result == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
    }
}
