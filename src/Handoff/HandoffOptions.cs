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
    /// <remarks>Default: <c>SIGUSR2,SIGHUP</c>. An empty value turns signal-triggered upgrades
    /// off (<see cref="Upgrader.UpgradeAsync"/> still works). SIGTERM, SIGINT and SIGQUIT are
    /// refused: they mean shut down.</remarks>
    public string UpgradeSignals { get; set; } = "SIGUSR2,SIGHUP";

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
    /// is. Must be shorter than <see cref="DrainTimeout"/>.</remarks>
    public TimeSpan DrainIdleTimeout { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long a failed new generation gets between SIGTERM and SIGKILL.
    /// </summary>
    /// <remarks>Default: 5 seconds.</remarks>
    public TimeSpan TerminateTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// A file that always holds the pid of the generation that is accepting, or null for none.
    /// </summary>
    /// <remarks>Default: null. Written atomically (temporary file and rename) when a generation
    /// becomes ready; removed at final shutdown, only by the generation it names.</remarks>
    public string? PidFile { get; set; }

    /// <summary>
    /// Work the new generation must finish before it reports ready, e.g. filling caches or
    /// opening database connections; an exception fails the upgrade and the old generation
    /// keeps serving.
    /// </summary>
    /// <remarks>Default: null (ready as soon as the host has started). It runs after the
    /// host's <c>ApplicationStarted</c>, with the application's services, and counts against
    /// <see cref="UpgradeTimeout"/>.</remarks>
    public Func<IServiceProvider, CancellationToken, Task>? WarmUp { get; set; }

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

        return errors;
    }

    private static void RequirePositive(List<string> errors, string name, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{SectionName}:{name} must be a positive time span such as 00:00:30, not {value}.");
        }
    }
}
