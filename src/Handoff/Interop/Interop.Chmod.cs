using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        [LibraryImport(LibraryName, EntryPoint = "chmod", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int ChmodNative(string path, uint mode);

        [LibraryImport(LibraryName, EntryPoint = "geteuid")]
        internal static partial uint GetEffectiveUserId();

        /// <summary>chmod(2); throws <see cref="IOException"/> naming the path.</summary>
        internal static void Chmod(string path, UnixFileMode mode)
        {
            if (ChmodNative(path, (uint)mode) != 0)
            {
                throw Error($"chmod {Convert.ToString((int)mode, 8)} {path}");
            }
        }
    }
}
