using Microsoft.Extensions.Logging;

namespace Handoff.Tool;

/// <summary>The supervisor's log: one line per event on stderr, where a container runtime or
/// the journal collects it, with the level and this process's pid.</summary>
internal sealed class StderrLogger(string name) : ILogger
{
    private static readonly Lock Gate = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel))
        {
            return;
        }

        string level = logLevel switch
        {
            LogLevel.Warning => "warn",
            LogLevel.Error or LogLevel.Critical => "fail",
            _ => "info",
        };
        lock (Gate)
        {
            Console.Error.WriteLine($"{level}: {name}[{Environment.ProcessId}] {formatter(state, exception)}");
        }
    }
}
