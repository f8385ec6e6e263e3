using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Handoff.Tool;

/// <summary>
/// <c>handoff upgrade</c>: starts an upgrade and reports how it ended. Over the control socket
/// the server answers with the outcome itself. With <c>--pid</c>/<c>--pid-file</c> it sends a
/// signal and watches from outside, which cannot tell a failed upgrade from a slow one.
/// </summary>
internal static class UpgradeCommand
{
    private static readonly ToolOption[] Options =
    [
        new("control", "PATH", "the server's control socket (Handoff:ControlSocket); default\n$RUNTIME_DIRECTORY/handoff.sock when systemd sets RUNTIME_DIRECTORY"),
        new("pid-file", "FILE", "without a control socket: signal the pid the file names and wait\nuntil it names a new one (cannot see why an upgrade failed)"),
        new("pid", "PID", "without a control socket or pid file: signal PID and wait until\nit exits (the new pid is not known)"),
        new("signal", "NAME", "the upgrade signal for --pid/--pid-file (default SIGUSR2)"),
        new("timeout", "T", "how long to wait for the outcome (default 120s)"),
        new("json", null, "print the server's answer as JSON"),
    ];

    public static readonly string Usage = $"""
        handoff upgrade [--control PATH | --pid-file FILE | --pid PID] [options]

          Upgrades a running Handoff server: it starts the build now on disk, hands it the
          listening sockets, and keeps serving if the new build fails. Waits for the outcome.

        {ToolOption.Describe(Options)}

          An upgrade asked for while another one runs (or while the generation that just
          took over can still roll back) waits for it and then runs: the build on disk then
          is what serves. Its outcome is reported.

          Exit codes: 0 upgraded, 1 failed (the new build did not take over; the server is
          unchanged), 2 could not ask (no server, permission denied, usage), 3 timed out
          waiting, 4 refused (nothing was started: the server cannot upgrade now, e.g. it is
          shutting down; it is unchanged, try again later).
        """;

    private static readonly string[] Targets = ["control", "pid-file", "pid"];

    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(120);

    // Handoff's default RollbackWindow and a margin: how long a pid-file watch waits before it
    // believes a new pid.
    private static readonly TimeSpan RollbackWatch = new HandoffOptions().RollbackWindow + TimeSpan.FromMilliseconds(500);

    public static async Task<int> RunAsync(IReadOnlyList<string> args)
    {
        var options = Arguments.Parse(args, Options);
        var timeout = options.Duration("timeout", DefaultTimeout);
        int targets = Targets.Count(options.Has);
        if (targets > 1)
        {
            throw new UsageException("give one of --control, --pid-file and --pid");
        }

        if (options.Has("pid-file") || options.Has("pid"))
        {
            return await SignalAsync(options, timeout).ConfigureAwait(false);
        }

        if (options.Has("signal"))
        {
            throw new UsageException("--signal goes with --pid or --pid-file; over the control socket no signal is sent");
        }

        string path = options.Value("control") ?? ControlClient.DefaultPath()
            ?? throw new UsageException("say which server: --control PATH (its Handoff:ControlSocket), or --pid-file FILE");
        return await OverControlSocketAsync(path, options.Has("json"), timeout).ConfigureAwait(false);
    }

    private static async Task<int> OverControlSocketAsync(string path, bool json, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        var started = Stopwatch.StartNew();
        using var client = await ControlClient.ConnectAsync(path, ControlProtocol.Upgrade, deadline.Token).ConfigureAwait(false);
        while (true)
        {
            (ControlEnvelope Envelope, string Line)? next;
            try
            {
                next = await client.ReadAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                throw new ToolException(ToolExitCodes.TimedOut, $"no outcome within {timeout.TotalSeconds:0.#} s; the upgrade may still finish: 'handoff status --control {path}' tells.");
            }

            if (next is not { } answer)
            {
                throw new ToolException(ToolExitCodes.TimedOut, $"the server closed the connection after {started.Elapsed.TotalSeconds:0.#} s without saying how the upgrade ended (did it crash? see its log); 'handoff status --control {path}' tells which generation serves.");
            }

            ControlClient.ThrowIfError(answer);
            switch (answer.Envelope.Type)
            {
                case ControlProtocol.UpgradingType:
                    if (!json)
                    {
                        Console.Error.WriteLine("handoff: upgrading; waiting for the new generation to report ready...");
                    }

                    break;
                case ControlProtocol.ResultType:
                    return Report(ControlClient.Read(answer.Line, ControlJson.Wire.ResultAnswer), answer.Line, json);
                default:
                    throw new ToolException(ToolExitCodes.CouldNotAsk, $"unexpected answer from the server: '{answer.Line}'");
            }
        }
    }

