using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const int SO_PASSCRED = 16;
        internal const int SCM_CREDENTIALS = 2;
        internal const int MSG_DONTWAIT = 0x40;
        internal const int MSG_CMSG_CLOEXEC = 0x40000000;
        internal const int EAGAIN = 11;

        [LibraryImport(LibraryName, EntryPoint = "recvmsg", SetLastError = true)]
        private static unsafe partial nint RecvMsgCore(int fd, MessageHeader* message, int flags);

        /// <summary>
        /// recvmsg(2) of one datagram without waiting, as a service manager reads notifications:
        /// the sender's pid from SCM_CREDENTIALS (the socket needs SO_PASSCRED; 0 if absent), and
        /// every descriptor the message carried closed at once (a BARRIER=1 completes when they
        /// are). Returns the payload length, or -1 when no datagram waits (EAGAIN).
        /// </summary>
        internal static unsafe int ReceiveDatagram(int fd, Span<byte> payload, out int senderPid)
        {
            senderPid = 0;

            // Room for struct ucred (12 bytes) and a few descriptors, each with its cmsghdr.
            const int ControlSize = 256;
            byte* control = stackalloc byte[ControlSize];
            fixed (byte* data = payload)
            {
                var vector = new IoVector { Base = (nint)data, Length = (nuint)payload.Length };
                var message = new MessageHeader { Vector = (nint)(&vector), VectorLength = 1, Control = (nint)control, ControlLength = ControlSize };
                nint received;
                do
                {
                    received = RecvMsgCore(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                }
                while (received < 0 && Marshal.GetLastPInvokeError() == EINTR);

                if (received < 0)
                {
                    return Marshal.GetLastPInvokeError() == EAGAIN ? -1 : throw Error("recvmsg");
                }

                var fds = new List<int>();
                senderPid = ParseControl(control, message.ControlLength, fds);
                foreach (int passed in fds)
                {
                    _ = Close(passed);
                }

                return (int)received;
            }
        }

        /// <summary>Walks the control messages recvmsg(2) filled in: adds every SCM_RIGHTS
        /// descriptor to <paramref name="fds"/> and returns the SCM_CREDENTIALS pid (0 if none).</summary>
        internal static unsafe int ParseControl(byte* control, nuint controlLength, List<int> fds)
        {
            // struct cmsghdr { size_t len; int level; int type; } then the data, each header
            // aligned to 8 bytes.
            int pid = 0;
            long offset = 0;
            while (offset + 16 <= (long)controlLength)
            {
                byte* header = control + offset;
                long length = (long)*(nuint*)header;
                if (length < 16)
                {
                    break;
                }

                int level = *(int*)(header + 8);
                int type = *(int*)(header + 12);
                if (level == SOL_SOCKET && type == SCM_CREDENTIALS && length >= 16 + 12)
                {
                    pid = *(int*)(header + 16);
                }
                else if (level == SOL_SOCKET && type == SCM_RIGHTS)
                {
                    for (long at = 16; at + 4 <= length; at += 4)
                    {
                        fds.Add(*(int*)(header + at));
                    }
                }

                offset += (length + 7) & ~7L;
            }

            return pid;
        }
    }
}
