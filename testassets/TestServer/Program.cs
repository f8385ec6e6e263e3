// The integration tests' and the benchmark's server: the seeds' HelloSleep demo (samples/HelloSleep:
// GET /?sleep=N waits N seconds, then answers "pid:<pid>" first) with the endpoints and switches
// the tests need. Its answer to / adds "sleep:", "base:" (the directory it runs from) and "build:"
// (a marker a test patches to tell two builds apart) lines. Not an example to copy: read
// samples/HelloSleep for that.
//
// Test switches (configuration keys, e.g. --TestServer:FailStart=true):
//   TestServer:FailStart      throw during start-up (a broken build)
//   TestServer:NeverReady     warm-up that never finishes (a build that hangs)
//   TestServer:FailWarmUp     warm-up that throws
//   TestServer:NoHandoff      plain Kestrel without Handoff (the benchmarks' baseline); with
//                             LISTEN_FDS/LISTEN_PID set, Kestrel's UseSystemd() takes the
//                             socket-activated listener at fd 3 (the socket-activated baseline)
//   TestServer:HttpsInCode    a PKCS#12 file: listen on 127.0.0.1 (dynamic port) with
//                             ListenOptions.UseHttps in code (password TestServer:HttpsPassword)
// HTTPS from configuration is Kestrel's usual: --Kestrel:Endpoints:Https:Url=https://127.0.0.1:8443
// --Kestrel:Endpoints:Https:Certificate:Path=server.pfx --Kestrel:Endpoints:Https:Certificate:Password=...
// Each can also be turned on by a file: TESTSERVER_BREAK_<KEY>=/path turns it on while /path
// exists, so a test can break "the next build" without changing the arguments.
// Holds, for tests that act at a precise moment of a start:
//   TESTSERVER_HOLD_START=/path   host start waits (before ApplicationStarted) while /path exists
//   TESTSERVER_LISTENERS_FILE=/path  listen on N loopback port-0 sockets, N read from /path at start
//   TESTSERVER_HOLD_WARMUP=/path  Handoff's warm-up waits while /path exists
//   TESTSERVER_SPAWN_AT_START=1   starts "sleep 600" first thing in Main, as apps that start
//                                 helper processes do; its pid is written to the log
// Other endpoints: /ws (a WebSocket that first sends "pid:<pid>", then echoes every message;
// Handoff closes it with 1012 when this generation drains), /ws-keep (the same, opted out of
// that close), /ws-move (a WebSocket that moves to the new generation; see its comment below),
// /sse (server-sent events, "data: pid:<pid>" once a second, ending when this
// generation drains), /native-env?name=X (the native environment's value), /healthz (Handoff's
// health check: 200 while this generation serves, 503 once it hands over, is superseded or
// shuts down), /allocated (bytes this process allocated so far), /metrics (what the meter
// "Handoff" measured in this process, as text;
// TESTSERVER_METRICS_LOG=/path also appends each recorded measurement to that file).
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

if (Environment.GetEnvironmentVariable("TESTSERVER_SPAWN_AT_START") == "1")
{
    using var helper = System.Diagnostics.Process.Start("sleep", "600");
    Console.WriteLine($"TestServer started helper pid {helper.Id}");
}

// Content root is the build output, so appsettings.json is found from any working directory.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
bool Broken(string key) =>
    builder.Configuration.GetValue<bool>($"TestServer:{key}") ||
    (Environment.GetEnvironmentVariable("TESTSERVER_BREAK_" + key.ToUpperInvariant()) is { Length: > 0 } marker && File.Exists(marker));

if (Broken("FailStart"))
{
    throw new InvalidOperationException("TestServer:FailStart is set: this build is broken on purpose.");
}

