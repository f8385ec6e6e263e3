using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int O_CLOEXEC = 0x80000;
        internal const short POLLIN = 0x1;
        internal const short POLLOUT = 0x4;
        internal const short POLLERR = 0x8;
        internal const short POLLHUP = 0x10;

        [LibraryImport(LibraryName, EntryPoint = "pipe2", SetLastError = true)]
        private static unsafe partial int Pipe2(int* fds, int flags);

        /// <summary>Creates a pipe whose two ends both have FD_CLOEXEC set.</summary>
        internal static unsafe (int Read, int Write) CreatePipe()
        {
            int* fds = stackalloc int[2];
            if (Pipe2(fds, O_CLOEXEC) != 0)
            {
                throw Error("pipe2");
            }

            return (fds[0], fds[1]);
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct PollFd
        {
            public int Fd;
            public short Events;
            public short Revents;
        }

        [LibraryImport(LibraryName, EntryPoint = "poll", SetLastError = true)]
        internal static unsafe partial int Poll(PollFd* fds, nuint count, int timeoutMilliseconds);

        [LibraryImport(LibraryName, EntryPoint = "read", SetLastError = true)]
        internal static unsafe partial nint Read(int fd, byte* buffer, nuint count);

        [LibraryImport(LibraryName, EntryPoint = "write", SetLastError = true)]
        internal static unsafe partial nint Write(int fd, byte* buffer, nuint count);
    }
}
