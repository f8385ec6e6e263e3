// The seeds' demo server: GET /?sleep=N waits N seconds (fractions allowed), then answers with
// "pid:<pid>" on the first line, so a client sees which generation served it.
//
//   dotnet run --project samples/HelloSleep -- --urls http://127.0.0.1:8080
//   curl 'http://127.0.0.1:8080/?sleep=3' &  kill -USR2 <pid>
//
// Test switches (configuration keys, e.g. --HelloSleep:FailStart=true):
//   HelloSleep:FailStart      throw during start-up (a broken build)
//   HelloSleep:NeverReady     warm-up that never finishes (a build that hangs)
//   HelloSleep:FailWarmUp     warm-up that throws
//   HelloSleep:NoHandoff      plain Kestrel without Handoff (the benchmarks' baseline)
// Each can also be turned on by a file: HELLOSLEEP_BREAK_<KEY>=/path turns it on while /path
// exists, so a test can break "the next build" without changing the arguments.
using System.Globalization;

// Content root is the build output, so appsettings.json is found from any working directory.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
bool Broken(string key) =>
    builder.Configuration.GetValue<bool>($"HelloSleep:{key}") ||
    (Environment.GetEnvironmentVariable("HELLOSLEEP_BREAK_" + key.ToUpperInvariant()) is { Length: > 0 } marker && File.Exists(marker));

if (Broken("FailStart"))
{
    throw new InvalidOperationException("HelloSleep:FailStart is set: this build is broken on purpose.");
}

// HelloSleep:NoHandoff=true runs the same app as plain Kestrel: the benchmarks' baseline.
if (!builder.Configuration.GetValue<bool>("HelloSleep:NoHandoff"))
{
    builder.WebHost.UseHandoff(ConfigureHandoff);
}

void ConfigureHandoff(Handoff.HandoffOptions options)
{
    if (Broken("NeverReady"))
    {
        options.WarmUp = (_, token) => Task.Delay(Timeout.Infinite, token);
    }
    else if (Broken("FailWarmUp"))
    {
        options.WarmUp = (_, _) => throw new InvalidOperationException("HelloSleep:FailWarmUp is set: warm-up fails on purpose.");
    }
}

var app = builder.Build();
app.MapGet("/", async (double? sleep, CancellationToken aborted) =>
{
    if (sleep is > 0)
    {
        await Task.Delay(TimeSpan.FromSeconds(sleep.Value), aborted);
    }

    return $"pid:{Environment.ProcessId}\nsleep:{(sleep ?? 0).ToString(CultureInfo.InvariantCulture)}\n";
});
app.Run();
