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

        'handoff <command> --help' shows a command's options.
        """;

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            Console.Out.Write(Usage);
            return args.Length == 0 ? ToolExitCodes.CouldNotAsk : ToolExitCodes.Success;
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
            Console.Out.Write(usage);
            return ToolExitCodes.Success;
        }

        try
        {
            int code = await run(rest).ConfigureAwait(false);
            if (code == -1)
            {
                throw new UsageException($"unknown command '{command}'");
            }

            return code;
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"handoff: {e.Message}");
            Console.Error.Write(usage);
            return ToolExitCodes.CouldNotAsk;
        }
        catch (ToolException e)
        {
            Console.Error.WriteLine($"handoff: {e.Message}");
            return e.ExitCode;
        }
#pragma warning disable CA1031 // The last resort: one line and a defined exit code, never a stack trace.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Console.Error.WriteLine($"handoff: {command} failed unexpectedly: {e.GetType().Name}: {e.Message}");
            return ToolExitCodes.CouldNotAsk;
        }
    }
}
