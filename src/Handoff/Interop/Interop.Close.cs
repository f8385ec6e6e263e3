using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // close(2) is never retried on EINTR: on Linux the fd is released even then.
        [LibraryImport(LibraryName, EntryPoint = "close", SetLastError = true)]
        internal static partial int Close(int fd);
    }
}
