// The seeds' raw TCP server, on Handoff's core API without ASP.NET Core: a connection stays open
// for as long as the client wants, and every line the client sends comes back as
// "pid:<pid> <line>", so the client sees which generation serves it. SIGUSR2 upgrades it: the
// new generation takes new connections while the old one keeps serving the ones it has until
// their clients leave (or Handoff:DrainTimeout aborts them), then exits 0. SIGTERM stops it the
// same way. The articles' client, which writes its name once a second on one connection, is
// here too:
//
//   dotnet run --project samples/RawTcpServer -- 127.0.0.1:9000 /tmp/raw.pid
//   dotnet run --project samples/RawTcpServer -- client 127.0.0.1:9000 alice
//   kill -USR2 "$(cat /tmp/raw.pid)"      (the client goes on; new clients meet the new pid)
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
using var drain = new ConnectionDrain();

var listener = upgrader.Listeners.Listen(endPoint);
Console.WriteLine($"pid {Environment.ProcessId} generation {upgrader.Generation} listening on {listener.EndPoint}");

// ConnectionDrain.AcceptAsync accepts only while this generation accepts (from ReadyAsync until
// it hands over to a newer one), counts every connection, and returns null once closed.
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
Console.WriteLine($"pid {Environment.ProcessId} exits: {result.Finished} connections finished, {result.Aborted} aborted at the drain timeout");
upgrader.Dispose();
return 0;

static async Task ServeAsync(CountedConnection connection)
{
    using (connection)
    {
        var socket = connection.Socket;
        var pending = new List<byte>();
        var buffer = new byte[1024];
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer)) > 0)
            {
                pending.AddRange(buffer.AsSpan(0, n));
                int newline;
                while ((newline = pending.IndexOf((byte)'\n')) >= 0)
                {
                    string line = Encoding.UTF8.GetString([.. pending[..newline]]).TrimEnd('\r');
                    pending.RemoveRange(0, newline + 1);
                    await socket.SendAsync(Encoding.UTF8.GetBytes($"pid:{Environment.ProcessId} {line}\n"));
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
