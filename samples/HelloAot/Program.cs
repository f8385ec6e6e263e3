// The seeds' demo as a NativeAOT app: the same /?sleep=N as samples/HelloSleep, built with
// CreateSlimBuilder and published as one native executable, so that a new generation starts in
// tens of milliseconds instead of the JIT's several hundred. The new generation is that same
// executable, started again.
//
//   apt-get install clang zlib1g-dev
//   dotnet publish samples/HelloAot -c Release -r linux-x64 -o /tmp/hello-aot
//   /tmp/hello-aot/HelloAot --urls http://127.0.0.1:8080 --Handoff:PidFile=/tmp/hello-aot.pid &
//   curl 'http://127.0.0.1:8080/?sleep=3' &  kill -USR2 "$(cat /tmp/hello-aot.pid)"
using System.Globalization;
using System.Text;

// The content root is the executable's directory, not the working directory: the host watches
// its content root for configuration changes, and a start from a large directory (/tmp, a home)
// would spend its first hundreds of milliseconds adding watches there.
var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.WebHost.UseHandoff();

var app = builder.Build();
app.MapGet("/", async (HttpContext context, double? sleep, CancellationToken aborted) =>
{
    if (sleep is > 0)
    {
        await Task.Delay(TimeSpan.FromSeconds(sleep.Value), aborted);
    }

    byte[] body = Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"pid:{Environment.ProcessId}\nsleep:{sleep ?? 0}\n"));
    context.Response.ContentType = "text/plain; charset=utf-8";
    context.Response.ContentLength = body.Length;
    await context.Response.Body.WriteAsync(body, aborted);
});
app.Run();
