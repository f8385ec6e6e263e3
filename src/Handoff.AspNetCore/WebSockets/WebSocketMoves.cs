using System.Buffers.Binary;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Handoff.AspNetCore;

/// <summary>
/// The WebSocket endpoints mapped with <c>MapHandoffWebSocket</c>, and moving their connections:
/// the old generation's half (<see cref="MoveAsync"/>: hold the WebSocket between two messages,
/// save the session's state, send the connection) and the new one's (<see cref="Resume"/>:
/// rebuild the WebSocket, run the session with the state). See docs/protocol.md,
/// "WebSockets that move".
/// </summary>
internal sealed partial class WebSocketMoves
{
    // How long a WebSocket may take to reach a point where no message is half received or half
    // sent and the application waits for the next one; a message of a few megabytes on a slow
    // link takes longer, and is closed with 1012 instead.
    internal static readonly TimeSpan BoundaryLimit = TimeSpan.FromSeconds(5);

    // How long the application's SaveState may take: it runs while the WebSocket is held.
    internal static readonly TimeSpan SaveLimit = TimeSpan.FromSeconds(1);

    // How long the socket's reader may take to reach the end of file after the detach.
    private static readonly TimeSpan UnreadLimit = TimeSpan.FromSeconds(10);

    /// <summary>The most state a session may save: what a move's frame carries, less the room
    /// for the endpoint's name and sub-protocol.</summary>
    internal const int MaxState = MoveChannel.MaxState - (64 << 10);

    private const ushort Magic = 0x4857; // "HW"
    private const byte Version = 1;

    private readonly Dictionary<string, HandoffWebSocketEndpoint> _endpoints = new(StringComparer.Ordinal);
    private readonly ConnectionDrainer _drainer;
    private readonly IOptions<WebSocketOptions> _webSocketOptions;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly Upgrader? _upgrader;
    private readonly ILogger _logger;

    public WebSocketMoves(ConnectionDrainer drainer, IOptions<WebSocketOptions> webSocketOptions, IHostApplicationLifetime lifetime, ILoggerFactory loggerFactory, Upgrader? upgrader = null)
    {
        _drainer = drainer;
        _webSocketOptions = webSocketOptions;
        _lifetime = lifetime;
        _upgrader = upgrader;
        _logger = loggerFactory.CreateLogger<WebSocketMoves>();

        // The drain moves WebSockets through here.
        drainer.WebSocketMoves = this;
    }

    /// <summary>Adds an endpoint; its name goes into this generation's ready report.</summary>
    public HandoffWebSocketEndpoint Add(string pattern, Func<HandoffWebSocket, Task> session, Func<HttpContext, WebSocketAcceptContext>? accept)
    {
        var endpoint = new HandoffWebSocketEndpoint(pattern, session, accept, this, _drainer, _logger);
        lock (_endpoints)
        {
            if (!_endpoints.TryAdd(pattern, endpoint))
            {
                throw new InvalidOperationException($"MapHandoffWebSocket maps \"{pattern}\" twice: each pattern names one endpoint to the next generation.");
            }

            if (_upgrader is not null)
            {
                _upgrader.Inheritance.Resumes = [.. _endpoints.Keys];
            }
        }

        return endpoint;
    }

