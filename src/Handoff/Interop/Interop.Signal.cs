using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int SIGHUP = 1;
        internal const int SIGUSR1 = 10;
        internal const int SIGUSR2 = 12;
        internal const int SIG_BLOCK = 0;
        internal const int SIG_UNBLOCK = 1;

        [LibraryImport(LibraryName, EntryPoint = "pthread_sigmask")]
        private static unsafe partial int PthreadSigMask(int how, void* set, void* oldSet);

        /// <summary>The signals among <paramref name="signals"/> that the calling thread blocks.</summary>
        internal static unsafe IReadOnlyList<int> BlockedSignals(IEnumerable<int> signals)
        {
            byte* current = stackalloc byte[SignalSetSize];
            _ = SigEmptySet(current);
            _ = PthreadSigMask(SIG_BLOCK, null, current);
            return [.. signals.Where(s => SigIsMember(current, s) == 1)];
        }

        /// <summary>Unblocks <paramref name="signals"/> on the calling thread (and so on every
        /// thread it starts from now on).</summary>
        internal static unsafe void UnblockSignals(IEnumerable<int> signals)
        {
            byte* set = stackalloc byte[SignalSetSize];
            _ = SigEmptySet(set);
            foreach (int signal in signals)
            {
                _ = SigAddSet(set, signal);
            }

            _ = PthreadSigMask(SIG_UNBLOCK, set, null);
        }

        [LibraryImport(LibraryName, EntryPoint = "sigismember")]
        internal static unsafe partial int SigIsMember(void* signalSet, int signal);
    }
}