// TestServer:NoHandoff=true runs the same app as plain Kestrel: the benchmarks' baseline.
bool handoff = !builder.Configuration.GetValue<bool>("TestServer:NoHandoff");
if (handoff)
{
    builder.WebHost.UseHandoff();
    builder.Services.AddHealthChecks().AddHandoff();
    if (Broken("NeverReady"))
    {
        builder.Services.AddHandoffWarmUp((_, token) => Task.Delay(Timeout.Infinite, token));
    }
    else if (Broken("FailWarmUp"))
    {
        builder.Services.AddHandoffWarmUp((_, _) => throw new InvalidOperationException("TestServer:FailWarmUp is set: warm-up fails on purpose."));
    }
    else if (Environment.GetEnvironmentVariable("TESTSERVER_HOLD_WARMUP") is { Length: > 0 } holdWarmUp)
    {
        builder.Services.AddHandoffWarmUp((_, token) => Hold.WhileExistsAsync(holdWarmUp, token));
    }
}
else if (Environment.GetEnvironmentVariable("LISTEN_FDS") is { Length: > 0 })
{
    // Plain Kestrel under socket activation: the socket outlives every restart, so connections
    // wait in its queue while no process accepts (how systemd restarts a socket-activated unit).
    builder.WebHost.ConfigureKestrel(kestrel => kestrel.UseSystemd());
}

builder.Services.AddSingleton<HandoffMetricsText>();

if (builder.Configuration["TestServer:HttpsInCode"] is { Length: > 0 } pfx)
{
    string? password = builder.Configuration["TestServer:HttpsPassword"];
    builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(System.Net.IPAddress.Loopback, 0, listen => listen.UseHttps(pfx, password)));
}

if (Environment.GetEnvironmentVariable("TESTSERVER_LISTENERS_FILE") is { Length: > 0 } listenersFile)
{
    // Each generation reads it at its start: a build that listens on fewer ports than the one
    // before (the ports are port 0 on loopback, each meeting the inherited socket in order).
    int count = int.Parse(File.ReadAllText(listenersFile).Trim(), CultureInfo.InvariantCulture);
    builder.WebHost.ConfigureKestrel(kestrel =>
    {
        for (int i = 0; i < count; i++)
        {
            kestrel.Listen(System.Net.IPAddress.Loopback, 0);
        }
    });
}

if (Environment.GetEnvironmentVariable("TESTSERVER_HOLD_START") is { Length: > 0 } holdStart)
{
    builder.Services.AddHostedService(_ => new Hold(holdStart));
}

var app = builder.Build();

// Listening from the start, as an exporter would, so that nothing recorded is missed.
var metrics = app.Services.GetRequiredService<HandoffMetricsText>();
app.UseWebSockets();
if (handoff)
{
    app.MapHealthChecks("/healthz");
}

app.MapGet("/metrics", () => metrics.Render());
app.MapGet("/", async (HttpContext context, double? sleep, CancellationToken aborted) =>
{
    if (sleep is > 0)
    {
        // Tests wait for this line instead of sleeping "long enough" for the request to arrive.
        Console.WriteLine($"TestServer pid {Environment.ProcessId} received a request sleeping {sleep.Value.ToString(CultureInfo.InvariantCulture)} s");
        await Task.Delay(TimeSpan.FromSeconds(sleep.Value), aborted);
    }

    byte[] body = Encoding.UTF8.GetBytes($"pid:{Environment.ProcessId}\nsleep:{(sleep ?? 0).ToString(CultureInfo.InvariantCulture)}\nbase:{AppContext.BaseDirectory}\nbuild:{BuildMarker.Value}\n");
    context.Response.ContentType = "text/plain; charset=utf-8";
    context.Response.ContentLength = body.Length;
    await context.Response.Body.WriteAsync(body, aborted);
});

