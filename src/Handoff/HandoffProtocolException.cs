namespace Handoff;

/// <summary>
/// Thrown at start-up when the handover from a previous generation is malformed, forged or
/// stale: the environment variable does not parse, names the wrong parent, or an inherited
/// descriptor is not what it should be. The process must not serve; it exits non-zero and the
/// previous generation keeps serving.
/// </summary>
internal sealed class HandoffProtocolException : Exception
{
    /// <summary>Creates the exception with a message naming what is wrong.</summary>
    public HandoffProtocolException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the error that caused it.</summary>
    public HandoffProtocolException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with a default message.</summary>
    public HandoffProtocolException()
        : base("The handover from the previous generation is invalid.")
    {
    }
}
