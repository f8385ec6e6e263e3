// The seeds' demo server with Handoff: GET /?sleep=N waits N seconds (fractions allowed), then
// answers "pid:<pid>", so a client sees which generation served it. Send SIGUSR2 while a slow
// request runs: a new process takes over the listening socket, the old one finishes the request
// and exits. Responses carry a Content-Length, so keep-alive clients (ab -k, wrk) keep their
// connections.
//
//   dotnet build samples/HelloSleep
//   samples/HelloSleep/bin/Debug/net10.0/HelloSleep --urls http://127.0.0.1:8080 &
//   curl 'http://127.0.0.1:8080/?sleep=3' &  kill -USR2 <pid>
//
// /healthz answers 200 while this generation serves and 503 once it hands over or shuts down
// (try --Handoff:ShutdownDelay=5s, then SIGTERM while polling it). /metrics is Handoff's meter
// (and Kestrel's) through OpenTelemetry's Prometheus exporter; with OTEL_EXPORTER_OTLP_ENDPOINT
// set they are also pushed over OTLP (docs/metrics.md says which process reports what).
// Handoff's settings come from appsettings.json and the command line
// (--Handoff:PidFile=..., --Handoff:ControlSocket=...).
using System.Globalization;
using OpenTelemetry.Metrics;
using System.Text;

// The content root is the build output, so appsettings.json is found from any working directory.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.WebHost.UseHandoff();
builder.Services.AddHealthChecks().AddHandoff();
builder.Services.AddOpenTelemetry().WithMetrics(metrics =>
{
    metrics.AddMeter("Handoff", "Microsoft.AspNetCore.Server.Kestrel").AddPrometheusExporter();
    if (!string.IsNullOrEmpty(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
    {
        metrics.AddOtlpExporter();
    }
});

var app = builder.Build();
app.MapHealthChecks("/healthz");
app.MapPrometheusScrapingEndpoint(); // GET /metrics
app.MapGet("/", async (HttpContext context, ILogger<Program> log, double? sleep, CancellationToken aborted) =>
{
    if (sleep is > 0)
    {
        Log.Sleeping(log, Environment.ProcessId, sleep.Value);
        await Task.Delay(TimeSpan.FromSeconds(sleep.Value), aborted);
    }

    // With a Content-Length, not chunked: ab -k speaks HTTP/1.0 and keeps a connection only then.
    byte[] body = Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"pid:{Environment.ProcessId}\nsleep:{sleep ?? 0}\n"));
    context.Response.ContentType = "text/plain; charset=utf-8";
    context.Response.ContentLength = body.Length;
    await context.Response.Body.WriteAsync(body, aborted);
});
app.Run();

internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Pid {Pid} received a request sleeping {Seconds} s")]
    public static partial void Sleeping(ILogger logger, int pid, double seconds);
}