    private static int Report(ResultAnswer result, string line, bool json)
    {
        if (json)
        {
            Console.WriteLine(line);
        }
        else if (result.Outcome == ControlProtocol.Upgraded)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"upgraded: pid {result.OldPid} -> {result.NewPid}, generation {result.Generation}, ready after {result.TimeToReadyMs} ms"));
            if (result.Timeline is { } t)
            {
                Console.WriteLine(Timeline(t));
            }
        }
        else
        {
            Console.Error.WriteLine($"handoff: upgrade {result.Outcome}: {result.Reason}");
            string old = string.Create(CultureInfo.InvariantCulture, $"generation {result.OldGeneration} (pid {result.OldPid})");
            // Not serving: it was asked to stop while the upgrade ran, or it took the request
            // during a handover and passed it on to the generation that took over.
            Console.Error.WriteLine(result.OldServing ? $"handoff: the server is unchanged: {old} serves." : $"handoff: {old} no longer serves (superseded, or stopping); 'handoff status' tells what does.");
        }

        return result.Outcome switch
        {
            ControlProtocol.Upgraded => ToolExitCodes.Success,
            ControlProtocol.Refused => ToolExitCodes.UpgradeRefused,
            _ => ToolExitCodes.UpgradeFailed,
        };
    }

    // Handoff's own share first: the rest is the runtime's and the application's start, and a
    // window Handoff waits out.
    internal static string Timeline(TimelineAnswer t)
    {
        string starts = t.RuntimeMs is { } runtime && t.ApplicationMs is { } application
            ? string.Create(CultureInfo.InvariantCulture, $"runtime start {runtime:0.0} ms, application start {application:0.0} ms")
            : "the new build did not time its start";
        return string.Create(CultureInfo.InvariantCulture,
            $"timeline: Handoff {t.HandoffMs:0.0} ms, {starts}, rollback window {t.RollbackWindowMs:0} ms; stopped accepting {t.ReportReadMs:0.0} ms and committed {t.CommittedMs:0.0} ms after the request");
    }

    private static async Task<int> SignalAsync(Arguments options, TimeSpan timeout)
    {
        if (options.Has("json"))
        {
            throw new UsageException("--json needs the control socket: with a signal there is no answer to print");
        }

        string signalName = options.Value("signal") ?? "SIGUSR2";
        if (!UpgradeSignalNames.TryParse(signalName, out var signals, out string? signalError) || signals.Count != 1)
        {
            throw new UsageException($"--signal {signalError ?? "names one signal"}");
        }

        string? pidFile = options.Value("pid-file");
        int pid = pidFile is null ? options.Pid("pid") : PidFile.Read(pidFile)
            ?? throw new ToolException(ToolExitCodes.CouldNotAsk, $"the pid file {pidFile} does not exist or names no pid: is the server running, with Handoff:PidFile={pidFile}?");
        var old = GenerationProcess.Current(pid);
        if (old is null || !GenerationProcess.IsRunning(pid))
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"no process {pid}" + (pidFile is null ? "." : $" (named by {pidFile}): the server is not running."));
        }

        int signal = UpgradeSignalNames.ToNumber(signals[0]);
        if (ProcFs.CatchesSignal(pid, signal) == false)
        {
            // Its default action would end the process: not a Handoff server, or one that has
            // not installed its handlers yet.
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"pid {pid} does not handle {UpgradeSignalNames.Format(signals[0])} (not a Handoff server, or one still starting): the signal would kill it, so none was sent.");
        }

        if (Interop.Libc.Kill(pid, signal) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"cannot signal pid {pid}: {Marshal.GetPInvokeErrorMessage(errno)}" + (errno == 1 ? " (run as the server's user or root)." : "."));
        }

        Console.Error.WriteLine($"handoff: sent {UpgradeSignalNames.Format(signals[0])} to pid {pid}; waiting (a signal brings no answer: a failure shows only as a timeout, its reason only in the server's log)...");
        var started = Stopwatch.StartNew();
        while (started.Elapsed < timeout)
        {
            if (pidFile is not null && PidFile.Read(pidFile) is { } current && current != pid && GenerationProcess.IsRunning(current))
            {
                // The old generation names the new one as soon as it reported ready, and names
                // itself again if the new one dies within the rollback window (default 2 s).
                // Another new pid meanwhile is a further upgrade (one asked for while this one
                // ran, which waited for it): the newest is the outcome.
                long readyAt = started.ElapsedMilliseconds;
                await Task.Delay(RollbackWatch).ConfigureAwait(false);
                int? now = PidFile.Read(pidFile);
                if (now == current && GenerationProcess.IsRunning(current))
                {
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"upgraded: pid {pid} -> {current} (seen in {pidFile} after {readyAt} ms)"));
                    return ToolExitCodes.Success;
                }

                if (now is { } newer && newer != pid && GenerationProcess.IsRunning(newer))
                {
                    continue;
                }

                throw new ToolException(ToolExitCodes.UpgradeFailed, $"pid {current} took over and then went away; {pidFile} names pid {now} again (the server's log says why).");
            }

            if (pidFile is null && !old.Value.IsAlive())
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"upgraded: pid {pid} handed over and exited {started.ElapsedMilliseconds} ms after the signal (use --pid-file or --control to learn its successor's pid)"));
                return ToolExitCodes.Success;
            }

            if (pidFile is not null && !old.Value.IsAlive() && (PidFile.Read(pidFile) ?? pid) == pid)
            {
                throw new ToolException(ToolExitCodes.UpgradeFailed, $"pid {pid} exited and {pidFile} names no new server: the server stopped instead of upgrading (see its log).");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100)).ConfigureAwait(false);
        }

        throw new ToolException(ToolExitCodes.TimedOut, $"after {timeout.TotalSeconds:0.#} s pid {pid} still serves: the upgrade failed or has not finished; the server's log says which (a control socket would have said).");
    }
}
