using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        private const int AT_FDCWD = -100;
        private const int AT_SYMLINK_NOFOLLOW = 0x100;
        private const uint STATX_TYPE = 0x1;
        private const int S_IFMT = 0xF000;
        internal const int S_IFSOCK = 0xC000;
        internal const int S_IFREG = 0x8000;
        internal const int S_IFDIR = 0x4000;

        // statx rather than stat: its struct has one layout on every architecture.
        [LibraryImport(LibraryName, EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static unsafe partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);

        /// <summary>The file type bits (S_IFMT) of <paramref name="path"/> itself (or, with
        /// <paramref name="followLinks"/>, of what a final symlink points to, as connect(2)
        /// sees it); null when it does not exist.</summary>
        internal static unsafe int? FileType(string path, bool followLinks = false)
        {
            byte* buffer = stackalloc byte[256];
            if (Statx(AT_FDCWD, path, followLinks ? 0 : AT_SYMLINK_NOFOLLOW, STATX_TYPE, buffer) != 0)
            {
                return null;
            }

            // struct statx: stx_mode is the u16 at offset 28.
            return *(ushort*)(buffer + 28) & S_IFMT;
        }

        /// <summary>The inode number of <paramref name="path"/> itself; null when it does not
        /// exist.</summary>
        internal static unsafe ulong? Inode(string path)
        {
            const uint STATX_INO = 0x100;
            byte* buffer = stackalloc byte[256];
            return Statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_INO, buffer) == 0
                ? *(ulong*)(buffer + 32) // stx_ino
                : null;
        }
    }
}
