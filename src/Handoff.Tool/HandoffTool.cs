using System.Reflection;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace Handoff.Tool;

/// <summary>Dispatches to the commands; turns usage mistakes and failures into one line on
/// stderr and a defined exit code.</summary>
internal static class HandoffTool
{
    private const string Usage = """
        usage: handoff <command> [options]

        commands:
          upgrade   upgrade a running server and report how it ended
          status    show the serving generation, its listeners, connections and last upgrade
          run       run a server under a supervisor with a stable pid (containers, process managers)

        options:
          -h, --help      this text; 'handoff <command> --help' shows a command's options
          -V, --version   the tool's version
        """;

    // What a misspelt command is compared with.
    private static readonly string[] Commands = ["upgrade", "status", "run", "--help", "--version"];

    /// <summary>The tool's version as built: the package version and, from SourceLink, the commit.</summary>
    public static string Version { get; } =
        typeof(HandoffTool).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    public static Task<int> RunAsync(string[] args) => RunAsync(args, Console.Out, Console.Error);

    // For testing: the commands themselves still write to the console.
    internal static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            output.WriteLine(Usage);
            return args.Length == 0 ? ToolExitCodes.CouldNotAsk : ToolExitCodes.Success;
        }

        if (args[0] is "-V" or "--version")
        {
            output.WriteLine($"handoff {Version}");
            return ToolExitCodes.Success;
        }

        string command = args[0];
        string[] rest = args[1..];
        (string usage, Func<IReadOnlyList<string>, Task<int>> run) = command switch
        {
            "upgrade" => (UpgradeCommand.Usage, UpgradeCommand.RunAsync),
            "status" => (StatusCommand.Usage, StatusCommand.RunAsync),
            "run" => (RunCommand.Usage, (Func<IReadOnlyList<string>, Task<int>>)RunCommand.RunAsync),
            _ => (Usage, _ => Task.FromResult(-1)),
        };

        if (rest.TakeWhile(a => a != "--").Any(a => a is "-h" or "--help"))
        {
            output.WriteLine(usage);
            return ToolExitCodes.Success;
        }

        try
        {
            int code = await run(rest).ConfigureAwait(false);
            if (code == -1)
            {
                throw new UsageException($"unknown command '{command}'{Arguments.DidYouMean(command, Commands)}");
            }

            return code;
        }
        catch (UsageException e)
        {
            error.WriteLine($"handoff: {e.Message}");
            error.WriteLine(usage);
            return ToolExitCodes.CouldNotAsk;
        }
        catch (ToolException e)
        {
            error.WriteLine($"handoff: {e.Message}");
            return e.ExitCode;
        }
#pragma warning disable CA1031 // The last resort: one line and a defined exit code, never a stack trace.
        catch (Exception e)
#pragma warning restore CA1031
        {
            error.WriteLine($"handoff: {command} failed unexpectedly: {e.GetType().Name}: {e.Message}");
            return ToolExitCodes.CouldNotAsk;
        }
    }
}
