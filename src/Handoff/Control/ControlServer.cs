using System.Buffers;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.Extensions.Logging;

namespace Handoff;

/// <summary>
/// Serves the control socket (<see cref="HandoffOptions.ControlSocket"/>) for the
/// <c>handoff</c> tool: <c>status</c> and <c>upgrade</c> (<see cref="ControlProtocol"/>). It
/// accepts through the listener's gate, so only the generation that accepts connections
/// answers; a generation handing over stops accepting here as on every other listener, and the
/// new one takes the queue.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "Its CancellationTokenSource has no timer and holds nothing but memory; it lives as long as the generation.")]
internal sealed partial class ControlServer
{
    // How long a stopping generation lets an answer in progress finish, so that the client of
    // the upgrade that superseded it reads the outcome before the process exits.
    private static readonly TimeSpan AnswerGrace = TimeSpan.FromSeconds(2);

    private readonly IControlled _upgrader;
    private readonly Listener _listener;
    private readonly ILogger _logger;
    private readonly uint _uid = Interop.Libc.GetEffectiveUserId();
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly HashSet<Task> _answers = [];
    private Task? _loop;

    public ControlServer(IControlled upgrader, Listener listener, ILogger logger)
    {
        _upgrader = upgrader;
        _listener = listener;
        _logger = logger;
    }

    public void Start() => _loop = Task.Run(AcceptLoopAsync);

    /// <summary>Checks before start-up that the control socket can be created at
    /// <paramref name="path"/>: its directory exists and, in a first generation, no running
    /// server answers there. Returns what is wrong and what to do, or null.</summary>
    public static string? CheckPath(string? path, bool inherited)
    {
        if (path is null)
        {
            return null;
        }

        string key = $"{HandoffOptions.SectionName}:{nameof(HandoffOptions.ControlSocket)}";
        string? directory = Path.GetDirectoryName(path);
        if (directory is null || !Directory.Exists(directory))
        {
            return $"{key} '{path}': the directory '{directory}' does not exist; create it (writable by this user; under systemd, RuntimeDirectory= does), or set {key} to another path or '{HandoffOptions.NoControlSocket}'.";
        }

        if (!inherited && Interop.Libc.FileType(path, followLinks: true) is { } type && type != Interop.Libc.S_IFSOCK)
        {
            // Binding there fails (EADDRINUSE), and it is somebody's data: never deleted.
            return $"{key} '{path}' is {(type == Interop.Libc.S_IFDIR ? "a directory" : "a file")}, not a socket: remove it, or set {key} to another path.";
        }

        if (!inherited && Interop.Libc.FileType(path) == Interop.Libc.S_IFSOCK && !ListenerRegistry.IsStaleUnixSocket(new UnixDomainSocketEndPoint(path)))
        {
            return $"{key} '{path}' is in use: a running server answers there ('handoff status --control {path}' says which). Give each server its own control socket.";
        }

        return null;
    }

    /// <summary>Stops accepting and waits (briefly) for the answers in progress.</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        Task[] answers;
        lock (_lock)
        {
            answers = [.. _answers];
        }

        try
        {
            await Task.WhenAll(answers.Append(_loop ?? Task.CompletedTask)).WaitAsync(AnswerGrace).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // A client that does not read its answer does not hold up the exit.
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket? connection;
            try
            {
                connection = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
#pragma warning disable CA1031 // An accept error must not end the control socket for good.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log.AcceptFailed(_logger, e.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(100), CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            if (connection is null)
            {
                return; // The listener was closed.
            }

            var answer = AnswerGuardedAsync(connection);
            lock (_lock)
            {
                _answers.Add(answer);
            }

            _ = answer.ContinueWith(
                done =>
                {
                    lock (_lock)
                    {
                        _answers.Remove(done);
                    }
                },
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
        }
    }

    private async Task AnswerGuardedAsync(Socket connection)
    {
        using (connection)
        {
            try
            {
                await AnswerAsync(connection).ConfigureAwait(false);
                await CloseGracefullyAsync(connection).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // One client's failure (it hung up, say) concerns that client alone.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log.AnswerFailed(_logger, e.GetType().Name, e.Message);
            }
        }
    }

    private async Task AnswerAsync(Socket connection)
    {
        var (peerPid, peerUid) = PeerCredentials(connection);

        // Off the accept loop, which called this: the next client is accepted meanwhile even if
        // this one's request has arrived already and its answer reads /proc.
        await Task.Yield();
        if (peerUid != _uid && peerUid != 0)
        {
            Log.Refused(_logger, peerPid, peerUid, _uid);
            await SendErrorAsync(connection, $"permission denied: uid {peerUid} may not use this control socket; only uid {_uid} (the server's) and root may").ConfigureAwait(false);
            return;
        }

        string? request;
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token))
        {
            timeout.CancelAfter(ControlProtocol.RequestTimeout);
            request = await ReadRequestAsync(connection, timeout.Token).ConfigureAwait(false);
        }

