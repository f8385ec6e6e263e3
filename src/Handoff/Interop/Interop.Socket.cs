using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int SOL_SOCKET = 1;
        internal const int SO_REUSEADDR = 2;
        internal const int SO_TYPE = 3;
        internal const int SO_PEERCRED = 17;
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

        internal const int EACCES = 13;
        internal const int EADDRINUSE = 98;
        internal const int ECONNREFUSED = 111;
        internal const int ENOENT = 2;
        internal const int EADDRNOTAVAIL = 99;

        [LibraryImport(LibraryName, EntryPoint = "bind", SetLastError = true)]
        private static unsafe partial int BindCore(int fd, byte* address, uint length);

        [LibraryImport(LibraryName, EntryPoint = "listen", SetLastError = true)]
        private static partial int ListenCore(int fd, int backlog);

        /// <summary>bind(2) with the address in the kernel's sockaddr layout, which is what
        /// <see cref="System.Net.SocketAddress"/> holds on Linux.</summary>
        internal static unsafe void Bind(int fd, System.Net.SocketAddress address)
        {
            fixed (byte* buffer = address.Buffer.Span)
            {
                if (BindCore(fd, buffer, (uint)address.Size) != 0)
                {
                    throw SocketError($"bind to {address}");
                }
            }
        }

        internal static void Listen(int fd, int backlog)
        {
            if (ListenCore(fd, backlog) != 0)
            {
                throw SocketError("listen");
            }
        }

        private static System.Net.Sockets.SocketException SocketError(string what)
        {
            int errno = Marshal.GetLastPInvokeError();
            var error = errno switch
            {
                EADDRINUSE => System.Net.Sockets.SocketError.AddressAlreadyInUse,
                EADDRNOTAVAIL => System.Net.Sockets.SocketError.AddressNotAvailable,
                EACCES => System.Net.Sockets.SocketError.AccessDenied,
                _ => System.Net.Sockets.SocketError.SocketError,
            };
            return new System.Net.Sockets.SocketException((int)error, $"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
    }
}
