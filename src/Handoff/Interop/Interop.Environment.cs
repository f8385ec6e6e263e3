using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // .NET keeps its own copy of the environment: Environment.SetEnvironmentVariable does not
        // change the process's native environ, which native code and exec'd programs read.
        [LibraryImport(LibraryName, EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int SetEnvCore(string name, string value, int overwrite);

        [LibraryImport(LibraryName, EntryPoint = "unsetenv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int UnsetEnvCore(string name);

        /// <summary>Sets (or, for null, removes) a variable in both the native and the managed
        /// environment.</summary>
        internal static void SetEnvironmentVariable(string name, string? value)
        {
            _ = value is null ? UnsetEnvCore(name) : SetEnvCore(name, value, 1);
            Environment.SetEnvironmentVariable(name, value);
        }

        [LibraryImport(LibraryName, EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial nint RealPathCore(string path, nint resolved);

        [LibraryImport(LibraryName, EntryPoint = "free")]
        private static partial void Free(nint pointer);

        /// <summary>realpath(3): the physical path, or null when it does not resolve.</summary>
        internal static string? RealPath(string path)
        {
            nint result = RealPathCore(path, 0);
            if (result == 0)
            {
                return null;
            }

            try
            {
                return Marshal.PtrToStringUTF8(result);
            }
            finally
            {
                Free(result);
            }
        }
    }
}
