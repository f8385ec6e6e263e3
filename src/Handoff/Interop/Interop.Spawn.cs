using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // glibc's posix_spawn_file_actions_t is 80 bytes and posix_spawnattr_t 336 bytes on
        // 64-bit; sigset_t is 128 bytes. The buffers below are larger so that no libc layout
        // change can make the call write past them.
        internal const int SpawnFileActionsSize = 256;
        internal const int SpawnAttributesSize = 1024;
        internal const int SignalSetSize = 256;

        internal const short POSIX_SPAWN_SETSIGDEF = 0x04;
        internal const short POSIX_SPAWN_SETSIGMASK = 0x08;

        [LibraryImport(LibraryName, EntryPoint = "posix_spawn")]
        internal static unsafe partial int PosixSpawn(out int pid, byte* path, void* fileActions, void* attributes, byte** argv, byte** envp);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawn_file_actions_init")]
        internal static unsafe partial int PosixSpawnFileActionsInit(void* fileActions);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawn_file_actions_destroy")]
        internal static unsafe partial int PosixSpawnFileActionsDestroy(void* fileActions);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawn_file_actions_adddup2")]
        internal static unsafe partial int PosixSpawnFileActionsAddDup2(void* fileActions, int fd, int newFd);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawn_file_actions_addchdir_np")]
        internal static unsafe partial int PosixSpawnFileActionsAddChdir(void* fileActions, byte* path);

        // glibc 2.34+: closes every descriptor from the given number up in the child.
        [LibraryImport(LibraryName, EntryPoint = "posix_spawn_file_actions_addclosefrom_np")]
        internal static unsafe partial int PosixSpawnFileActionsAddCloseFrom(void* fileActions, int from);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawnattr_init")]
        internal static unsafe partial int PosixSpawnAttrInit(void* attributes);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawnattr_destroy")]
        internal static unsafe partial int PosixSpawnAttrDestroy(void* attributes);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawnattr_setflags")]
        internal static unsafe partial int PosixSpawnAttrSetFlags(void* attributes, short flags);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawnattr_setsigmask")]
        internal static unsafe partial int PosixSpawnAttrSetSigMask(void* attributes, void* signalSet);

        [LibraryImport(LibraryName, EntryPoint = "posix_spawnattr_setsigdefault")]
        internal static unsafe partial int PosixSpawnAttrSetSigDefault(void* attributes, void* signalSet);

        [LibraryImport(LibraryName, EntryPoint = "sigemptyset")]
        internal static unsafe partial int SigEmptySet(void* signalSet);

        [LibraryImport(LibraryName, EntryPoint = "sigaddset")]
        internal static unsafe partial int SigAddSet(void* signalSet, int signal);
    }
}