    /// <summary>
    /// Moves a WebSocket to <paramref name="target"/> between two messages, or, when it cannot,
    /// closes it with 1012 as the drain does with any other. Counted on the target.
    /// </summary>
    public async Task MoveOrCloseAsync(WebSocketDrainStream stream, MoveTarget target)
    {
        string? refusal;
        try
        {
            refusal = await MoveAsync(stream, target).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Whatever failed, the WebSocket must still be closed, and counted.
        catch (Exception e)
#pragma warning restore CA1031
        {
            target.CountFailed(e, MoveKind.WebSocket);
            stream.Thaw();
            refusal = $"{e.GetType().Name}: {e.Message}";
        }

        if (refusal is null)
        {
            return;
        }

        if (stream.IsClosing)
        {
            // Its own close handshake ends it here, with the status its side chose.
            Log.Closing(_logger, Environment.ProcessId, stream.Endpoint?.Name ?? "?");
            await stream.CloseAsync(restart: true).ConfigureAwait(false);
            return;
        }

        LogNotMoved(stream, refusal);
        if (!await stream.CloseAsync(restart: true).ConfigureAwait(false))
        {
            Log.NotClosed(_logger, Environment.ProcessId, stream.Endpoint?.Name ?? "?");
        }
    }

    // A WebSocket that cannot move whatever happens now: counted as drained (closed with 1012).
    private static string Ineligible(MoveTarget target, WebSocketRefusal refusal)
    {
        target.CountIneligible(1, MoveKind.WebSocket, refusal.Reason);
        return refusal.Text;
    }

    // A WebSocket that was to move and is closed with 1012 instead.
    private static string NotMoved(MoveTarget target, string reason, string text)
    {
        target.CountNotMoved(MoveKind.WebSocket, reason);
        return text;
    }

    /// <summary>Logs why a WebSocket of a moving endpoint is closed with 1012 instead.</summary>
    public void LogNotMoved(WebSocketDrainStream stream, string reason) =>
        Log.NotMoved(_logger, Environment.ProcessId, stream.Endpoint?.Name ?? "?", reason);

    /// <summary>The WebSocket options of this application (keep-alive).</summary>
    public WebSocketOptions WebSocketOptions => _webSocketOptions.Value;

    // Null once the connection has gone (to the new generation, or closed with 1012 when the
    // channel broke after the detach); otherwise why it did not move (nothing changed then).
    private static async Task<string?> MoveAsync(WebSocketDrainStream stream, MoveTarget target)
    {
        var endpoint = stream.Endpoint!;
        if (stream.MoveRefusal is { } refused)
        {
            return Ineligible(target, refused);
        }

        if (!target.Resumes.Contains(endpoint.Name))
        {
            return Ineligible(target, WebSocketRefusal.NotResumed);
        }

        if (stream.Session is not { } session || stream.Carrier is not { } carrier)
        {
            return Ineligible(target, new("no_session", "its session has not begun"));
        }

        target.CountAsked();
        if (!target.IsOpen)
        {
            return NotMoved(target, MoveTarget.NotSent, "the channel to the new generation is closed");
        }

        if (!await stream.FreezeAsync(BoundaryLimit).ConfigureAwait(false))
        {
            return stream.IsClosing
                ? NotMoved(target, "closing", "its close handshake has begun")
                : NotMoved(target, "no_boundary", $"no point between two messages came within {BoundaryLimit.TotalSeconds} s");
        }

        // Held: from here, each way out either thaws the WebSocket (it goes on here, and is
        // closed with 1012 by the caller) or marks it moved.
        byte[] blob;
        try
        {
            var save = session.SaveState;
            if (save is null)
            {
                stream.Thaw();
                return NotMoved(target, "no_save_state", "its session set no SaveState");
            }

            var saving = Task.Run(() => save().ToArray());
            await ((Task)saving).WaitAsync(SaveLimit).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (!saving.IsCompletedSuccessfully)
            {
                stream.Thaw();
                return saving.IsFaulted
                    ? NotMoved(target, "save_state_failed", $"its SaveState threw {saving.Exception!.InnerException!.GetType().Name}: {saving.Exception.InnerException.Message}")
                    : NotMoved(target, "save_state_failed", $"its SaveState did not return within {SaveLimit.TotalSeconds} s");
            }

            byte[] state = saving.Result;
            if (state.Length > MaxState)
            {
                stream.Thaw();
                return NotMoved(target, "state_too_large", $"its SaveState returned {state.Length} bytes, more than the {MaxState} a move carries");
            }

            blob = Encode(endpoint.Name, stream.SubProtocol, state);
        }
        catch
        {
            stream.Thaw();
            throw;
        }

        // The socket's number stays this connection's until it is detached: a session or request
        // that ends meanwhile disposes the socket, and the number could name another one. Not
        // longer: once detached, Kestrel reads the stand-in's end of file and disposes the
        // socket, and a dispose waits (blocking a pool thread) for every reference to go.
        var handle = carrier.Socket.SafeHandle;
        bool held = false;
        try
        {
            handle.DangerousAddRef(ref held);
        }
        catch (ObjectDisposedException)
        {
        }

        if (!held)
        {
            stream.Thaw();
            return NotMoved(target, "connection_ended", "its connection ended");
        }

        int connection;
        try
        {
            int fd = (int)handle.DangerousGetHandle();
            if (carrier.AllWritten is { } allWritten && !await allWritten(fd).ConfigureAwait(false))
            {
                stream.Thaw();
                return NotMoved(target, "unsent_data", "its client did not take what was sent to it");
            }

            connection = await target.DetachAsync(fd, carrier.Inode).ConfigureAwait(false);
        }
        finally
        {
            handle.DangerousRelease();
        }

        if (connection < 0)
        {
            stream.Thaw();
            return NotMoved(target, "detach_failed", "its socket could not be taken from this process's socket engine");
        }

        return await SendAsync(stream, target, carrier, connection, blob).ConfigureAwait(false);
    }

    // The detached connection is no longer this process's: sent, or closed with 1012.
    private static async Task<string?> SendAsync(WebSocketDrainStream stream, MoveTarget target, WebSocketCarrier carrier, int connection, byte[] blob)
    {
        try
        {
            byte[] unread = await stream.ReadUnreadAsync().WaitAsync(UnreadLimit).ConfigureAwait(false);
            if (unread.Length > MoveChannel.MaxBytes || !await target.SendAsync(connection, carrier.ListenerInode, unread, MoveKind.WebSocket, blob).ConfigureAwait(false))
            {
                WebSocketRestart.Write(connection);
                target.CountNotMoved(MoveKind.WebSocket, unread.Length > MoveChannel.MaxBytes ? "unread_too_large" : MoveTarget.NotSent);
            }
        }
#pragma warning disable CA1031 // Whatever failed, the connection is no longer this process's: its client must hear of it.
        catch (Exception e)
#pragma warning restore CA1031
        {
            WebSocketRestart.Write(connection);
            target.CountFailed(new IOException($"{e.GetType().Name}: {e.Message} ({stream.Describe()})", e), MoveKind.WebSocket);
        }
        finally
        {
            Interop.Libc.Close(connection);
            target.Exit();
            stream.MarkMoved();
        }

        return null;
    }

    /// <summary>
    /// Takes a WebSocket moved here: rebuilds it on its socket and runs its endpoint's session
    /// with the state it saved; a WebSocket whose endpoint this generation does not map is
    /// closed with 1012 (its client reconnects). Runs on the move channel's thread: the session
    /// runs on the thread pool.
    /// </summary>
    public MoveOutcome Resume(MovedConnection moved)
    {
        HandoffWebSocketEndpoint? endpoint = null;
        string? subProtocol = null;
        ReadOnlyMemory<byte> state = default;
        string? refusal = Decode(moved.State, out string? name, out subProtocol, out state);
        if (refusal is null)
        {
            lock (_endpoints)
            {
                endpoint = _endpoints.GetValueOrDefault(name!);
            }

            refusal = endpoint is null ? $"this generation does not map \"{name}\" with MapHandoffWebSocket" : null;
        }

        if (endpoint is null)
        {
            return Refuse(moved, refusal!);
        }

        var handle = new SafeSocketHandle(moved.Fd, ownsHandle: true);
        Socket? socket = null;
        NetworkStream socketStream;
        ulong inode;
        try
        {
            inode = ProcFs.SelfInode(moved.Fd);
            socket = new Socket(handle);
            socketStream = new NetworkStream(socket, ownsSocket: true);
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            // Closed once, by whoever owns the descriptor now (the client reset meanwhile, say).
            if (socket is not null)
            {
                socket.Dispose();
            }
            else
            {
                handle.Dispose();
            }

            Log.NotResumed(_logger, Environment.ProcessId, e.Message);
            return MoveOutcome.Closed;
        }

        // Cancelled when its connection is cut at the drain's timeout or the server stops.
        var aborted = CancellationTokenSource.CreateLinkedTokenSource(_lifetime.ApplicationStopped);
        var options = _webSocketOptions.Value;
        var stream = WebSocketDrainStream.Resumed(socketStream, _drainer, endpoint, moved.Bytes, () =>
        {
            aborted.Cancel();
            socketStream.Dispose();
        });
        stream.SubProtocol = subProtocol;
        if (options.KeepAliveTimeout > TimeSpan.Zero && options.KeepAliveTimeout != Timeout.InfiniteTimeSpan)
        {
            stream.MoveRefusal = WebSocketRefusal.KeepAliveTimeout;
        }

        stream.Carrier = new WebSocketCarrier(socket, inode, moved.ListenerInode, AllWritten: null);
        var webSocket = WebSocket.CreateFromStream(stream, new WebSocketCreationOptions
        {
            IsServer = true,
            SubProtocol = subProtocol,
            KeepAliveInterval = options.KeepAliveInterval,
            KeepAliveTimeout = options.KeepAliveTimeout,
        });

        var session = new HandoffWebSocket(webSocket, state, httpContext: null, aborted.Token);
        stream.Session = session;
        session.Stream = stream;
        _drainer.Register(stream);
        _ = Task.Run(() => endpoint.RunResumedAsync(session, stream, aborted));
        return MoveOutcome.Adopted;
    }

    /// <summary>Closes a WebSocket moved here with 1012 (its client reconnects), logged with why.</summary>
    public MoveOutcome Refuse(MovedConnection moved, string reason)
    {
        Log.NotResumed(_logger, Environment.ProcessId, reason);
        WebSocketRestart.Write(moved.Fd);
        Interop.Libc.Close(moved.Fd);
        return MoveOutcome.Closed;
    }

    /// <summary>Whether <paramref name="target"/> resumes the endpoint a moved WebSocket's state names.</summary>
    public static bool ResumedBy(MoveTarget target, byte[] state) =>
        Decode(state, out string? name, out _, out _) is null && target.Resumes.Contains(name!);

    // The state a WebSocket's frame carries: magic "HW", version, a reserved byte, the lengths
    // of the endpoint's name (2 bytes), its sub-protocol (2) and the session's state (4), then
    // the three, big-endian.
    internal static byte[] Encode(string name, string? subProtocol, ReadOnlySpan<byte> state)
    {
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        byte[] protocolBytes = Encoding.UTF8.GetBytes(subProtocol ?? "");
        var blob = new byte[12 + nameBytes.Length + protocolBytes.Length + state.Length];
        BinaryPrimitives.WriteUInt16BigEndian(blob, Magic);
        blob[2] = Version;
        BinaryPrimitives.WriteUInt16BigEndian(blob.AsSpan(4), checked((ushort)nameBytes.Length));
        BinaryPrimitives.WriteUInt16BigEndian(blob.AsSpan(6), checked((ushort)protocolBytes.Length));
        BinaryPrimitives.WriteInt32BigEndian(blob.AsSpan(8), state.Length);
        nameBytes.CopyTo(blob, 12);
        protocolBytes.CopyTo(blob, 12 + nameBytes.Length);
        state.CopyTo(blob.AsSpan(12 + nameBytes.Length + protocolBytes.Length));
        return blob;
    }

    /// <summary>Reads what <see cref="Encode"/> wrote; null, or why it cannot be read.</summary>
    internal static string? Decode(byte[] blob, out string? name, out string? subProtocol, out ReadOnlyMemory<byte> state)
    {
        name = subProtocol = null;
        state = default;
        if (blob.Length < 12 || BinaryPrimitives.ReadUInt16BigEndian(blob) != Magic || blob[2] != Version)
        {
            return $"its state is not a WebSocket's of this version ({Convert.ToHexString(blob.AsSpan(0, Math.Min(3, blob.Length)))})";
        }

        int nameLength = BinaryPrimitives.ReadUInt16BigEndian(blob.AsSpan(4));
        int protocolLength = BinaryPrimitives.ReadUInt16BigEndian(blob.AsSpan(6));
        int stateLength = BinaryPrimitives.ReadInt32BigEndian(blob.AsSpan(8));
        if (stateLength < 0 || 12L + nameLength + protocolLength + stateLength != blob.Length)
        {
            return $"its state's lengths ({nameLength}, {protocolLength}, {stateLength}) do not add up to its {blob.Length} bytes";
        }

        name = Encoding.UTF8.GetString(blob, 12, nameLength);
        subProtocol = protocolLength == 0 ? null : Encoding.UTF8.GetString(blob, 12 + nameLength, protocolLength);
        state = blob.AsMemory(12 + nameLength + protocolLength, stateLength);
        return null;
    }

    private static partial class Log
    {
        [LoggerMessage(96, LogLevel.Information, "Pid {Pid}: a WebSocket of {Endpoint} does not move and is closed with 1012 (Service Restart): {Reason}.", EventName = "WebSocketNotMoved")]
        public static partial void NotMoved(ILogger logger, int pid, string endpoint, string reason);

        [LoggerMessage(98, LogLevel.Warning, "Pid {Pid}: a WebSocket moved here is closed with 1012 (Service Restart): {Reason}.", EventName = "WebSocketNotResumed")]
        public static partial void NotResumed(ILogger logger, int pid, string reason);

        [LoggerMessage(99, LogLevel.Information, "Pid {Pid}: a WebSocket of {Endpoint} does not move: its close handshake has begun, and ends here with the status its side chose.", EventName = "WebSocketClosingNotMoved")]
        public static partial void Closing(ILogger logger, int pid, string endpoint);

        [LoggerMessage(100, LogLevel.Warning, "Pid {Pid}: the 1012 close frame of a WebSocket of {Endpoint} could not be written within 1 s (its client does not read, and the buffer toward it is full): the connection was reset instead, and what was queued for it is lost.", EventName = "WebSocketReset")]
        public static partial void NotClosed(ILogger logger, int pid, string endpoint);
    }
}

/// <summary>What a WebSocket that moves needs of its connection: the socket and its inode (which
/// tells it from a later socket with the same number), the listening socket that accepted it, and
/// (under Kestrel, whose writes are queued) a wait until the kernel has taken every byte written.</summary>
internal sealed record WebSocketCarrier(Socket Socket, ulong Inode, ulong ListenerInode, Func<int, Task<bool>>? AllWritten);

/// <summary>Why a WebSocket cannot move: a word for the metrics' reason attribute and a sentence
/// for the log.</summary>
internal sealed record WebSocketRefusal(string Reason, string Text)
{
    public static readonly WebSocketRefusal Http2 = new("http2", "it runs on an HTTP/2 stream (other streams share the connection)");

    public static readonly WebSocketRefusal Tls = new("tls", "its connection cannot move (TLS, or not accepted by Handoff's listener)");

    public static readonly WebSocketRefusal Compression = new("compression", "it negotiated compression (permessage-deflate), whose context cannot move");

    public static readonly WebSocketRefusal KeepAliveTimeout = new("keep_alive_timeout", "it has a keep-alive timeout (KeepAliveTimeout), with which the WebSocket reads ahead by itself");

    public static readonly WebSocketRefusal NotResumed = new("not_resumed", "the new generation does not map this endpoint with MapHandoffWebSocket");
}
