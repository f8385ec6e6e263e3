using System.Net.Sockets;

namespace Handoff;

/// <summary>
/// The connections of a raw <see cref="Socket"/> server, counted so that a generation can finish
/// them before it exits, as Go's gracehttp wraps its listener and connections with a WaitGroup:
/// accept through <see cref="AcceptAsync"/>, dispose each <see cref="CountedConnection"/> when
/// it is done, and when the generation stops accepting (superseded, or SIGTERM) call
/// <see cref="DrainAsync"/>.
/// </summary>
/// <remarks>
/// <see cref="Draining"/> (also on every connection) fires when the drain starts: a protocol that
/// can say goodbye (finish the current message, then close) does so then; one that cannot keeps
/// serving until the client leaves or <see cref="DrainAsync"/>'s timeout aborts the connection.
/// </remarks>
public sealed class ConnectionDrain : IDisposable
{
    private readonly Lock _lock = new();
    private readonly HashSet<CountedConnection> _connections = [];
    private readonly CancellationTokenSource _draining = new();
    private TaskCompletionSource? _empty;

    /// <summary>The connections open now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _connections.Count;
            }
        }
    }

    /// <summary>Cancelled when <see cref="DrainAsync"/> starts.</summary>
    public CancellationToken Draining => _draining.Token;

    /// <summary>
    /// Accepts the next connection on <paramref name="listener"/> (only while this generation
    /// accepts, see <see cref="Listener.AcceptAsync"/>) and tracks it until it is disposed.
    /// Returns null once the listener is closed.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public async ValueTask<CountedConnection?> AcceptAsync(Listener listener, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(listener);
        if (await listener.AcceptAsync(cancellationToken).ConfigureAwait(false) is not { } socket)
        {
            return null;
        }

        var connection = new CountedConnection(socket, this);
        lock (_lock)
        {
            _connections.Add(connection);
        }

        return connection;
    }

    /// <summary>
    /// Fires <see cref="Draining"/>, waits until every connection has been disposed or
    /// <paramref name="timeout"/> has passed, and aborts (resets) the connections still open
    /// then. Call it after the generation stopped accepting (<see cref="Upgrader.StopAsync"/>).
    /// </summary>
    /// <returns>How many connections that were open when the drain started finished by
    /// themselves, and how many were aborted.</returns>
    public async Task<DrainResult> DrainAsync(TimeSpan timeout)
    {
        Task empty;
        int open;
        lock (_lock)
        {
            open = _connections.Count;
            _empty ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (open == 0)
            {
                _empty.TrySetResult();
            }

            empty = _empty.Task;
        }

        await _draining.CancelAsync().ConfigureAwait(false);
        try
        {
            await empty.WaitAsync(timeout).ConfigureAwait(false);
            return new DrainResult(open, 0);
        }
        catch (TimeoutException)
        {
            // What is left never finished: abort it.
        }

        CountedConnection[] left;
        lock (_lock)
        {
            left = [.. _connections];
        }

        foreach (var connection in left)
        {
            connection.Abort();
        }

        return new DrainResult(Math.Max(0, open - left.Length), left.Length);
    }

    /// <inheritdoc />
    public void Dispose() => _draining.Dispose();

    internal void Remove(CountedConnection connection)
    {
        lock (_lock)
        {
            if (_connections.Remove(connection) && _connections.Count == 0)
            {
                _empty?.TrySetResult();
            }
        }
    }
}

/// <summary>One accepted connection of a <see cref="ConnectionDrain"/>: its socket, and the
/// drain's token. Dispose it when the connection is done.</summary>
public sealed class CountedConnection : IDisposable
{
    private readonly ConnectionDrain _drain;
    private int _disposed;

    internal CountedConnection(Socket socket, ConnectionDrain drain)
    {
        Socket = socket;
        _drain = drain;
    }

    /// <summary>The connected socket.</summary>
    public Socket Socket { get; }

    /// <summary>Cancelled when the generation starts draining: finish the current exchange and
    /// close, if the protocol allows it.</summary>
    public CancellationToken Draining => _drain.Draining;

    /// <summary>Closes the socket and stops counting the connection.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Socket.Dispose();
            _drain.Remove(this);
        }
    }

    /// <summary>Resets the connection (the drain's time is up); whatever serves it sees its
    /// reads and writes fail and disposes it.</summary>
    internal void Abort()
    {
        try
        {
            Socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Closed meanwhile.
        }

        Dispose();
    }
}

/// <summary>The outcome of <see cref="ConnectionDrain.DrainAsync"/>.</summary>
/// <param name="Finished">Connections open when the drain started that ended by themselves.</param>
/// <param name="Aborted">Connections still open at the timeout, which were reset.</param>
public readonly record struct DrainResult(int Finished, int Aborted);
