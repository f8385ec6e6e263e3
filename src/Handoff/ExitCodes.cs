namespace Handoff;

/// <summary>The exit codes with which Handoff ends a process that must not serve, from
/// sysexits.h. Documented in README.md.</summary>
internal static class ExitCodes
{
    /// <summary>EX_PROTOCOL: the handover from the previous generation is malformed, stale or
    /// forged; nothing inherited was touched.</summary>
    public const int HandoverRejected = 76;

    /// <summary>EX_CONFIG: a Handoff option is invalid; the message names it.</summary>
    public const int InvalidConfiguration = 78;
}
