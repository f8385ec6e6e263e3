using System.Net;
using System.Net.Sockets;

namespace Handoff.Tests;

/// <summary>Both ends of a real loopback TCP connection: the client's, and the one a server
/// accepted (what moves between generations).</summary>
internal sealed class TcpPair : IDisposable
{
    private TcpPair(Socket client, Socket server)
    {
        Client = client;
        Server = server;
    }

    public Socket Client { get; }

    public Socket Server { get; }

    /// <summary>The accepted end's descriptor.</summary>
    public int ServerFd => (int)Server.SafeHandle.DangerousGetHandle();

    public static TcpPair Open()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        return new TcpPair(client, listener.Accept());
    }

    public void Dispose()
    {
        Client.Dispose();
        Server.Dispose();
    }
}
