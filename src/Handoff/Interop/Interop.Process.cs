using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int WNOHANG = 1;
        internal const int SIGKILL = 9;
        internal const int SIGTERM = 15;

        [LibraryImport(LibraryName, EntryPoint = "waitpid", SetLastError = true)]
        internal static partial int WaitPid(int pid, out int status, int options);

        [LibraryImport(LibraryName, EntryPoint = "kill", SetLastError = true)]
        internal static partial int Kill(int pid, int signal);

        [LibraryImport(LibraryName, EntryPoint = "getppid")]
        internal static partial int GetParentPid();

        // Used by tests and supervisors that must reap orphaned generations.
        internal const int PR_SET_CHILD_SUBREAPER = 36;

        [LibraryImport(LibraryName, EntryPoint = "prctl", SetLastError = true)]
        internal static partial int Prctl(int option, nuint argument2, nuint argument3, nuint argument4, nuint argument5);
    }
}
