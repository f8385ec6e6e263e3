namespace Handoff;

/// <summary>
/// The control socket's wire protocol (docs/control.md): the client sends one request line,
/// <c>status</c> or <c>upgrade</c>; the server answers with JSON objects, one per line, and
/// closes the connection. Every object carries <c>protocol</c> (this version) and <c>type</c>.
/// </summary>
internal static class ControlProtocol
{
    public const int Version = 1;

    public const string Status = "status";
    public const string Upgrade = "upgrade";

    // Response types.
    public const string StatusType = "status";
    public const string UpgradingType = "upgrading";
    public const string ResultType = "result";
    public const string ErrorType = "error";

    // Outcomes of an upgrade, as the tool maps them to exit codes.
    public const string Upgraded = "upgraded";
    public const string Failed = "failed";
    public const string Refused = "refused";

    /// <summary>A request line longer than this is refused: the commands are single words.</summary>
    public const int MaxRequestBytes = 256;

    /// <summary>How long a client may take to send its request line.</summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(5);

    /// <summary>UTC, to the millisecond.</summary>
    public const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";

    public static string Outcome(UpgradeResult result) => result switch
    {
        { Succeeded: true } => Upgraded,
        { FailureKind: UpgradeFailureKind.Refused } => Refused,
        _ => Failed,
    };
}
