using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        private const long SYS_pidfd_open = 434; // the same number on x86-64 and arm64
        private const long SYS_pidfd_send_signal = 424; // likewise

        [LibraryImport(LibraryName, EntryPoint = "syscall", SetLastError = true)]
        private static partial long Syscall4(long number, long argument1, long argument2, long argument3, long argument4);

        /// <summary>pidfd_send_signal(2): signals the process behind <paramref name="pidfd"/>,
        /// never another one that reused its pid. 0, or -1 with errno.</summary>
        internal static int PidfdSendSignal(int pidfd, int signal) => (int)Syscall4(SYS_pidfd_send_signal, pidfd, signal, 0, 0);

        [LibraryImport(LibraryName, EntryPoint = "syscall", SetLastError = true)]
        private static partial long Syscall(long number, long argument1, long argument2);

        /// <summary>pidfd_open(2): a descriptor that becomes readable when <paramref name="pid"/>
        /// exits, immune to pid reuse; -1 when the process is gone already. FD_CLOEXEC is set.</summary>
        internal static int PidfdOpen(int pid) => (int)Syscall(SYS_pidfd_open, pid, 0);
    }
}
