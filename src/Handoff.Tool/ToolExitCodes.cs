namespace Handoff.Tool;

/// <summary>The exit codes of <c>handoff upgrade</c> and <c>handoff status</c> (documented in
/// docs/control.md), for deploy scripts and <c>ExecReload=</c>.</summary>
internal static class ToolExitCodes
{
    /// <summary>The upgrade succeeded (or the status was shown).</summary>
    public const int Success = 0;

    /// <summary>The upgrade failed: a new generation was started and did not take over (the
    /// build is broken: it will most likely fail again). The server is unchanged and serves.</summary>
    public const int UpgradeFailed = 1;

    /// <summary>The upgrade was refused before anything was started: the server cannot upgrade
    /// now (not ready yet, shutting down, too many generations draining). It is unchanged;
    /// asking again later may succeed.</summary>
    public const int UpgradeRefused = 4;

    /// <summary>The server could not be asked: no server, permission denied, or a usage error.</summary>
    public const int CouldNotAsk = 2;

    /// <summary>No outcome within the timeout (or the connection ended before it came); the
    /// upgrade may still finish: <c>handoff status</c> tells.</summary>
    public const int TimedOut = 3;

    /// <summary><c>handoff run</c>: a server already answers on <c>--control</c> (EX_CONFIG, the
    /// code the server itself exits with when it finds its control socket in use): most often
    /// one left serving by an earlier <c>handoff run</c> that was killed.</summary>
    public const int ControlSocketInUse = 78;

    /// <summary><c>handoff run</c>: the command could not be found or started (as a shell says).</summary>
    public const int CommandNotFound = 127;
}
