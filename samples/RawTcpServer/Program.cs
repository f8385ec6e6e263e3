// The seeds' raw TCP server, on Handoff's core API without ASP.NET Core: a connection stays open
// for as long as the client wants, and every line the client sends comes back as
// "pid:<pid> <line> #<n>", the n-th line of this connection's session, so the client sees which
// generation serves it and that the session goes on. SIGUSR2 upgrades it: the new generation
// takes new connections, and the old one moves each open connection to it, with its session
// (the count, and the start of a line not ended yet): the client keeps its TCP connection and
// sees the new pid answer. Handoff__MoveConnections=false turns moving off: the old generation
// then serves its connections until their clients leave (or Handoff:DrainTimeout aborts them),
// and exits 0. SIGTERM stops it: no generation to move to, so it drains. The articles' client,
// which writes its name once a second on one connection, is here too:
//
//   dotnet run --project samples/RawTcpServer -- 127.0.0.1:9000 /tmp/raw.pid
//   dotnet run --project samples/RawTcpServer -- client 127.0.0.1:9000 alice
//   kill -USR2 "$(cat /tmp/raw.pid)"      (the client goes on, answered by the new pid)
//
// A third argument sets the drain timeout (e.g. 5s).
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Handoff;

if (args is ["client", var server, var name])
{
    return await Client.RunAsync(IPEndPoint.Parse(server), name);
}

var endPoint = IPEndPoint.Parse(args.Length > 0 ? args[0] : "127.0.0.1:9000");
var options = new HandoffOptions { PidFile = args.Length > 1 ? args[1] : null };
if (Environment.GetEnvironmentVariable("Handoff__MoveConnections") is { } move)
{
    if (!bool.TryParse(move, out bool moves))
    {
        Console.Error.WriteLine($"RawTcpServer: Handoff__MoveConnections is '{move}'; use true or false. Exiting with code 78.");
        return 78;
    }

    options.MoveConnections = moves;
}

if (args.Length > 2)
{
    options.DrainTimeout = TimeSpan.FromSeconds(double.Parse(args[2].TrimEnd('s'), System.Globalization.CultureInfo.InvariantCulture));
}

Upgrader upgrader;
try
{
    upgrader = new Upgrader(options);
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException)
{
    // A configuration mistake: one line and EX_CONFIG, as UseHandoff() does.
    Console.Error.WriteLine($"RawTcpServer: {e.Message} Exiting with code 78.");
    return 78;
}

using var stop = new CancellationTokenSource();
using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.Cancel();
});
using var superseded = upgrader.Superseded.Register(stop.Cancel);

// Made with the upgrader, before ReadyAsync: its connections can move to the next generation,
// and it receives those the previous generation moves here.
using var drain = new ConnectionDrain(upgrader);

var listener = upgrader.Listeners.Listen(endPoint);
Console.WriteLine($"pid {Environment.ProcessId} generation {upgrader.Generation} listening on {listener.EndPoint}");

// ConnectionDrain.AcceptAsync accepts only while this generation accepts (from ReadyAsync until
// it hands over to a newer one), returns the connections moved here too, counts every
// connection, and returns null once closed.
var acceptLoop = Task.Run(async () =>
{
    while (await drain.AcceptAsync(listener) is { } connection)
    {
        _ = ServeAsync(connection);
    }
});

await upgrader.ReadyAsync();
try
{
    await Task.Delay(Timeout.Infinite, stop.Token);
}
catch (OperationCanceledException)
{
}

// Stop accepting (the next generation, if any, keeps the socket), then finish what is open.
await upgrader.StopAsync();
await acceptLoop;
Console.WriteLine($"pid {Environment.ProcessId} draining {drain.Count} connections (at most {options.DrainTimeout.TotalSeconds:0.#} s)");
var result = await drain.DrainAsync(options.DrainTimeout);
Console.WriteLine($"pid {Environment.ProcessId} exits: {result.Moved} connections moved, {result.Finished} finished, {result.Aborted} aborted at the drain timeout");
upgrader.Dispose();
return 0;

static async Task ServeAsync(CountedConnection connection)
{
    using (connection)
    {
        var socket = connection.Socket;

        // A session moved here from the previous generation goes on where it was.
        var (answered, pending) = Session.Restore(connection.MovedState);
        var buffer = new byte[1024];
        var draining = connection.Draining;
        try
        {
            while (true)
            {
                int n;
                try
                {
                    n = await socket.ReceiveAsync(buffer, draining);
                }
                catch (OperationCanceledException) when (draining.IsCancellationRequested)
                {
                    // The generation drains, and no receive is pending now: nothing is half
                    // done but a line not ended yet, which goes along with the session (unless
                    // it is longer than a move's state may be: then this generation serves on).
                    if (pending.Count <= Session.MaxPending && await connection.MoveAsync(Session.Save(answered, pending)))
                    {
                        return;
                    }

                    // No newer generation takes it (SIGTERM, or moving is off): serve on until
                    // the client leaves or the drain timeout aborts the connection.
                    draining = CancellationToken.None;
                    continue;
                }

                if (n == 0)
                {
                    break;
                }

                pending.AddRange(buffer.AsSpan(0, n));
                int newline;
                while ((newline = pending.IndexOf((byte)'\n')) >= 0)
                {
                    string line = Encoding.UTF8.GetString([.. pending[..newline]]).TrimEnd('\r');
                    pending.RemoveRange(0, newline + 1);
                    answered++;
                    await socket.SendAsync(Encoding.UTF8.GetBytes($"pid:{Environment.ProcessId} {line} #{answered}\n"));
                }
            }

            // The client closed its side: so do we.
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Reset by the client, or aborted at the drain timeout.
        }
    }
}

// What a connection's session is, as it moves: the lines answered (4 bytes), then the start
// of a line not ended yet.
internal static class Session
{
    // CountedConnection.MoveAsync takes at most 1 MiB of state.
    public const int MaxPending = (1 << 20) - 4;

    public static (int Answered, List<byte> Pending) Restore(byte[]? state) =>
        state is { Length: >= 4 } ? (System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(state), [.. state.AsSpan(4)]) : (0, []);

    public static byte[] Save(int answered, List<byte> pending)
    {
        byte[] state = new byte[4 + pending.Count];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(state, answered);
        pending.CopyTo(state, 4);
        return state;
    }
}

internal static class Client
{
    // The articles' client: one connection, its name once a second, every answer printed.
    public static async Task<int> RunAsync(IPEndPoint server, string name)
    {
        using var socket = new Socket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(server);
        var buffer = new byte[1024];
        while (true)
        {
            await socket.SendAsync(Encoding.UTF8.GetBytes(name + "\n"));
            int n = await socket.ReceiveAsync(buffer);
            if (n == 0)
            {
                Console.Error.WriteLine("the server closed the connection");
                return 1;
            }

            Console.Write(Encoding.UTF8.GetString(buffer, 0, n));
            await Task.Delay(TimeSpan.FromSeconds(1));
        }
    }
}
