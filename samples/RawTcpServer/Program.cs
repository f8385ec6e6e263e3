// The seeds' raw TCP server, on Handoff's core API without ASP.NET Core: each connection sends
// one line and gets "pid:<pid>" and the line back. SIGUSR2 upgrades it; SIGTERM stops it after
// the connections in flight are done.
//
//   dotnet run --project samples/RawTcpServer -- 127.0.0.1:9000 /tmp/raw.pid
//   exec 3<>/dev/tcp/127.0.0.1/9000; echo hello >&3; cat <&3      (bash)
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Handoff;

var endPoint = IPEndPoint.Parse(args.Length > 0 ? args[0] : "127.0.0.1:9000");
var options = new HandoffOptions { PidFile = args.Length > 1 ? args[1] : null };
using var upgrader = new Upgrader(options);

using var stop = new CancellationTokenSource();
using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.Cancel();
});
using var superseded = upgrader.Superseded.Register(stop.Cancel);

var listener = upgrader.Listeners.Listen(endPoint);
Console.WriteLine($"pid {Environment.ProcessId} generation {upgrader.Generation} listening on {listener.EndPoint}");

// Listener.AcceptAsync accepts only while this generation accepts: from ReadyAsync until it
// hands over to a newer generation (and again if that one dies at once); null once closed.
var connections = new List<Task>();
var acceptLoop = Task.Run(async () =>
{
    while (await listener.AcceptAsync() is { } connection)
    {
        lock (connections)
        {
            connections.Add(ServeAsync(connection));
        }
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

// Drain: stop accepting (the next generation, if any, keeps the socket), finish what runs.
await upgrader.StopAsync();
await acceptLoop;
Task[] running;
lock (connections)
{
    running = [.. connections];
}

await Task.WhenAll(running).WaitAsync(options.DrainTimeout);
Console.WriteLine($"pid {Environment.ProcessId} exits");

static async Task ServeAsync(Socket connection)
{
    using (connection)
    {
        var received = new List<byte>();
        var buffer = new byte[1024];
        int n;
        while (!received.Contains((byte)'\n') && (n = await connection.ReceiveAsync(buffer)) > 0)
        {
            received.AddRange(buffer.AsSpan(0, n));
        }

        string line = Encoding.UTF8.GetString([.. received]).TrimEnd('\n');
        await connection.SendAsync(Encoding.UTF8.GetBytes($"pid:{Environment.ProcessId}\n{line}\n"));
        connection.Shutdown(SocketShutdown.Send);
    }
}