        Log.Request(_logger, request ?? "(none)", peerPid, peerUid);
        switch (request)
        {
            case ClosedWithoutRequest:
                // A probe whether anybody listens here (a new generation checking the path it
                // inherited): nothing to answer.
                break;
            case TooLong:
                await DiscardRestOfLineAsync(connection).ConfigureAwait(false);
                await SendErrorAsync(connection, $"the request is longer than {ControlProtocol.MaxRequestBytes} bytes; send 'status' or 'upgrade' and a newline").ConfigureAwait(false);
                break;
            case ControlProtocol.Status:
                var status = _upgrader.GetStatus();
                await SendAsync(connection, Status(status), ControlJson.Wire.StatusAnswer).ConfigureAwait(false);
                break;
            case ControlProtocol.Upgrade:
                await UpgradeAsync(connection, peerPid).ConfigureAwait(false);
                break;
            case null:
                await SendErrorAsync(connection, $"no request line within {ControlProtocol.RequestTimeout.TotalSeconds:0} s; send 'status' or 'upgrade' and a newline").ConfigureAwait(false);
                break;
            default:
                await SendErrorAsync(connection, $"unknown request '{request}'; the requests are '{ControlProtocol.Status}' and '{ControlProtocol.Upgrade}'").ConfigureAwait(false);
                break;
        }
    }

    private async Task UpgradeAsync(Socket connection, int peerPid)
    {
        int pid = Environment.ProcessId;
        int generation = _upgrader.Generation;
        Log.UpgradeRequested(_logger, pid, generation, peerPid);
        var upgrade = _upgrader.UpgradeAsync();
        if (!upgrade.IsCompleted)
        {
            // Tells the client that the upgrade runs; the outcome follows when it is known. A
            // client that hangs up meanwhile does not stop the upgrade.
            try
            {
                await SendAsync(connection, new UpgradingAnswer(), ControlJson.Wire.UpgradingAnswer).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                // Gone; the upgrade goes on and is logged.
            }
        }

        var result = await upgrade.ConfigureAwait(false);
        bool serving = _upgrader.State is GenerationState.Ready or GenerationState.Upgrading;
        await SendAsync(connection, Result(result, pid, generation, serving), ControlJson.Wire.ResultAnswer).ConfigureAwait(false);
    }

    private static ResultAnswer Result(UpgradeResult result, int pid, int generation, bool oldServing) => new(
        ControlProtocol.Outcome(result),
        pid,
        generation,
        result.NewPid,
        result.Generation,
        (long)Math.Round(result.TimeToReady.TotalMilliseconds),
        oldServing,
        result.Error,
        result.Error is null ? null : result.Reason.Tag(),
        result.Timeline is { } timeline ? TimelineAnswer.From(timeline) : null);

    private static StatusAnswer Status(GenerationStatus status) => new(
        status.Pid,
        status.Generation,
        StateName(status.State),
        Time(status.StartedAt),
        status.ParentPid,
        [.. status.Listeners.Select(l => new ListenerAnswer(ListenerAddress.Format(l.EndPoint), l.IsInherited, l.IsActivated))],
        status.ControlSocket,
        status.OpenConnections,
        [.. status.Draining.Select(d => new DrainingAnswer(d.Pid, d.StartedAt is { } started ? Time(started) : null, d.OpenConnections))],
        status.LastUpgrade is { } last ? new LastUpgradeAnswer(last.Outcome, Time(last.At), last.Detail) : null,
        status.MovedHere is { } moved
            ? new MovedHereAnswer(moved.Adopted, moved.Closed, moved.PassedOn, moved.Ended, moved.ByKind?.ToDictionary(k => k.Key, k => new MovedKindAnswer(k.Value.Adopted, k.Value.Closed, k.Value.PassedOn)))
            : null);

    private static string Time(DateTimeOffset at) => at.UtcDateTime.ToString(ControlProtocol.TimeFormat, CultureInfo.InvariantCulture);

    internal static string StateName(GenerationState state) => state switch
    {
        GenerationState.Starting => "starting",
        GenerationState.Ready => "serving",
        GenerationState.Upgrading => "upgrading",
        GenerationState.HandingOver => "handing-over",
        GenerationState.Superseded => "superseded",
        GenerationState.Stopping => "stopping",
        _ => "stopped",
    };

    /// <summary>One answer, as one line of JSON.</summary>
    private static async Task SendAsync<T>(Socket connection, T answer, JsonTypeInfo<T> type)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            JsonSerializer.Serialize(writer, answer, type);
        }

        buffer.Write("\n"u8);
        await connection.SendAsync(buffer.WrittenMemory, SocketFlags.None, CancellationToken.None).ConfigureAwait(false);
    }

    private static Task SendErrorAsync(Socket connection, string error) => SendAsync(connection, new ErrorAnswer(error), ControlJson.Wire.ErrorAnswer);

    // What ReadRequestAsync returns besides a request (never a request: those are single words).
    private const string ClosedWithoutRequest = " closed";
    private const string TooLong = " too long";

    /// <summary>Reads up to a newline (or the end of the stream); null at the timeout,
    /// <see cref="ClosedWithoutRequest"/> or <see cref="TooLong"/>.</summary>
    private static async Task<string?> ReadRequestAsync(Socket connection, CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[ControlProtocol.MaxRequestBytes];
        int length = 0;
        try
        {
            while (length < buffer.Length)
            {
                int read = await connection.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    return length == 0 ? ClosedWithoutRequest : Encoding.UTF8.GetString(buffer, 0, length).Trim();
                }

                int newline = Array.IndexOf(buffer, (byte)'\n', length, read);
                length += read;
                if (newline >= 0)
                {
                    return Encoding.UTF8.GetString(buffer, 0, newline).Trim();
                }
            }
        }
        catch (OperationCanceledException)
        {
            return null;
        }

        return TooLong;
    }

    /// <summary>Reads and drops the rest of an overlong request line, up to its newline or the
    /// client's FIN, bounded in bytes and by the request timeout: a client still writing a
    /// long line (64 KB, 1 MiB) would otherwise meet a reset or EPIPE instead of the answer
    /// that says what is wrong.</summary>
    private static async Task DiscardRestOfLineAsync(Socket connection)
    {
        const int Limit = 16 * 1024 * 1024;
        using var timeout = new CancellationTokenSource(ControlProtocol.RequestTimeout);
        byte[] discard = new byte[64 * 1024];
        try
        {
            for (int total = 0; total < Limit;)
            {
                int read = await connection.ReceiveAsync(discard, SocketFlags.None, timeout.Token).ConfigureAwait(false);
                if (read == 0 || Array.IndexOf(discard, (byte)'\n', 0, read) >= 0)
                {
                    return;
                }

                total += read;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            // Still writing after all that, or gone: answer (or fail to) now.
        }
    }

    /// <summary>Ends the answer with a FIN and reads what the client still sends (briefly), so
    /// that unread request bytes do not turn the close into a reset that could destroy the
    /// answer before the client has read it.</summary>
    private static async Task CloseGracefullyAsync(Socket connection)
    {
        connection.Shutdown(SocketShutdown.Send);
        using var linger = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        byte[] discard = new byte[1024];
        try
        {
            for (int total = 0; total < 64 * 1024;)
            {
                int read = await connection.ReceiveAsync(discard, SocketFlags.None, linger.Token).ConfigureAwait(false);
                if (read == 0)
                {
                    return;
                }

                total += read;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            // The client lingers or is gone: close now.
        }
    }

    /// <summary>The connecting process's pid and uid (SO_PEERCRED: taken at connect(2), so they
    /// cannot be changed by passing the descriptor on).</summary>
    private static (int Pid, uint Uid) PeerCredentials(Socket connection)
    {
        Span<byte> credentials = stackalloc byte[12]; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        int length = connection.GetRawSocketOption(Interop.Libc.SOL_SOCKET, Interop.Libc.SO_PEERCRED, credentials);
        return length >= 8
            ? (BitConverter.ToInt32(credentials), BitConverter.ToUInt32(credentials[4..]))
            : (0, uint.MaxValue);
    }

    private static partial class Log
    {
        [LoggerMessage(70, LogLevel.Warning, "Refused a control connection from pid {PeerPid} (uid {PeerUid}): only uid {Uid} (this server's) and root may use the control socket.", EventName = "ControlRefused")]
        public static partial void Refused(ILogger logger, int peerPid, uint peerUid, uint uid);

        [LoggerMessage(71, LogLevel.Debug, "Control request '{Request}' from pid {PeerPid} (uid {PeerUid}).", EventName = "ControlRequest")]
        public static partial void Request(ILogger logger, string request, int peerPid, uint peerUid);

        [LoggerMessage(72, LogLevel.Information, "Generation {Generation} (pid {Pid}): upgrade requested over the control socket by pid {PeerPid}.", EventName = "ControlUpgradeRequested")]
        public static partial void UpgradeRequested(ILogger logger, int pid, int generation, int peerPid);

        [LoggerMessage(73, LogLevel.Warning, "A control client could not be answered: {Error}: {Message}", EventName = "ControlAnswerFailed")]
        public static partial void AnswerFailed(ILogger logger, string error, string message);

        [LoggerMessage(74, LogLevel.Warning, "Accepting on the control socket failed: {Error}; trying again.", EventName = "ControlAcceptFailed")]
        public static partial void AcceptFailed(ILogger logger, string error);
    }
}

/// <summary>What the control server needs of the generation it answers for (the
/// <see cref="Upgrader"/>), and no more.</summary>
internal interface IControlled
{
    int Generation { get; }

    GenerationState State { get; }

    GenerationStatus GetStatus();

    Task<UpgradeResult> UpgradeAsync();
}
