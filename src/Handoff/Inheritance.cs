using System.Net;
using System.Net.Sockets;

namespace Handoff;

/// <summary>
/// The new generation's end of the handover: reads <see cref="HandoverEnvironment"/>, checks
/// every inherited descriptor, and takes ownership of them. A first generation (no variable)
/// inherits nothing.
/// </summary>
internal sealed class Inheritance
{
    private Inheritance(int generation, int parentPid, IReadOnlyList<Listener> listeners, ReadyPipe? readyPipe)
    {
        Generation = generation;
        ParentPid = parentPid;
        Listeners = listeners;
        ReadyPipe = readyPipe;
    }

    /// <summary>This process's generation number: 1 for a first start.</summary>
    public int Generation { get; }

    /// <summary>The pid of the generation that started this one, or 0 for a first start.</summary>
    public int ParentPid { get; }

    public IReadOnlyList<Listener> Listeners { get; }

    /// <summary>Where to report ready to the parent, or null for a first start.</summary>
    public ReadyPipe? ReadyPipe { get; }

    public static Inheritance None { get; } = new(1, 0, [], null);

    /// <summary>
    /// Takes over what the previous generation handed to this process, and removes the
    /// protocol variable from the environment so that no process this one starts sees it.
    /// </summary>
    /// <exception cref="HandoffProtocolException">The handover is malformed, forged or stale;
    /// the parent has been told why when its ready pipe was usable.</exception>
    public static Inheritance Load(string? value, int actualParentPid)
    {
        if (value is null)
        {
            return None;
        }

        Environment.SetEnvironmentVariable(HandoverEnvironment.VariableName, null);
        var handover = HandoverEnvironment.Parse(value);

        // First of all keep the descriptors out of any process this one starts, whatever else
        // turns out to be wrong with them (dotnet/aspnetcore#29189 is this leak in UseSystemd).
        foreach (int fd in handover.ListenFds.Append(handover.ReadyFd))
        {
            if (Interop.Libc.IsOpen(fd))
            {
                Interop.Libc.SetCloseOnExec(fd, true);
            }
        }

        ReadyPipe? readyPipe = IsPipe(handover.ReadyFd) ? new ReadyPipe(handover.ReadyFd) : null;
        try
        {
            if (handover.ParentPid != actualParentPid)
            {
                throw new HandoffProtocolException(
                    $"The environment variable {HandoverEnvironment.VariableName} names parent pid {handover.ParentPid}, but this process's parent is {actualParentPid}: the variable is stale or forged. Remove it from the environment to start a first generation.");
            }

            if (readyPipe is null)
            {
                throw new HandoffProtocolException(
                    $"The environment variable {HandoverEnvironment.VariableName} names fd {handover.ReadyFd} as the ready pipe, but fd {handover.ReadyFd} is not an open pipe.");
            }

            var listeners = handover.ListenFds.Select(fd => new Listener(fd, CheckListeningSocket(fd), inherited: true)).ToList();
            return new Inheritance(handover.Generation, handover.ParentPid, listeners, readyPipe);
        }
        catch (HandoffProtocolException e)
        {
            readyPipe?.ReportFailed(e.Message);
            throw;
        }
    }

    /// <summary>Checks that <paramref name="fd"/> is a listening TCP or Unix stream socket and
    /// returns its address.</summary>
    internal static EndPoint CheckListeningSocket(int fd)
    {
        string where = $"Inherited fd {fd} (named in {HandoverEnvironment.VariableName})";
        int error = Interop.Libc.GetSocketOption(fd, Interop.Libc.SO_TYPE, out int type);
        if (error != 0)
        {
            throw new HandoffProtocolException(error == Interop.Libc.ENOTSOCK
                ? $"{where} is not a socket."
                : $"{where} cannot be read as a socket (errno {error}); is it open?");
        }

        if (type != Interop.Libc.SOCK_STREAM)
        {
            throw new HandoffProtocolException($"{where} is not a stream socket (SO_TYPE {type}).");
        }

        error = Interop.Libc.GetSocketOption(fd, Interop.Libc.SO_ACCEPTCONN, out int listening);
        if (error != 0 || listening == 0)
        {
            throw new HandoffProtocolException($"{where} is a socket but not a listening one.");
        }

        using var probe = new Socket(new SafeSocketHandle(fd, ownsHandle: false));
        return probe.LocalEndPoint is { } endPoint && ListenerAddress.IsSupported(endPoint)
            ? endPoint
            : throw new HandoffProtocolException($"{where} is a {probe.AddressFamily} socket; only TCP and Unix domain sockets can be handed over.");
    }

    private static bool IsPipe(int fd)
    {
        try
        {
            return File.ResolveLinkTarget($"/proc/self/fd/{fd}", returnFinalTarget: false)?.Name.StartsWith("pipe:", StringComparison.Ordinal) == true;
        }
        catch (IOException)
        {
            return false;
        }
    }
}
