namespace Handoff.Tool;

/// <summary><c>handoff run [options] -- command...</c>: see <see cref="Supervisor"/>.</summary>
internal static class RunCommand
{
    private static readonly ToolOption[] Options =
    [
        new("control", "PATH", "give the server this control socket (Handoff:ControlSocket)"),
        new("upgrade-signal", "NAME", "the signal the server upgrades on (default SIGUSR2)"),
        new("shadow-copy", null, "run each generation from its own copy of the application\ndirectory (the directory of App.dll in 'dotnet App.dll', or of\nthe executable), made at its start: files overwritten in place\nthere never touch a running generation (docs/deploying.md)"),
        new("shadow-copy-dir", "DIR", "where the copies go (default: the temporary directory, $TMPDIR\nor /tmp); implies --shadow-copy"),
    ];

    public static readonly string Usage = $"""
        handoff run [options] -- <command> [arguments...]

          Runs a Handoff server under a supervisor whose pid never changes: it starts the
          command as generation 1, follows each upgrade to the new main generation, reaps every
          exited process (a container's PID 1 must), passes SIGTERM, SIGINT and SIGQUIT to every
          generation, turns SIGUSR2 and SIGHUP into an upgrade, and exits with the last main
          generation's exit code once every generation has exited. Under systemd it is the
          service's main process and passes readiness on (Type=notify).

        {ToolOption.Describe(Options)}

          Exit codes: the last main generation's (128+N if signal N ended it); 127 when the
          command cannot be started; 78 when a server already answers on --control; 2 for a
          usage error.
        """;

    public static async Task<int> RunAsync(IReadOnlyList<string> args)
    {
        var options = Arguments.Parse(args, Options);
        if (options.Rest.Count == 0)
        {
            throw new UsageException("no command: write it after '--', e.g. handoff run -- dotnet app.dll");
        }

        string signalName = options.Value("upgrade-signal") ?? "SIGUSR2";
        if (!UpgradeSignalNames.TryParse(signalName, out var signals, out string? signalError) || signals.Count != 1)
        {
            throw new UsageException($"--upgrade-signal {signalError ?? "names one signal"}");
        }

        if (options.Value("control") is { } control && !Path.IsPathFullyQualified(control))
        {
            throw new UsageException($"--control '{control}' must be an absolute path");
        }

        if (options.Value("control") is { } path)
        {
            await RefuseIfServedAsync(path).ConfigureAwait(false);
        }

        using var supervisor = new Supervisor(new SupervisorOptions(options.Rest, options.Value("control"), signals[0], ShadowCopyParent(options)), new StderrLogger("handoff run"));
        return await supervisor.RunAsync().ConfigureAwait(false);
    }

    /// <summary>A server that answers on the control socket already (left serving, unsupervised,
    /// by a <c>handoff run</c> that was killed; or another service given the same path) would make
    /// generation 1 exit at start: say which and what to do, before starting anything.</summary>
    private static async Task RefuseIfServedAsync(string path)
    {
        if (Interop.Libc.FileType(path) != Interop.Libc.S_IFSOCK || ListenerRegistry.IsStaleUnixSocket(new System.Net.Sockets.UnixDomainSocketEndPoint(path)))
        {
            return;
        }

        string who = "a running server";
        try
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            using var client = await ControlClient.ConnectAsync(path, ControlProtocol.Status, deadline.Token).ConfigureAwait(false);
            if (await client.ReadAsync(deadline.Token).ConfigureAwait(false) is { Envelope.Type: ControlProtocol.StatusType } answer
                && ControlClient.Read(answer.Line, ControlJson.Wire.StatusAnswer) is { Pid: > 0 } status)
            {
                who = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"generation {status.Generation} (pid {status.Pid}) of a server");
            }
        }
        catch (Exception e) when (e is ToolException or OperationCanceledException or IOException)
        {
            // Who it is stays unknown; that it answers is enough.
        }

        throw new ToolException(ToolExitCodes.ControlSocketInUse, $"--control {path}: {who} already answers there; nothing was started. If an earlier 'handoff run' was killed, that server went on serving without it: stop it (kill -TERM the pid; 'handoff status --control {path}' shows it) and run this again, or keep it and upgrade it with 'handoff upgrade --control {path}'. Otherwise give this server its own control socket.");
    }

    private static string? ShadowCopyParent(Arguments options) =>
        options.Value("shadow-copy-dir") ?? (options.Has("shadow-copy") ? Path.GetTempPath() : null);
}
