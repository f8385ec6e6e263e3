using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int F_DUPFD_CLOEXEC = 1030;
        internal const int F_GETFD = 1;
        internal const int F_SETFD = 2;
        internal const int FD_CLOEXEC = 1;
        internal const int F_GETFL = 3;
        internal const int F_SETFL = 4;
        internal const int O_NONBLOCK = 0x800;

        [LibraryImport(LibraryName, EntryPoint = "fcntl", SetLastError = true)]
        internal static partial int Fcntl(int fd, int command, int argument);

        /// <summary>Sets or clears FD_CLOEXEC; throws with the fd number on failure.</summary>
        internal static void SetCloseOnExec(int fd, bool value)
        {
            int flags = Fcntl(fd, F_GETFD, 0);
            if (flags < 0)
            {
                throw Error($"fcntl(F_GETFD) on fd {fd}");
            }

            int wanted = value ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
            if (wanted != flags && Fcntl(fd, F_SETFD, wanted) < 0)
            {
                throw Error($"fcntl(F_SETFD) on fd {fd}");
            }
        }

        internal static bool IsCloseOnExec(int fd)
        {
            int flags = Fcntl(fd, F_GETFD, 0);
            return flags >= 0 && (flags & FD_CLOEXEC) != 0;
        }

        /// <summary>Makes calls on <paramref name="fd"/> wait (clears O_NONBLOCK, which belongs
        /// to the open file, shared with every descriptor for it); false on failure.</summary>
        internal static bool SetBlocking(int fd)
        {
            int flags = Fcntl(fd, F_GETFL, 0);
            return flags >= 0 && ((flags & O_NONBLOCK) == 0 || Fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) >= 0);
        }

        /// <summary>True when <paramref name="fd"/> is an open descriptor of this process.</summary>
        internal static bool IsOpen(int fd) => Fcntl(fd, F_GETFD, 0) >= 0;

        /// <summary>Duplicates <paramref name="fd"/> to the lowest free number at or above
        /// <paramref name="minimum"/>, with FD_CLOEXEC set.</summary>
        internal static int DuplicateCloseOnExec(int fd, int minimum)
        {
            int copy = Fcntl(fd, F_DUPFD_CLOEXEC, minimum);
            return copy >= 0 ? copy : throw Error($"fcntl(F_DUPFD_CLOEXEC) on fd {fd}");
        }

        /// <summary>An <see cref="IOException"/> carrying errno and what was being done.</summary>
        internal static IOException Error(string what)
        {
            int errno = Marshal.GetLastPInvokeError();
            return new IOException($"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
        }
    }
}