// POST /: reads the whole body, then answers as GET / does, with the bytes it received.
app.MapPost("/", async (HttpContext context, CancellationToken aborted) =>
{
    long received = 0;
    var buffer = new byte[16 * 1024];
    int read;
    while ((read = await context.Request.Body.ReadAsync(buffer, aborted)) > 0)
    {
        received += read;
    }

    byte[] body = Encoding.UTF8.GetBytes($"pid:{Environment.ProcessId}\nreceived:{received.ToString(CultureInfo.InvariantCulture)}\n");
    context.Response.ContentType = "text/plain; charset=utf-8";
    context.Response.ContentLength = body.Length;
    await context.Response.Body.WriteAsync(body, aborted);
});
app.MapGet("/native-env", (string name) => Native.GetEnvironmentVariable(name) ?? "(unset)");

// Bytes this process has allocated so far, exactly: the benchmark reads it before and after a
// fixed number of requests to report allocated bytes per request.
app.MapGet("/allocated", () => GC.GetTotalAllocatedBytes(precise: true).ToString(CultureInfo.InvariantCulture));
async Task EchoWebSocket(HttpContext context)
{
    if (!context.WebSockets.IsWebSocketRequest)
    {
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        return;
    }

    using var socket = await context.WebSockets.AcceptWebSocketAsync();

    // First which generation serves this WebSocket, then an echo of every message.
    await socket.SendAsync(Encoding.UTF8.GetBytes($"pid:{Environment.ProcessId}"), System.Net.WebSockets.WebSocketMessageType.Text, endOfMessage: true, context.RequestAborted);
    var buffer = new byte[4096];
    while (true)
    {
        var received = await socket.ReceiveAsync(buffer, context.RequestAborted);
        if (received.MessageType == System.Net.WebSockets.WebSocketMessageType.Close)
        {
            await socket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, null, context.RequestAborted);
            return;
        }

        await socket.SendAsync(buffer.AsMemory(0, received.Count), received.MessageType, received.EndOfMessage, context.RequestAborted);
    }
}

app.Map("/ws", EchoWebSocket);
app.Map("/ws-keep", EchoWebSocket).WithMetadata(new Handoff.HandoffKeepWebSocketsOpenAttribute());

// /ws-move: a WebSocket that moves to the new generation at an upgrade (MapHandoffWebSocket).
// Each message is answered "pid:<pid> #<n> <message>", n counting this connection's messages
// across generations (the session's state); the message "?protocol" is answered with the
// sub-protocol chosen at the handshake (the client's first). ?save=throw|hang|none makes its SaveState throw,
// hang, or stay unset (the connection then gets 1012 instead of moving); ?compress=1 accepts
// with permessage-deflate. TestServer:NoMovingWebSockets=true maps it as a plain WebSocket
// endpoint (a build without MapHandoffWebSocket).
if (handoff && !Broken("NoMovingWebSockets"))
{
    app.MapHandoffWebSocket("/ws-move", MovingEcho.RunAsync, context => new WebSocketAcceptContext
    {
        DangerousEnableCompression = context.Request.Query["compress"] == "1",
        SubProtocol = context.WebSockets.WebSocketRequestedProtocols.FirstOrDefault(),
    });
}
else
{
    app.Map("/ws-move", EchoWebSocket);
}

// Server-sent events: "data: pid:<pid>" once a second until the client leaves, or until this
// generation drains (Upgrader.Draining): the stream then ends and the client reconnects, to the
// new generation. "retry: 0" asks EventSource clients to reconnect at once.
app.MapGet("/sse", async (HttpContext context, CancellationToken aborted) =>
{
    var draining = context.RequestServices.GetService<Handoff.Upgrader>()?.Draining ?? CancellationToken.None;
    using var stop = CancellationTokenSource.CreateLinkedTokenSource(aborted, draining);
    context.Response.ContentType = "text/event-stream";
    context.Response.Headers.CacheControl = "no-cache";
    try
    {
        await context.Response.WriteAsync("retry: 0\n\n", stop.Token);
        while (!stop.IsCancellationRequested)
        {
            await context.Response.WriteAsync($"data: pid:{Environment.ProcessId}\n\n", stop.Token);
            await context.Response.Body.FlushAsync(stop.Token);
            await Task.Delay(TimeSpan.FromSeconds(1), stop.Token);
        }
    }
    catch (OperationCanceledException) when (draining.IsCancellationRequested && !aborted.IsCancellationRequested)
    {
        // This generation drains: the stream ends here. Over HTTP/1.1 the connection would stay
        // open and the client's reconnect would come back to this generation on it, so the
        // connection ends after this response (HTTP/2 clients got GOAWAY and open a new one).
        if (HttpProtocol.IsHttp11(context.Request.Protocol))
        {
            context.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeNotificationFeature>()?.RequestClose();
        }
    }
    catch (OperationCanceledException)
    {
        // The client left, or the connection was aborted.
    }
});
app.Run();

