using System.Runtime.InteropServices;

namespace Handoff;

internal static partial class Interop
{
    internal static partial class Libc
    {
        /// <summary>
        /// One blocking sendmsg(2) on a Unix stream socket of the start of <paramref name="data"/>,
        /// with <paramref name="passFd"/> attached as SCM_RIGHTS (it goes with the first byte).
        /// Returns how many bytes went (the rest is the caller's to write); throws on error.
        /// </summary>
        internal static unsafe int SendWithDescriptor(int fd, ReadOnlySpan<byte> data, int passFd)
        {
            byte* control = stackalloc byte[24];
            new Span<byte>(control, 24).Clear();
            *(nuint*)control = 20; // cmsghdr (16 bytes) and one int
            *(int*)(control + 8) = SOL_SOCKET;
            *(int*)(control + 12) = SCM_RIGHTS;
            *(int*)(control + 16) = passFd;
            fixed (byte* bytes = data)
            {
                var vector = new IoVector { Base = (nint)bytes, Length = (nuint)data.Length };
                var message = new MessageHeader { Vector = (nint)(&vector), VectorLength = 1, Control = (nint)control, ControlLength = 24 };
                nint sent;
                do
                {
                    sent = SendMsgCore(fd, &message, MSG_NOSIGNAL);
                }
                while (sent < 0 && Marshal.GetLastPInvokeError() == EINTR);

                return sent >= 0 ? (int)sent : throw Error("sendmsg(SCM_RIGHTS)");
            }
        }

        /// <summary>
        /// One blocking recvmsg(2) on a Unix stream socket into <paramref name="buffer"/>; every
        /// descriptor that came with the bytes is added to <paramref name="fds"/> (FD_CLOEXEC set).
        /// Returns the bytes read, 0 at end of file; throws on error.
        /// </summary>
        internal static unsafe int ReceiveWithDescriptors(int fd, Span<byte> buffer, List<int> fds)
        {
            const int ControlSize = 64;
            byte* control = stackalloc byte[ControlSize];
            fixed (byte* data = buffer)
            {
                var vector = new IoVector { Base = (nint)data, Length = (nuint)buffer.Length };
                var message = new MessageHeader { Vector = (nint)(&vector), VectorLength = 1, Control = (nint)control, ControlLength = ControlSize };
                nint received;
                do
                {
                    received = RecvMsgCore(fd, &message, MSG_CMSG_CLOEXEC);
                }
                while (received < 0 && Marshal.GetLastPInvokeError() == EINTR);

                if (received < 0)
                {
                    throw Error("recvmsg(SCM_RIGHTS)");
                }

                _ = ParseControl(control, message.ControlLength, fds);
                return (int)received;
            }
        }

        /// <summary>Writes all of <paramref name="data"/> to a blocking descriptor; throws on error.</summary>
        internal static unsafe void WriteAll(int fd, ReadOnlySpan<byte> data)
        {
            fixed (byte* bytes = data)
            {
                int done = 0;
                while (done < data.Length)
                {
                    nint n = Write(fd, bytes + done, (nuint)(data.Length - done));
                    if (n < 0)
                    {
                        if (Marshal.GetLastPInvokeError() == EINTR)
                        {
                            continue;
                        }

                        throw Error("write");
                    }

                    done += (int)n;
                }
            }
        }

        /// <summary>Reads into all of <paramref name="buffer"/> from a blocking descriptor;
        /// returns false at end of file before the first byte, throws at end of file after it or
        /// on error.</summary>
        internal static unsafe bool ReadAll(int fd, Span<byte> buffer)
        {
            fixed (byte* bytes = buffer)
            {
                int done = 0;
                while (done < buffer.Length)
                {
                    nint n = Read(fd, bytes + done, (nuint)(buffer.Length - done));
                    if (n < 0)
                    {
                        if (Marshal.GetLastPInvokeError() == EINTR)
                        {
                            continue;
                        }

                        throw Error("read");
                    }

                    if (n == 0)
                    {
                        return done == 0 ? false : throw new EndOfStreamException($"end of file after {done} of {buffer.Length} bytes");
                    }

                    done += (int)n;
                }

                return true;
            }
        }
    }
}
