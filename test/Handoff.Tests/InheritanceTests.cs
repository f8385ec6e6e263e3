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
    public void Load_WrongParent_IsRejectedAsStaleOrForged()
    {
        var e = Assert.Throws<HandoffProtocolException>(() =>
            Inheritance.Load("v1;parent=12345;generation=2;listen=;ready=3", actualParentPid: 999));

        Assert.Contains("names parent pid 12345, but this process's parent is 999", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckListeningSocket_ListeningTcp_ReturnsItsAddress()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        socket.Listen();

        Assert.Equal(socket.LocalEndPoint, Inheritance.CheckListeningSocket((int)socket.Handle));
    }

    [Fact]
    public void CheckListeningSocket_BoundButNotListening_IsRejected()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var e = Assert.Throws<HandoffProtocolException>(() => Inheritance.CheckListeningSocket((int)socket.Handle));

        Assert.Contains($"fd {(int)socket.Handle}", e.Message, StringComparison.Ordinal);
        Assert.Contains("not a listening one", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckListeningSocket_UdpSocket_IsRejected()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);

        var e = Assert.Throws<HandoffProtocolException>(() => Inheritance.CheckListeningSocket((int)socket.Handle));

        Assert.Contains("not a stream socket", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckListeningSocket_RegularFile_IsNotASocket()
    {
        using var file = File.OpenHandle("/proc/self/status");

        var e = Assert.Throws<HandoffProtocolException>(() => Inheritance.CheckListeningSocket((int)file.DangerousGetHandle()));

        Assert.Contains("is not a socket", e.Message, StringComparison.Ordinal);
    }
}
