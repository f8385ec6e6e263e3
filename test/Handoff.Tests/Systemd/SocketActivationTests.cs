using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.Systemd;

/// <summary>Sockets systemd passes to generation 1 (LISTEN_FDS), with real sockets.</summary>
public sealed class SocketActivationTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-activation-").FullName;

    [Fact]
    public void FirstStart_ListeningSocket_AdoptedWithCloseOnExec_OtherSocketLeftAloneWithWarning()
    {
        int tcp = Inheritable(BindListening(new IPEndPoint(IPAddress.Loopback, 0)));
        using var udpSocket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        int udp = Inheritable((int)udpSocket.Handle);
        var warnings = new List<string>();

        var inheritance = Inheritance.FirstStart([(tcp, "web"), (udp, "metrics")], warnings);

        var listener = Assert.Single(inheritance.Listeners);
        Assert.Equal(tcp, listener.FileDescriptor);
        Assert.True(listener.IsActivated);
        Assert.True(Interop.Libc.IsCloseOnExec(tcp));
        Assert.Equal(1, inheritance.Generation);
        Assert.Equal(0, inheritance.ParentPid);
        var warning = Assert.Single(warnings);
        Assert.Contains($"Activated fd {udp} (LISTEN_FDS, name 'metrics') is not a stream socket", warning, StringComparison.Ordinal);
        Assert.True(Interop.Libc.IsOpen(udp));
        Assert.True(Interop.Libc.IsCloseOnExec(udp));
        Interop.Libc.Close(tcp);
        Interop.Libc.Close(udp);
    }

    [Fact]
    public async Task Registry_ActivatedSocket_ClaimedByItsAddress_OrByDescriptorOnce()
    {
        int first = BindListening(new IPEndPoint(IPAddress.Loopback, 0));
        int second = BindListening(new IPEndPoint(IPAddress.Loopback, 0));
        var activated = Inheritance.FirstStart([(first, "a"), (second, "b")], []).Listeners;
        await using var registry = new ListenerRegistry(activated, new AcceptGate(), NullLogger.Instance);

        var byAddress = registry.Listen(activated[1].EndPoint);

        Assert.Same(activated[1], byAddress);
        Assert.Equal([activated[0]], registry.UnclaimedActivated);
        Assert.Same(activated[0], registry.ClaimDescriptor(first));
        Assert.Null(registry.ClaimDescriptor(second)); // served through its address already
        Assert.Empty(registry.UnclaimedActivated);
        Assert.Throws<ArgumentException>(() => registry.ClaimDescriptor(9999));
    }

    [Fact]
    public async Task FinalStop_ActivatedUnixSocket_PathIsLeftToSystemd()
    {
        string activatedPath = Path.Combine(_directory, "activated.sock");
        string ownPath = Path.Combine(_directory, "own.sock");
        int fd = BindListening(new UnixDomainSocketEndPoint(activatedPath));
        var activated = Inheritance.FirstStart([(fd, "unix")], []).Listeners;
        var registry = new ListenerRegistry(activated, new AcceptGate(), NullLogger.Instance);
        registry.Listen(new UnixDomainSocketEndPoint(activatedPath));
        registry.Listen(new UnixDomainSocketEndPoint(ownPath));

        await registry.CloseAllAsync();
        registry.RemoveUnixSocketPaths();

        Assert.True(File.Exists(activatedPath), "systemd still listens on its socket path");
        Assert.False(File.Exists(ownPath), "a path Handoff bound is removed at the final stop");
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    // What systemd passes: a listening socket without FD_CLOEXEC. Bound through libc on a copy:
    // a .NET Socket that bound a Unix path unlinks it when disposed.
    private static int BindListening(EndPoint endPoint)
    {
        using var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        int fd = Inheritable((int)socket.Handle);
        Interop.Libc.Bind(fd, endPoint.Serialize());
        Interop.Libc.Listen(fd, 16);
        return fd;
    }

    private static int Inheritable(int fd)
    {
        int copy = Interop.Libc.DuplicateCloseOnExec(fd, 3);
        Interop.Libc.SetCloseOnExec(copy, false);
        return copy;
    }
}
