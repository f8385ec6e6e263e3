using System.Runtime.InteropServices;
using System.Text;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int AF_UNIX = 1;
        internal const int SOCK_DGRAM = 2;
        internal const int SOCK_CLOEXEC = 0x80000;
        internal const int SCM_RIGHTS = 1;
        internal const int MSG_NOSIGNAL = 0x4000;
        internal const int CLOCK_MONOTONIC = 1;

        // sun_path's size in struct sockaddr_un.
        internal const int UnixPathMax = 108;

        [LibraryImport(LibraryName, EntryPoint = "socket", SetLastError = true)]
        private static partial int SocketCore(int domain, int type, int protocol);

        [LibraryImport(LibraryName, EntryPoint = "sendmsg", SetLastError = true)]
        private static unsafe partial nint SendMsgCore(int fd, MessageHeader* message, int flags);

        [LibraryImport(LibraryName, EntryPoint = "clock_gettime", SetLastError = true)]
        private static unsafe partial int ClockGetTime(int clock, TimeSpec* time);

        [StructLayout(LayoutKind.Sequential)]
        private struct MessageHeader
        {
            public nint Name;
            public uint NameLength;
            public nint Vector;
            public nuint VectorLength;
            public nint Control;
            public nuint ControlLength;
            public int Flags;
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct IoVector
        {
            public nint Base;
            public nuint Length;
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct TimeSpec
        {
            public long Seconds;
            public long Nanoseconds;
        }

        /// <summary>A new Unix datagram socket with FD_CLOEXEC set.</summary>
        internal static int UnixDatagramSocket()
        {
            int fd = SocketCore(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            return fd >= 0 ? fd : throw Error("socket(AF_UNIX, SOCK_DGRAM)");
        }

        /// <summary>
        /// sendmsg(2) of one datagram to the Unix socket at <paramref name="path"/> (a leading
        /// '@' names an abstract socket), with <paramref name="passFd"/> attached as SCM_RIGHTS
        /// when it is not -1. Returns 0 or the errno.
        /// </summary>
        internal static unsafe int SendDatagram(int fd, string path, ReadOnlySpan<byte> payload, int passFd = -1)
        {
            // struct sockaddr_un: sa_family_t, then the path; an abstract name starts with NUL
            // and its length is exact (no terminator).
            byte[] address = new byte[2 + UnixPathMax];
            address[0] = AF_UNIX;
            int pathBytes = Encoding.UTF8.GetBytes(path, address.AsSpan(2));
            if (path.StartsWith('@'))
            {
                address[2] = 0;
            }
            else
            {
                pathBytes++; // The terminating NUL, as sd_notify counts it.
            }

            // One cmsghdr (len, level, type: 16 bytes on 64-bit) followed by one int, padded.
            byte* control = stackalloc byte[24];
            new Span<byte>(control, 24).Clear();
            fixed (byte* name = address)
            fixed (byte* data = payload)
            {
                var vector = new IoVector { Base = (nint)data, Length = (nuint)payload.Length };
                var message = new MessageHeader { Name = (nint)name, NameLength = (uint)(2 + pathBytes), Vector = (nint)(&vector), VectorLength = 1 };
                if (passFd >= 0)
                {
                    *(nuint*)control = 20;
                    *(int*)(control + 8) = SOL_SOCKET;
                    *(int*)(control + 12) = SCM_RIGHTS;
                    *(int*)(control + 16) = passFd;
                    message.Control = (nint)control;
                    message.ControlLength = 24;
                }

                nint sent;
                do
                {
                    // Never blocks: a manager that stopped reading (a stopped handoff run, a
                    // full queue of net.unix.max_dgram_qlen) gets EAGAIN, not a hung server.
                    sent = SendMsgCore(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
                }
                while (sent < 0 && Marshal.GetLastPInvokeError() == EINTR);

                return sent >= 0 ? 0 : Marshal.GetLastPInvokeError();
            }
        }

        /// <summary>CLOCK_MONOTONIC in microseconds, the clock systemd's MONOTONIC_USEC= and
        /// WATCHDOG_USEC= are measured on.</summary>
        internal static unsafe long MonotonicMicroseconds()
        {
            TimeSpec time;
            return ClockGetTime(CLOCK_MONOTONIC, &time) == 0
                ? (time.Seconds * 1_000_000) + (time.Nanoseconds / 1000)
                : throw Error("clock_gettime(CLOCK_MONOTONIC)");
        }
    }
}
