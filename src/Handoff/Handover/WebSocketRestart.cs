using System.Buffers.Binary;
using System.Text;

namespace Handoff;

/// <summary>
/// The close frame with status 1012 (Service Restart) that tells a WebSocket's client to
/// reconnect: what the drain sends when a WebSocket cannot move, and what a process writes on a
/// moved WebSocket's socket (<see cref="MoveKind.WebSocket"/>) that it owns and cannot serve (no
/// endpoint, no descriptor to spare, a newer generation that did not take it), so that the
/// client never finds the connection silently dead.
/// </summary>
internal static class WebSocketRestart
{
    /// <summary>FIN and opcode 8 (close), unmasked (server to client), a payload under 126 bytes:
    /// the status in network order, then the reason in UTF-8 (RFC 6455 §5.5.1).</summary>
    public static readonly byte[] Frame = BuildCloseFrame(1012, "Service Restart");

    public static byte[] BuildCloseFrame(int status, string reason)
    {
        byte[] text = Encoding.UTF8.GetBytes(reason);
        var frame = new byte[2 + 2 + text.Length];
        frame[0] = 0x88;
        frame[1] = (byte)(2 + text.Length);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(2), (ushort)status);
        text.CopyTo(frame, 4);
        return frame;
    }

    /// <summary>
    /// Writes <see cref="Frame"/> on connected socket <paramref name="fd"/>, whose owner then
    /// closes it. The socket is non-blocking (the flag belongs to the connection, set by the
    /// engine that served it), and its buffer may be full when the client reads slowly: the
    /// write waits, at most a second, so that the frame goes whole or not at all.
    /// </summary>
    public static unsafe void Write(int fd)
    {
        if (!Interop.Libc.SetBlocking(fd))
        {
            return;
        }

        try
        {
            Interop.Libc.SetSendTimeout(fd, TimeSpan.FromSeconds(1));
        }
        catch (IOException)
        {
            return;
        }

        fixed (byte* frame = Frame)
        {
            _ = Interop.Libc.Write(fd, frame, (nuint)Frame.Length);
        }
    }
}
