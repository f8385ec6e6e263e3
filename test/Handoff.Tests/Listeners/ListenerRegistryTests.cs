using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests;

public sealed class ListenerRegistryTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-registry-").FullName;

    [Fact]
    public void CloseMethods_AreNotPublic_SoAUsersAwaitUsingCannotCloseTheSocketsUnderTheUpgrader()
    {
        var type = typeof(ListenerRegistry);

        Assert.False(typeof(IAsyncDisposable).IsAssignableFrom(type));
        Assert.False(typeof(IDisposable).IsAssignableFrom(type));
        Assert.Null(type.GetMethod(nameof(ListenerRegistry.CloseAllAsync)));
        Assert.Null(type.GetMethod(nameof(ListenerRegistry.CloseUnclaimedAsync)));
        Assert.Null(type.GetMethod(nameof(ListenerRegistry.DisposeAsync)));
        Assert.False(typeof(HandoffProtocolException).IsPublic);
    }

    [Fact]
    public async Task Listen_NewAddress_BindsListeningSocketWithCloseOnExec()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);

        var listener = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));

        var bound = Assert.IsType<IPEndPoint>(listener.EndPoint);
        Assert.NotEqual(0, bound.Port);
        Assert.False(listener.IsInherited);
        Assert.True(Interop.Libc.IsCloseOnExec(listener.FileDescriptor));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(bound);
        Assert.Same(listener, Assert.Single(registry.Listeners));
    }

    [Fact]
    public async Task Listen_AddressInUse_ThrowsAddressAlreadyInUse()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var first = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));

        var e = Assert.Throws<SocketException>(() => registry.Listen(first.EndPoint));

        Assert.Equal(SocketError.AddressAlreadyInUse, e.SocketErrorCode);
    }

    [Fact]
    public async Task Listen_InheritedSocket_IsAdoptedForSameAddressAndForPortZero()
    {
        int fd1 = BindListeningCopy(new IPEndPoint(IPAddress.Loopback, 0), out var address1);
        int fd2 = BindListeningCopy(new IPEndPoint(IPAddress.Loopback, 0), out var address2);
        var inherited = new[]
        {
            new Listener(fd1, address1, inherited: true),
            new Listener(fd2, address2, inherited: true),
        };
        await using var registry = new ListenerRegistry(inherited, new AcceptGate(), NullLogger.Instance);

        var exact = registry.Listen(address2);
        var anyPort = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));

        Assert.Same(inherited[1], exact);
        Assert.Same(inherited[0], anyPort);
        Assert.Equal([inherited[1], inherited[0]], registry.Listeners);
    }

    [Fact]
    public async Task Release_TheNextListenForTheAddress_GetsTheSameSocketWithItsQueue()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        using var queued = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await queued.ConnectAsync(listener.EndPoint);

        registry.Release(listener, TimeSpan.FromMinutes(1));
        Assert.Empty(registry.Listeners);
        var again = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));

        Assert.Same(listener, again);
        Assert.False(again.IsClosed);
        using var accepted = await again.CreateAcceptSocket().AcceptAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(queued.LocalEndPoint, accepted.RemoteEndPoint);
    }

    [Fact]
    public async Task Release_NobodyClaimsItWithinTheGrace_IsClosed()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));

        registry.Release(listener, TimeSpan.FromMilliseconds(50));

        await UpgraderTestExtensions.WaitUntilAsync(() => listener.IsClosed);

        Assert.True(listener.IsClosed);
        Assert.Null(registry.Reclaim(new IPEndPoint(IPAddress.Loopback, 0)));
    }

    [Fact]
    public async Task Release_UnixEndpointNobodyClaims_ItsPathIsRemoved()
    {
        string path = Path.Combine(_directory, "removed.sock");
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new UnixDomainSocketEndPoint(path));

        registry.Release(listener, TimeSpan.FromMilliseconds(50));

        await UpgraderTestExtensions.WaitUntilAsync(() => !File.Exists(path));

        Assert.True(listener.IsClosed);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task Reclaim_NeverBindsANewSocket()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        registry.Release(listener, TimeSpan.FromMinutes(1));

        Assert.Same(listener, registry.Reclaim(new IPEndPoint(IPAddress.Loopback, 0)));
        Assert.Null(registry.Reclaim(new IPEndPoint(IPAddress.Loopback, 0)));
        Assert.Same(listener, Assert.Single(registry.Listeners));
    }

    [Fact]
    public async Task ParkedAcceptor_IsHandedBackOnce_OrDisposedWithTheListener()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        var first = new Acceptor();
        await listener.ParkAsync(first);
        Assert.Same(first, listener.TakeParked());
        Assert.Null(listener.TakeParked());

        var second = new Acceptor();
        await listener.ParkAsync(second);
        await listener.CloseAsync();
        Assert.True(second.Disposed);
        Assert.False(first.Disposed);

        var late = new Acceptor();
        await listener.ParkAsync(late);
        Assert.True(late.Disposed);
    }

    [Fact]
    public async Task CloseUnclaimed_InheritedNobodyAskedFor_IsClosed()
    {
        int fd = BindListeningCopy(new IPEndPoint(IPAddress.Loopback, 0), out var address);
        string socket = FdTarget(fd)!;
        var unused = new Listener(fd, address, inherited: true);
        await using var registry = new ListenerRegistry([unused], new AcceptGate(), NullLogger.Instance);

        await registry.CloseUnclaimedAsync();

        Assert.True(unused.IsClosed);

        // Closed, or its number already reused by a test running beside this one: not this socket.
        Assert.NotEqual(socket, FdTarget(fd));
        Assert.Empty(registry.Listeners);
    }

    [Fact]
    public async Task Close_UnixListener_LeavesThePathForTheNextGeneration()
    {
        string path = Path.Combine(_directory, "a.sock");
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new UnixDomainSocketEndPoint(path));
        using (var accept = listener.CreateAcceptSocket())
        {
            Assert.Equal(path, accept.LocalEndPoint!.ToString());
        }

        await listener.CloseAsync();

        Assert.True(File.Exists(path));
    }

    [Fact]
    public async Task Listen_StaleUnixPath_IsReplacedButLiveOneIsInUse()
    {
        string path = Path.Combine(_directory, "stale.sock");
        await using (var crashed = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance))
        {
            // A process that died leaves its socket file behind: closing keeps the path.
            crashed.Listen(new UnixDomainSocketEndPoint(path));
        }

        Assert.True(File.Exists(path));
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new UnixDomainSocketEndPoint(path));
        await using var second = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);

        var e = Assert.Throws<SocketException>(() => second.Listen(new UnixDomainSocketEndPoint(path)));

        Assert.Equal(SocketError.AddressAlreadyInUse, e.SocketErrorCode);
        Assert.False(listener.IsClosed);
    }

    [Fact]
    public async Task Listen_DnsEndPoint_IsNotSupported()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);

        Assert.Throws<NotSupportedException>(() => registry.Listen(new DnsEndPoint("localhost", 80)));
    }

    [Fact]
    public async Task CloseAsync_PendingAccept_EndsWithoutStoppingOtherHolders()
    {
        await using var registry = new ListenerRegistry([], new AcceptGate(), NullLogger.Instance);
        var listener = registry.Listen(new IPEndPoint(IPAddress.Loopback, 0));
        int otherCopy = Interop.Libc.DuplicateCloseOnExec(listener.FileDescriptor, 3);
        try
        {
            var accept = listener.CreateAcceptSocket();
            var pending = accept.AcceptAsync();

            await listener.CloseAsync();

            await Assert.ThrowsAnyAsync<Exception>(() => pending);

            // The socket still listens through the other descriptor, as it would in the new generation.
            using var other = new Socket(new SafeSocketHandle(otherCopy, ownsHandle: false));
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(listener.EndPoint);
            using var served = await other.AcceptAsync();
            Assert.NotNull(served);
        }
        finally
        {
            Interop.Libc.Close(otherCopy);
        }
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    /// <summary>A listening socket at a descriptor of its own, as an inherited one would be.</summary>
    private static int BindListeningCopy(EndPoint endPoint, out EndPoint bound)
    {
        using var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(endPoint);
        socket.Listen();
        bound = socket.LocalEndPoint!;
        return Interop.Libc.DuplicateCloseOnExec((int)socket.Handle, 3);
    }

    private sealed class Acceptor : IAsyncDisposable
    {
        public bool Disposed { get; private set; }

        public ValueTask DisposeAsync()
        {
            Disposed = true;
            return ValueTask.CompletedTask;
        }
    }

    // "socket:[inode]" for a socket, null for a number not open.
    private static string? FdTarget(int fd) => new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
}
