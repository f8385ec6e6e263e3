namespace Handoff;

/// <summary>
/// Settings of Handoff. In ASP.NET Core they are bound from the configuration section
/// <c>Handoff</c> (e.g. <c>--Handoff:PidFile=/run/app.pid</c>) and can be changed in code with
/// <c>UseHandoff(options => ...)</c>.
/// </summary>
public sealed class HandoffOptions
{
    /// <summary>The configuration section the options are bound from.</summary>
    public const string SectionName = "Handoff";

    /// <summary>
    /// The signals that start an upgrade: names or numbers separated by commas or spaces, e.g.
    /// <c>SIGUSR2,SIGHUP</c>, <c>USR1</c> or <c>12</c>.
    /// </summary>
    /// <remarks>Default: <c>SIGUSR2</c>. An empty value turns signal-triggered upgrades off
    /// (<see cref="Upgrader.UpgradeAsync"/> still works); SIGUSR2 is then logged and ignored, never
    /// left to its default action, which would kill the server. SIGHUP is not an upgrade signal
    /// by default: a terminal that closes sends it, and a server started by hand must then end,
    /// not upgrade itself into a process nobody controls. SIGTERM, SIGINT and SIGQUIT are
    /// refused: they mean shut down.</remarks>
    public string UpgradeSignals { get; set; } = "SIGUSR2";

