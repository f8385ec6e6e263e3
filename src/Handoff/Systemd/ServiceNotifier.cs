using System.Text;
using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>
/// Handoff's own sd_notify(3): datagrams to <c>NOTIFY_SOCKET</c>, the <c>BARRIER=1</c> wait, and
/// the watchdog keep-alive. Outside systemd (no socket) every call returns at once and nothing
/// is allocated. Which generation says what is decided by <see cref="Upgrader"/>; see
/// docs/systemd.md.
/// </summary>
internal sealed partial class ServiceNotifier : IDisposable
{
    private readonly string? _socketPath;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private int _fd = -1;
    private int _lastError;
    private volatile bool _gone;

    public ServiceNotifier(string? socketPath, TimeSpan? watchdogInterval, ILogger logger)
    {
        _socketPath = socketPath;
        WatchdogInterval = socketPath is null ? null : watchdogInterval;
        _logger = logger;
    }

    /// <summary>True when this process runs as a systemd service with a notification socket,
    /// until nobody receives there any more (<see cref="IsGone"/>).</summary>
    public bool IsEnabled => _socketPath is not null && !_gone;

    /// <summary>True once a send found nobody at the socket (ECONNREFUSED, ENOENT): the service
    /// manager is gone (a <c>handoff run</c> killed with SIGKILL; systemd keeps its socket across
    /// re-executions). From then on this process is unsupervised: nothing is sent, every call
    /// returns at once, and new generations are not told of the socket.</summary>
    public bool IsGone => _gone;

    /// <summary>systemd's watchdog interval (<c>WatchdogSec=</c>), or null when it asks for no
    /// keep-alives.</summary>
    public TimeSpan? WatchdogInterval { get; }

    /// <summary>Sends one datagram with the given assignments, one per line. systemd applies
    /// them together, <c>MAINPID=</c> before <c>READY=1</c>. A failure is logged (once per kind
    /// of error) and returns false; true when sent (or not a service).</summary>
    public bool Notify(params string[] assignments) =>
        !IsEnabled || Send(string.Join('\n', assignments), passFd: -1);

    /// <summary>
    /// Sends <c>BARRIER=1</c> with the write end of a new pipe and waits until systemd closes
    /// it, which it does after processing every message sent before: the sd_notify_barrier(3)
    /// protocol. Returns true when confirmed, false on timeout or error (logged).
    /// </summary>
    public unsafe bool Barrier(TimeSpan timeout)
    {
        if (!IsEnabled)
        {
            return true;
        }

        var (read, write) = Interop.Libc.CreatePipe();
        try
        {
            bool sent = Send(SystemdConstants.Barrier, write);
            Interop.Libc.Close(write);
            write = -1;
            if (!sent)
            {
                return false;
            }

            long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
            while (true)
            {
                var poll = new Interop.Libc.PollFd { Fd = read, Events = 0 };
                int remaining = (int)Math.Max(0, deadline - Environment.TickCount64);
                int ready = Interop.Libc.Poll(&poll, 1, remaining);
                if (ready > 0 && (poll.Revents & Interop.Libc.POLLHUP) != 0)
                {
                    return true;
                }

                if (ready == 0 || remaining == 0)
                {
                    Log.BarrierTimedOut(_logger, _socketPath!, timeout.TotalSeconds);
                    return false;
                }
            }
        }
        finally
        {
            if (write >= 0)
            {
                Interop.Libc.Close(write);
            }

            Interop.Libc.Close(read);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_gate)
        {
            if (_fd >= 0)
            {
                Interop.Libc.Close(_fd);
                _fd = -1;
            }
        }
    }

    private bool Send(string message, int passFd)
    {
        int error;
        lock (_gate)
        {
            try
            {
                if (_fd < 0)
                {
                    _fd = Interop.Libc.UnixDatagramSocket();
                }
            }
            catch (IOException e)
            {
                Log.SendFailed(_logger, _socketPath!, e.Message);
                return false;
            }

            error = Interop.Libc.SendDatagram(_fd, _socketPath!, Encoding.UTF8.GetBytes(message), passFd);
            if (error == 0)
            {
                _lastError = 0;
                return true;
            }

            if (error is Interop.Libc.ECONNREFUSED or Interop.Libc.ENOENT)
            {
                _gone = true;
                Log.ManagerGone(_logger, _socketPath!, System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(error), Environment.ProcessId);
                return false;
            }

            if (error == _lastError)
            {
                return false;
            }

            _lastError = error;
        }

        Log.SendFailed(_logger, _socketPath!, $"{System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(error)} (errno {error}); message '{message.ReplaceLineEndings(" ")}'");
        return false;
    }

    private static partial class Log
    {
        [LoggerMessage(60, LogLevel.Warning, "Could not notify systemd through {Socket}: {Error}. Serving goes on.", EventName = "NotifyFailed")]
        public static partial void SendFailed(ILogger logger, string socket, string error);

        [LoggerMessage(82, LogLevel.Warning, "Nobody receives at {Socket} any more ({Error}): the service manager (handoff run, or systemd) is gone. This process serves on unsupervised: it notifies no more, and its upgrades (the upgrade signal to pid {Pid}, or the control socket) start new generations that serve unsupervised too. To supervise the service again, stop it (SIGTERM to the serving generation) and start it under its manager.", EventName = "ServiceManagerGone")]
        public static partial void ManagerGone(ILogger logger, string socket, string error, int pid);

        [LoggerMessage(61, LogLevel.Warning, "systemd did not confirm within {Seconds} s that it processed the notifications sent to {Socket} (BARRIER=1); going on.", EventName = "BarrierTimedOut")]
        public static partial void BarrierTimedOut(ILogger logger, string socket, double seconds);
    }
}