/// <summary>Holds the host's start while a file exists (bounded by a minute).</summary>
internal sealed class Hold(string path) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => WhileExistsAsync(path, cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public static async Task WhileExistsAsync(string path, CancellationToken cancellationToken)
    {
        Console.WriteLine($"TestServer pid {Environment.ProcessId} holds while {path} exists");
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(TimeSpan.FromMinutes(1));
        while (File.Exists(path))
        {
            await Task.Delay(20, limit.Token);
        }
    }
}

internal static partial class Native
{
    [LibraryImport("libc", EntryPoint = "getenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint GetEnv(string name);

    public static string? GetEnvironmentVariable(string name) => Marshal.PtrToStringUTF8(GetEnv(name));
}

// Which build serves: tests deploy "a new build" by patching this string in TestServer.dll
// (same length, UTF-16 in the assembly's string heap), which keeps the assembly valid.
internal static class BuildMarker
{
    public static readonly string Value = "testserver-build-0000";
}

/// <summary>The /ws-move session: see the endpoint's comment.</summary>
internal static class MovingEcho
{
    private static ReadOnlyMemory<byte> Hang()
    {
        Thread.Sleep(Timeout.Infinite);
        return default;
    }

    public static async Task RunAsync(Handoff.HandoffWebSocket session)
    {
        var socket = session.WebSocket;
        string save = session.HttpContext?.Request.Query["save"].ToString() ?? "";
        long count = session.State.IsEmpty ? 0 : BitConverter.ToInt64(session.State.Span);
        session.SaveState = save switch
        {
            "none" => null,
            "throw" => () => throw new InvalidOperationException("TestServer's SaveState throws on purpose."),
            "hang" => Hang,
            _ => () => BitConverter.GetBytes(count),
        };
        var buffer = new byte[64 * 1024];
        using var message = new MemoryStream();
        try
        {
            while (true)
            {
                message.SetLength(0);
                System.Net.WebSockets.ValueWebSocketReceiveResult received;
                do
                {
                    received = await socket.ReceiveAsync(buffer.AsMemory(), session.Aborted);
                    if (received.MessageType == System.Net.WebSockets.WebSocketMessageType.Close)
                    {
                        await socket.CloseOutputAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, null, session.Aborted);
                        return;
                    }

                    message.Write(buffer, 0, received.Count);
                }
                while (!received.EndOfMessage);

                count++;
                if (message.Length == 9 && Encoding.UTF8.GetString(message.GetBuffer(), 0, 9) == "?protocol")
                {
                    message.SetLength(0);
                    message.Write(Encoding.UTF8.GetBytes($"protocol:{socket.SubProtocol}"));
                }

                byte[] prefix = Encoding.UTF8.GetBytes($"pid:{Environment.ProcessId} #{count} ");
                byte[] reply = new byte[prefix.Length + message.Length];
                prefix.CopyTo(reply, 0);
                message.GetBuffer().AsSpan(0, (int)message.Length).CopyTo(reply.AsSpan(prefix.Length));
                await socket.SendAsync(reply, received.MessageType, endOfMessage: true, session.Aborted);
            }
        }
        catch (OperationCanceledException) when (session.Moved)
        {
            // The next generation carries on with this connection and its count.
        }
    }
}
