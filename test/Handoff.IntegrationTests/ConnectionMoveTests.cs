using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// Connections that move (Handoff:MoveConnections, issue 23), with real processes: idle
/// keep-alive connections of a client that never reconnects stay the same TCP connections across
/// upgrades, and their next requests are answered by the new generation.
/// </summary>
public sealed class ConnectionMoveTests(ITestOutputHelper output)
{
    private const int Connections = 16;

    [Fact]
    public async Task Upgrade_WithMoveConnections_IdleKeepAliveConnectionsMove_TheSameSocketsAnsweredByEachNewGeneration()
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:MoveConnections=true", "--Handoff:RollbackWindow=0s"]);
        var sockets = new List<Socket>();
        try
        {
            int pid = server.CurrentPid;
            for (int i = 0; i < Connections; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(socket);
                await socket.ConnectAsync(server.EndPoint);
                Assert.Equal(pid, await RequestAsync(socket));
            }

            var ports = sockets.Select(s => ((IPEndPoint)s.LocalEndPoint!).Port).ToList();
            for (int upgrade = 1; upgrade <= 3; upgrade++)
            {
                int old = pid;
                pid = await server.UpgradeWithoutWaitingForExitAsync();

                // The old generation has nothing left to drain once its connections have moved.
                Assert.Equal(0, await server.WaitForExitAsync(old, ServerProcess.StartTimeout));
                foreach (var socket in sockets)
                {
                    // No FIN or RST arrived: the same connection carries the next request.
                    Assert.False(socket.Poll(TimeSpan.Zero, SelectMode.SelectRead), "the connection was closed");
                    Assert.Equal(pid, await RequestAsync(socket));
                }

                output.WriteLine($"upgrade {upgrade}: {Connections} connections moved from pid {old} to pid {pid}");
            }

            Assert.Equal(ports, sockets.Select(s => ((IPEndPoint)s.LocalEndPoint!).Port).ToList());
            Assert.Equal(3, server.CountOf($"{Connections} adopted, 0 closed"));
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
            output.WriteLine(server.Output);
        }
    }

    private static async Task<int> RequestAsync(Socket socket)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await socket.SendAsync(Encoding.ASCII.GetBytes("GET /?sleep=0 HTTP/1.1\r\nHost: localhost\r\n\r\n"), limit.Token);
        var received = new List<byte>();
        var buffer = new byte[4096];
        while (true)
        {
            int read = await socket.ReceiveAsync(buffer, limit.Token);
            if (read == 0)
            {
                throw new IOException("the server closed the connection before the response was complete");
            }

            received.AddRange(buffer.AsSpan(0, read));
            string text = Encoding.ASCII.GetString([.. received]);
            int headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (headEnd < 0)
            {
                continue;
            }

            Assert.StartsWith("HTTP/1.1 200", text, StringComparison.Ordinal);
            Assert.DoesNotContain("Connection: close", text[..headEnd], StringComparison.OrdinalIgnoreCase);
            string lengthLine = text[..headEnd].Split("\r\n").Single(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
            int length = int.Parse(lengthLine["Content-Length:".Length..].Trim(), CultureInfo.InvariantCulture);
            if (received.Count >= headEnd + 4 + length)
            {
                string body = text[(headEnd + 4)..];
                return int.Parse(body[4..body.IndexOf('\n', StringComparison.Ordinal)], CultureInfo.InvariantCulture);
            }
        }
    }
}
