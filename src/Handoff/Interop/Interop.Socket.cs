using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int SOL_SOCKET = 1;
        internal const int SO_TYPE = 3;
        internal const int SO_ACCEPTCONN = 30;
        internal const int SOCK_STREAM = 1;
        internal const int ENOTSOCK = 88;

        [LibraryImport(LibraryName, EntryPoint = "getsockopt", SetLastError = true)]
        private static unsafe partial int GetSockOpt(int fd, int level, int name, int* value, uint* length);

        /// <summary>Reads an integer SOL_SOCKET option; returns the errno instead of throwing,
        /// because callers turn it into a message about the fd they were checking.</summary>
        internal static unsafe int GetSocketOption(int fd, int name, out int value)
        {
            int result = 0;
            uint length = sizeof(int);
            if (GetSockOpt(fd, SOL_SOCKET, name, &result, &length) != 0)
            {
                value = 0;
                return Marshal.GetLastPInvokeError();
            }

            value = result;
            return 0;
        }
    }
}
