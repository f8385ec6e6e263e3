using System.Globalization;

namespace Handoff;

/// <summary>
/// What systemd told this process through its environment, read once at start-up
/// (<see cref="EarlyStart"/>) and then removed from the environment, so that no program this
/// process starts misreads it: a helper script must not notify for the service, and a child
/// must not take descriptors 3, 4, ... for activated sockets. New generations get
/// <c>NOTIFY_SOCKET</c> and <c>WATCHDOG_USEC</c> from the launcher, the sockets through
/// Handoff's own handover.
/// </summary>
internal sealed record SystemdEnvironment(string? NotifySocket, TimeSpan? WatchdogInterval, IReadOnlyList<(int Fd, string Name)> ActivatedFds, IReadOnlyList<string> Warnings)
{
    /// <summary>Not a systemd service: nothing to notify, no sockets.</summary>
    public static SystemdEnvironment None { get; } = new(null, null, [], []);

    /// <summary>Reads the variables, validates them and removes them from the native and the
    /// managed environment.</summary>
    public static SystemdEnvironment Capture()
    {
        var captured = Parse(Environment.GetEnvironmentVariable, Environment.ProcessId);
        foreach (string name in (string[])[SystemdConstants.NotifySocket, SystemdConstants.WatchdogUsec, SystemdConstants.WatchdogPid, SystemdConstants.ListenPid, SystemdConstants.ListenFds, SystemdConstants.ListenFdNames])
        {
            if (Environment.GetEnvironmentVariable(name) is not null)
            {
                Interop.Libc.SetEnvironmentVariable(name, null);
            }
        }

        return captured;
    }

    /// <summary>Interprets the variables as sd_notify(3) and sd_listen_fds(3) do: sockets and
    /// the watchdog count only when their pid variable names this process (or, for the
    /// watchdog, is absent).</summary>
    internal static SystemdEnvironment Parse(Func<string, string?> variable, int pid)
    {
        var warnings = new List<string>();
        string? notifySocket = variable(SystemdConstants.NotifySocket) is { Length: > 0 } socket ? socket : null;
        if (notifySocket is not null && !(notifySocket.StartsWith('/') || notifySocket.StartsWith('@')))
        {
            warnings.Add($"{SystemdConstants.NotifySocket}='{notifySocket}' is neither an absolute path nor an abstract '@name'; Handoff sends no notifications to systemd.");
            notifySocket = null;
        }
        else if (notifySocket is not null && System.Text.Encoding.UTF8.GetByteCount(notifySocket) >= Interop.Libc.UnixPathMax)
        {
            warnings.Add($"{SystemdConstants.NotifySocket}='{notifySocket}' is longer than a Unix socket address can be; Handoff sends no notifications to systemd.");
            notifySocket = null;
        }

        TimeSpan? watchdog = null;
        string? watchdogPid = variable(SystemdConstants.WatchdogPid);
        if (variable(SystemdConstants.WatchdogUsec) is { } usecText && (watchdogPid is null || watchdogPid == pid.ToString(CultureInfo.InvariantCulture)))
        {
            if (ulong.TryParse(usecText, NumberStyles.None, CultureInfo.InvariantCulture, out ulong usec) && usec > 0 && usec < (ulong)TimeSpan.MaxValue.Ticks / 10)
            {
                watchdog = TimeSpan.FromMicroseconds(usec);
            }
            else
            {
                warnings.Add($"{SystemdConstants.WatchdogUsec}='{usecText}' is not a positive number of microseconds; Handoff sends no watchdog keep-alives.");
            }
        }

        var activated = new List<(int, string)>();
        string? listenPid = variable(SystemdConstants.ListenPid);
        string? listenFds = variable(SystemdConstants.ListenFds);
        if (listenFds is not null && listenPid == pid.ToString(CultureInfo.InvariantCulture))
        {
            if (int.TryParse(listenFds, NumberStyles.None, CultureInfo.InvariantCulture, out int count) && count is > 0 and <= 512)
            {
                string[] names = (variable(SystemdConstants.ListenFdNames) ?? "").Split(':');
                for (int i = 0; i < count; i++)
                {
                    activated.Add((SystemdConstants.ListenFdsStart + i, names.Length == count ? names[i] : "unknown"));
                }
            }
            else if (listenFds != "0")
            {
                warnings.Add($"{SystemdConstants.ListenFds}='{listenFds}' is not a count of sockets (1 to 512); Handoff adopts no activated sockets.");
            }
        }
        else if (listenFds is not null && listenPid is not null)
        {
            warnings.Add($"{SystemdConstants.ListenFds} is set for pid {listenPid}, not for this process (pid {pid}); its sockets are not adopted.");
        }

        return new SystemdEnvironment(notifySocket, watchdog, activated, warnings);
    }

    /// <summary>What a new generation needs to talk to systemd itself: the socket, and the
    /// watchdog interval without a pid (its pid is not known before it is spawned, and without
    /// <c>WATCHDOG_PID</c> the interval applies to whoever reads it).</summary>
    public IEnumerable<string> ForNewGeneration()
    {
        if (NotifySocket is not null)
        {
            yield return $"{SystemdConstants.NotifySocket}={NotifySocket}";
        }

        if (WatchdogInterval is { } interval)
        {
            yield return string.Create(CultureInfo.InvariantCulture, $"{SystemdConstants.WatchdogUsec}={(long)interval.TotalMicroseconds}");
        }
    }
}