    /// <summary>
    /// How long the old generation waits for the new one to report ready before it gives up,
    /// stops the new one and keeps serving.
    /// </summary>
    /// <remarks>Default: 30 seconds. It covers the new generation's whole start: runtime
    /// start-up, host start and the warm-up hook.</remarks>
    public TimeSpan UpgradeTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The longest a generation that stopped accepting (after an upgrade, or on SIGTERM) waits
    /// for its in-flight requests; what is still running then is aborted.
    /// </summary>
    /// <remarks>Default: 30 seconds. The generation exits as soon as its last connection is
    /// done, so this bounds only slow requests. The host's <c>ShutdownTimeout</c> is raised to
    /// cover it.</remarks>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// While draining, how long a keep-alive connection must have been idle before it is
    /// closed. Busy connections are not closed while idle: their next request is answered with
    /// <c>Connection: close</c>.
    /// </summary>
    /// <remarks>Default: 1 second. Closing an idle HTTP/1.1 connection races with a request the
    /// client may be sending on it; the longer a connection has been idle, the less likely that
    /// is. A connection whose client paused between its requests before waits longer: twice the
    /// longest such pause (at most half of <see cref="DrainTimeout"/>), so that its next request
    /// gets <c>Connection: close</c> rather than a closed connection. Must be shorter than
    /// <see cref="DrainTimeout"/>.</remarks>
    public TimeSpan DrainIdleTimeout { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// On a final shutdown (SIGTERM, <see cref="Upgrader.StopAsync"/>), how long the generation
    /// goes on accepting and serving before it stops accepting and drains: the time a load
    /// balancer or Kubernetes needs to stop sending it new connections once its health check
    /// reports it unhealthy, which it does at once.
    /// </summary>
    /// <remarks>Default: zero (stop accepting at once, as before). In Kubernetes, a few seconds
    /// (docs/kubernetes.md); <c>terminationGracePeriodSeconds</c> must then cover this delay,
    /// <see cref="DrainTimeout"/> and a margin. Upgrades do not wait for it (the next generation
    /// takes the same sockets), and a second SIGTERM or SIGINT during the delay ends it. The
    /// host's <c>ShutdownTimeout</c> is raised to cover it.</remarks>
    public TimeSpan ShutdownDelay { get; set; }

    /// <summary>
    /// How long a failed new generation gets between SIGTERM and SIGKILL.
    /// </summary>
    /// <remarks>Default: 5 seconds.</remarks>
    public TimeSpan TerminateTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// After the new generation reported ready, how long the old one keeps its listening
    /// sockets (without accepting on them) so that it can resume serving if the new one dies.
    /// </summary>
    /// <remarks>Default: 2 seconds; zero turns it off. If the new generation exits within this
    /// window, the old one accepts again, rewrites the pid file and reports the upgrade as
    /// failed. <see cref="Upgrader.UpgradeAsync"/> returns when the window has passed. The old
    /// generation's drain runs meanwhile; it exits no earlier than the window's end.</remarks>
    public TimeSpan RollbackWindow { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// The directory a new generation starts in.
    /// </summary>
    /// <remarks>Default: null, meaning the directory the first generation was started in, as
    /// the user named it (<c>$PWD</c> when it leads to the current directory, so a
    /// <c>current</c> symlink is followed anew at each upgrade). systemd does not set
    /// <c>$PWD</c>: with <c>WorkingDirectory=/srv/app/current</c> set this option to the same
    /// path.</remarks>
    public string? WorkingDirectory { get; set; }

    /// <summary>
    /// How many older generations may still be draining when an upgrade starts.
    /// </summary>
    /// <remarks>Default: 4. An upgrade that would exceed it is refused (the server is
    /// unchanged) and says which pids still drain, so rapid deploys with long requests cannot
    /// pile up processes without bound. Zero removes the bound.</remarks>
    public int MaxDrainingGenerations { get; set; } = 4;

    /// <summary>
    /// Whether idle HTTP/1.1 connections move to the new generation at an upgrade instead of
    /// being closed (see docs/protocol.md, "Connections that move").
    /// </summary>
    /// <remarks>Default: true. Connections that cannot move (TLS, HTTP/2, WebSockets, a new
    /// generation that does not adopt them) are drained as before; false drains every
    /// connection, closing each idle one.</remarks>
    public bool MoveConnections { get; set; } = true;

    /// <summary>
    /// A file that always holds the pid of the generation that is accepting, or null for none.
    /// </summary>
    /// <remarks>Default: null. Written atomically (temporary file and rename) when a generation
    /// becomes ready; removed at final shutdown, only by the generation it names.</remarks>
    public string? PidFile { get; set; }

    /// <summary>
    /// The Unix socket the <c>handoff</c> tool talks to (<c>handoff upgrade</c>,
    /// <c>handoff status</c>): an absolute path, or <c>none</c> for no control socket.
    /// </summary>
    /// <remarks>Default: null, meaning <c>$RUNTIME_DIRECTORY/handoff.sock</c> when systemd gives
    /// the service a runtime directory (<c>RuntimeDirectory=</c>), and no control socket
    /// otherwise: there is no other directory that is certain to belong to this service alone,
    /// and a path shared by two services, or writable by another user, would let one answer for
    /// the other. The socket is created with mode 0600 and served by the generation that
    /// accepts connections; each new generation takes over the same socket. Only the server's
    /// own user and root may use it (checked with <c>SO_PEERCRED</c>). See docs/control.md.</remarks>
    public string? ControlSocket { get; set; }

    /// <summary>The value of <see cref="ControlSocket"/> that turns the control socket off.</summary>
    internal const string NoControlSocket = "none";

    /// <summary>The control socket's path after defaults (see <see cref="ControlSocket"/>), or
    /// null for none.</summary>
    internal string? ResolveControlSocket(string? runtimeDirectory)
    {
        if (ControlSocket is { } configured)
        {
            return configured == NoControlSocket ? null : configured;
        }

        // systemd separates several RuntimeDirectory= entries with colons; the first is the
        // service's own.
        string? first = runtimeDirectory?.Split(':')[0];
        return first is { Length: > 0 } && Path.IsPathFullyQualified(first) ? Path.Join(first, "handoff.sock") : null;
    }

    /// <summary>
    /// Checks every setting and returns a message naming each option that is wrong and what to
    /// do, or an empty list when all are valid.
    /// </summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        RequirePositive(errors, nameof(UpgradeTimeout), UpgradeTimeout);
        RequirePositive(errors, nameof(DrainTimeout), DrainTimeout);
        RequirePositive(errors, nameof(DrainIdleTimeout), DrainIdleTimeout);
        RequirePositive(errors, nameof(TerminateTimeout), TerminateTimeout);
        if (ShutdownDelay < TimeSpan.Zero)
        {
            errors.Add($"{SectionName}:{nameof(ShutdownDelay)} must be zero (off) or a positive duration such as 5s, not {ShutdownDelay}.");
        }

        if (RollbackWindow < TimeSpan.Zero)
        {
            errors.Add($"{SectionName}:{nameof(RollbackWindow)} must be zero (off) or a positive duration such as 2s, not {RollbackWindow}.");
        }

        if (MaxDrainingGenerations < 0)
        {
            errors.Add($"{SectionName}:{nameof(MaxDrainingGenerations)} must be zero (no bound) or more, not {MaxDrainingGenerations}.");
        }

        if (WorkingDirectory is not null && !Path.IsPathFullyQualified(WorkingDirectory))
        {
            errors.Add($"{SectionName}:{nameof(WorkingDirectory)} '{WorkingDirectory}' must be an absolute path.");
        }

        foreach (var (name, value) in new[] { (nameof(UpgradeTimeout), UpgradeTimeout), (nameof(DrainTimeout), DrainTimeout), (nameof(DrainIdleTimeout), DrainIdleTimeout), (nameof(TerminateTimeout), TerminateTimeout), (nameof(RollbackWindow), RollbackWindow), (nameof(ShutdownDelay), ShutdownDelay) })
        {
            if (value > MaxDuration)
            {
                errors.Add($"{SectionName}:{name} is {value}, more than {MaxDuration.TotalHours:0} hours; a bare number such as '30' means days to TimeSpan: write 30s or 00:00:30.");
            }
        }
        if (DrainIdleTimeout > TimeSpan.Zero && DrainIdleTimeout >= DrainTimeout)
        {
            errors.Add($"{SectionName}:{nameof(DrainIdleTimeout)} ({DrainIdleTimeout}) must be shorter than {SectionName}:{nameof(DrainTimeout)} ({DrainTimeout}).");
        }

        if (!UpgradeSignalNames.TryParse(UpgradeSignals, out _, out string? signalError))
        {
            errors.Add($"{SectionName}:{nameof(UpgradeSignals)} {signalError}");
        }

        if (PidFile is not null && (PidFile.Length == 0 || PidFile.EndsWith('/')))
        {
            errors.Add($"{SectionName}:{nameof(PidFile)} '{PidFile}' is not a file path; give a path such as /run/myapp/app.pid, or leave it unset.");
        }

        if (ControlSocket is { } control && control != NoControlSocket)
        {
            if (!Path.IsPathFullyQualified(control) || control.EndsWith('/'))
            {
                errors.Add($"{SectionName}:{nameof(ControlSocket)} '{control}' must be the absolute path of a socket file, such as /run/myapp/handoff.sock, or '{NoControlSocket}'.");
            }
            else if (System.Text.Encoding.UTF8.GetByteCount(control) >= Interop.Libc.UnixPathMax)
            {
                errors.Add($"{SectionName}:{nameof(ControlSocket)} '{control}' is longer than a Unix socket path can be ({Interop.Libc.UnixPathMax - 1} bytes); choose a shorter path.");
            }
        }

        return errors;
    }

    /// <summary>The longest duration any option accepts; longer is a mistake (a bare "30"
    /// parsed as days).</summary>
    internal static readonly TimeSpan MaxDuration = TimeSpan.FromHours(24);

    private static void RequirePositive(List<string> errors, string name, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{SectionName}:{name} must be a positive duration such as 30s or 00:00:30, not {value}.");
        }
    }
}
