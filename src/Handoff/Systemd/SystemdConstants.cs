namespace Handoff;

/// <summary>The names systemd's service manager protocol uses, with the man pages that define
/// them.</summary>
internal static class SystemdConstants
{
    // https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html (environment)

    /// <summary>The notification socket: an absolute path, or '@' and an abstract name.</summary>
    public const string NotifySocket = "NOTIFY_SOCKET";

    /// <summary>The watchdog interval in microseconds (<c>WatchdogSec=</c>).</summary>
    public const string WatchdogUsec = "WATCHDOG_USEC";

    /// <summary>The pid the watchdog variables are meant for.</summary>
    public const string WatchdogPid = "WATCHDOG_PID";

    // https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html

    /// <summary>The pid the activated sockets are meant for.</summary>
    public const string ListenPid = "LISTEN_PID";

    /// <summary>How many activated sockets start at descriptor 3.</summary>
    public const string ListenFds = "LISTEN_FDS";

    /// <summary>Their names (<c>FileDescriptorName=</c>), colon-separated.</summary>
    public const string ListenFdNames = "LISTEN_FDNAMES";

    /// <summary>The first activated descriptor (SD_LISTEN_FDS_START).</summary>
    public const int ListenFdsStart = 3;

    // https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html (well-known
    // assignments)

    /// <summary>Start-up finished, or a reload finished.</summary>
    public const string Ready = "READY=1";

    /// <summary>A reload begins; <c>MONOTONIC_USEC=</c> must accompany it for
    /// <c>Type=notify-reload</c> (systemd 253 and later).</summary>
    public const string Reloading = "RELOADING=1";

    /// <summary>The service begins its shutdown. From any process the unit accepts messages
    /// from, it stops the unit.</summary>
    public const string Stopping = "STOPPING=1";

    /// <summary>Keeps the watchdog from firing.</summary>
    public const string Watchdog = "WATCHDOG=1";

    /// <summary>Asks for a notification once everything sent before it was processed; one
    /// descriptor must accompany it, which systemd closes (systemd 246 and later).</summary>
    public const string Barrier = "BARRIER=1";

    /// <summary>The pid systemd treats as the service's main process from now on.</summary>
    public const string MainPid = "MAINPID=";

    /// <summary>A line a person reads in <c>systemctl status</c>.</summary>
    public const string Status = "STATUS=";

    /// <summary>The CLOCK_MONOTONIC time of a reload request, in microseconds.</summary>
    public const string MonotonicUsec = "MONOTONIC_USEC=";

    /// <summary>Handoff's own assignment (sd_notify(3) reserves the <c>X_</c> prefix for such
    /// names; systemd ignores them): the main generation names the new generation it has just
    /// started, so that <c>handoff run</c> knows it is a generation before it is handed the main
    /// pid, and does not stop it if its parent dies first.</summary>
    public const string Successor = "X_HANDOFF_SUCCESSOR=";
}
