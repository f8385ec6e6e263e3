using System.Net;
using System.Net.Sockets;

namespace Handoff.Tests;

public sealed class InheritanceTests
{
    [Fact]
    public void Load_NoVariable_IsFirstGeneration()
    {
        var inheritance = Inheritance.Load(null, actualParentPid: 1);

        Assert.Equal(1, inheritance.Generation);
        Assert.Empty(inheritance.Listeners);
        Assert.Null(inheritance.ReadyPipe);
    }

    [Fact]
    public void Load_DescriptorsAreNotTheHandedOnes_IsRejectedWithoutTouchingThem()
    {
        // fd 3 of this test process is whatever the test host opened; the handover claims it is
        // the pipe with inode 999999999, and the seam shows another pipe there.
        var (read, write) = Interop.Libc.CreatePipe();
        try
        {
            int fd = write;
            string value = $"v2;parent=12345;generation=2;listen=;ready=3;ids=999999999;older=";

            var e = Assert.Throws<HandoffProtocolException>(() =>
                Inheritance.Load(value, actualParentPid: 12345, readLink: n => n == 3 ? new FileInfo($"/proc/self/fd/{fd}").LinkTarget : null));

            Assert.Contains("fd 3 named in the environment variable HANDOFF_HANDOVER is 'pipe:[", e.Message, StringComparison.Ordinal);
            Assert.Contains("not the 'pipe:[999999999]'", e.Message, StringComparison.Ordinal);
            Assert.Contains("stale", e.Message, StringComparison.Ordinal);
            Assert.Contains("No descriptor was touched", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Interop.Libc.Close(read);
            Interop.Libc.Close(write);
        }
    }

    [Fact]
    public void Load_DescriptorClosed_IsRejected()
    {
        var e = Assert.Throws<HandoffProtocolException>(() =>
            Inheritance.Load("v2;parent=1;generation=2;listen=;ready=3;ids=7;older=", actualParentPid: 1, readLink: _ => null));

        Assert.Contains("fd 3 named in the environment variable HANDOFF_HANDOVER is not open", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Identity_OfASocket_IsItsInode()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        int fd = (int)socket.Handle;

        Assert.Equal($"socket:[{ProcFs.SelfInode(fd)}]", new FileInfo($"/proc/self/fd/{fd}").LinkTarget);
    }

    [Fact]
    public void CheckListeningSocket_ListeningTcp_ReturnsItsAddress()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        socket.Listen();

        Assert.Equal(socket.LocalEndPoint, Listener.CheckListening((int)socket.Handle, $"Inherited fd {(int)socket.Handle}"));
    }

    [Fact]
    public void CheckListeningSocket_BoundButNotListening_IsRejected()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var e = Assert.Throws<HandoffProtocolException>(() => Listener.CheckListening((int)socket.Handle, $"Inherited fd {(int)socket.Handle}"));

        Assert.Contains($"fd {(int)socket.Handle}", e.Message, StringComparison.Ordinal);
        Assert.Contains("not a listening one", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckListeningSocket_UdpSocket_IsRejected()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);

        var e = Assert.Throws<HandoffProtocolException>(() => Listener.CheckListening((int)socket.Handle, $"Inherited fd {(int)socket.Handle}"));

        Assert.Contains("not a stream socket", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckListeningSocket_RegularFile_IsNotASocket()
    {
        using var file = File.OpenHandle("/proc/self/status");

        var e = Assert.Throws<HandoffProtocolException>(() => Listener.CheckListening((int)file.DangerousGetHandle(), "Inherited fd"));

        Assert.Contains("is not a socket", e.Message, StringComparison.Ordinal);
    }
}
