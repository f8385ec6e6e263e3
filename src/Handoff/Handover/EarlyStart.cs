namespace Handoff;

/// <summary>
/// What a process must do before any code of the application runs: take over what the previous
/// generation handed over (set FD_CLOEXEC on it, remove the variable from the native
/// environment too), and handle the upgrade signals. A new generation runs it from the .NET
/// startup hook that the previous generation names in <c>DOTNET_STARTUP_HOOKS</c>, before
/// <c>Main</c>; otherwise the first use of Handoff (<c>UseHandoff()</c>, a new
/// <see cref="Upgrader"/>) runs it. It runs once per process.
/// </summary>
internal static class EarlyStart
{
    /// <summary>The variable through which the previous generation has the runtime call
    /// <see cref="global::StartupHook"/>.</summary>
    public const string StartupHooksVariable = "DOTNET_STARTUP_HOOKS";

    /// <summary>The entry the previous generation puts first in <see cref="StartupHooksVariable"/>:
    /// the assembly's simple name, resolved from the application's own dependencies (so the new
    /// build's Handoff runs, never the old build's file).</summary>
    public const string StartupHookEntry = "Handoff";

    /// <summary>The signals Handoff handles in every process, whatever is configured: SIGUSR2
    /// is the documented upgrade signal, and its default action would kill the server.</summary>
    public static readonly IReadOnlyList<int> AlwaysHandled = [Interop.Libc.SIGUSR2];

    private static readonly Lock Gate = new();
    private static Inheritance? _inheritance;
    private static SystemdEnvironment _systemd = SystemdEnvironment.None;
    private static string? _shadowCopy;

    /// <summary>The value of <see cref="ShadowCopy.VariableName"/> this process started with
    /// (removed from the environment by <see cref="Run"/>), or null.</summary>
    public static string? ShadowCopyValue
    {
        get
        {
            _ = Run();
            lock (Gate)
            {
                return _shadowCopy;
            }
        }
    }

    /// <summary>What systemd passed to this process (captured and removed from the environment
    /// by <see cref="Run"/>), with warnings about what could not be used.</summary>
    public static SystemdEnvironment Systemd
    {
        get
        {
            _ = Run();
            lock (Gate)
            {
                return _systemd;
            }
        }
    }

    /// <summary>Runs the early start once and returns what this process inherited. A handover
    /// that is malformed, stale or forged ends the process here with
    /// <see cref="ExitCodes.HandoverRejected"/> and a line on stderr naming what is wrong.</summary>
    public static Inheritance Run()
    {
        lock (Gate)
        {
            if (_inheritance is not null)
            {
                return _inheritance;
            }

            long startedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            string? value = Environment.GetEnvironmentVariable(HandoverEnvironment.VariableName);
            if (value is not null)
            {
                Interop.Libc.SetEnvironmentVariable(HandoverEnvironment.VariableName, null);
            }

            string? moves = Environment.GetEnvironmentVariable(MoveChannel.VariableName);
            if (moves is not null)
            {
                Interop.Libc.SetEnvironmentVariable(MoveChannel.VariableName, null);
            }

            // Set by the previous generation, or by a unit file so that generation 1 also runs
            // this before Main: either way no other .NET program this process starts must get it.
            RemoveStartupHookEntry();

            // The previous generation started this process with its upgrade signals blocked, so
            // that one sent to the whole process group could not kill it before now.
            int[] candidates = [Interop.Libc.SIGHUP, Interop.Libc.SIGUSR1, Interop.Libc.SIGUSR2];
            var blocked = Interop.Libc.BlockedSignals(candidates);
            SignalRouter.Handle(blocked.Union(AlwaysHandled).Select(UpgradeSignalNames.ToPosixSignal));
            Interop.Libc.UnblockSignals(blocked);

            // Before anything can start a program that would misread them.
            _systemd = SystemdEnvironment.Capture();
            _shadowCopy = Environment.GetEnvironmentVariable(ShadowCopy.VariableName);
            if (_shadowCopy is not null)
            {
                // The launcher gives each new generation its own value.
                Interop.Libc.SetEnvironmentVariable(ShadowCopy.VariableName, null);
            }

            try
            {
                if (value is null)
                {
                    var warnings = new List<string>(_systemd.Warnings);
                    _inheritance = Inheritance.FirstStart(_systemd.ActivatedFds, warnings);
                    _systemd = _systemd with { Warnings = warnings };
                }
                else
                {
                    _inheritance = Inheritance.Load(value, Interop.Libc.GetParentPid(), moves: moves);
                    if (_inheritance.ReadyPipe is { } pipe)
                    {
                        // A build that throws before it is ready (in Main, in a host build step)
                        // fails the upgrade with its exception, not only with an exit status.
                        AppDomain.CurrentDomain.UnhandledException += (_, e) =>
                            pipe.ReportFailed(e.ExceptionObject is Exception exception
                                ? $"unhandled exception: {exception.GetType().Name}: {exception.Message}"
                                : "unhandled exception");
                    }
                }
            }
            catch (HandoffProtocolException e)
            {
                Console.Error.WriteLine($"Handoff: cannot start pid {Environment.ProcessId} as a new generation: {e.Message} Exiting with code {ExitCodes.HandoverRejected}.");
                Environment.Exit(ExitCodes.HandoverRejected);
                throw; // Unreachable.
            }

            if (_inheritance.ReadyPipe is not null)
            {
                // For the ready report: how long the runtime took to get here, and this took.
                _inheritance.Moments = (startedAt, System.Diagnostics.Stopwatch.GetTimestamp());
            }

            return _inheritance;
        }
    }

    private static void RemoveStartupHookEntry()
    {
        string[] entries = (Environment.GetEnvironmentVariable(StartupHooksVariable) ?? "").Split(Path.PathSeparator);
        if (entries[0] == StartupHookEntry)
        {
            string rest = string.Join(Path.PathSeparator, entries.Skip(1));
            Interop.Libc.SetEnvironmentVariable(StartupHooksVariable, rest.Length == 0 ? null : rest);
        }
    }
}
