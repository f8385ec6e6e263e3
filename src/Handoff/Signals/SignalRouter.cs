using System.Runtime.InteropServices;

namespace Handoff;

/// <summary>
/// Handoff's handlers for its signals, one set per process, installed at the earliest moment
/// (see <see cref="EarlyStart"/>) and routed to the <see cref="Upgrader"/> once it exists. Every
/// handler cancels the default action, which for SIGUSR1, SIGUSR2 and SIGHUP is to terminate
/// the process: a signal meant for another generation (a process-group kill) or sent while
/// upgrades by signal are off must never kill a server.
/// </summary>
internal static class SignalRouter
{
    private static readonly Lock Gate = new();
    private static readonly Dictionary<PosixSignal, PosixSignalRegistration> Registrations = [];
    private static readonly List<PosixSignal> Unrouted = [];
    private static Action<PosixSignal>? _target;

    /// <summary>Installs handlers for <paramref name="signals"/> that have none yet.</summary>
    public static void Handle(IEnumerable<PosixSignal> signals)
    {
        lock (Gate)
        {
            foreach (var signal in signals)
            {
                if (!Registrations.ContainsKey(signal))
                {
                    Registrations[signal] = PosixSignalRegistration.Create(signal, OnSignal);
                }
            }
        }
    }

    /// <summary>Removes the handlers for signals not in <paramref name="keep"/>: they get their
    /// default action back.</summary>
    public static void Release(IEnumerable<PosixSignal> keep)
    {
        lock (Gate)
        {
            foreach (var signal in Registrations.Keys.Except(keep).ToList())
            {
                Registrations[signal].Dispose();
                Registrations.Remove(signal);
            }
        }
    }

    /// <summary>Routes signals to <paramref name="target"/> from now on; returns the signals
    /// that arrived while nobody was attached.</summary>
    public static IReadOnlyList<PosixSignal> Attach(Action<PosixSignal> target)
    {
        lock (Gate)
        {
            _target = target;
            PosixSignal[] early = [.. Unrouted];
            Unrouted.Clear();
            return early;
        }
    }

    public static void Detach(Action<PosixSignal> target)
    {
        lock (Gate)
        {
            if (_target == target)
            {
                _target = null;
            }
        }
    }

    private static void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        Action<PosixSignal>? target;
        lock (Gate)
        {
            target = _target;
            if (target is null)
            {
                Unrouted.Add(context.Signal);
            }
        }

        target?.Invoke(context.Signal);
    }
}
