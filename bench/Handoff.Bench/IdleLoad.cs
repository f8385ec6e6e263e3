using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Handoff.Bench;

/// <summary>
/// Idle keep-alive connections (a fleet of clients, each with its pooled connection): each
/// connection sends one request, then waits. When the server closes it, the client opens a new
/// connection and sends one request there (a reconnect, as a pool does on its next use), then
/// waits again. A failed connect, a reset, or a request that got no complete 200 counts. Each
/// close is timed, so the report can say when the last idle connection was let go after an action.
/// </summary>
internal sealed class IdleLoad
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private static readonly byte[] Request = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    private readonly IPEndPoint _endPoint;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<(DateTime Start, double LatencyMs)> _samples = new();
    private readonly ConcurrentQueue<DateTime> _closes = new();
    private readonly SemaphoreSlim _opening = new(128);
    private readonly Task[] _workers;
    private readonly TaskCompletionSource _established = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _waiting;
    private long _succeeded;
    private long _connectErrors;
    private long _readErrors;
    private long _timeouts;
    private long _non200;
    private long _reconnects;

    private IdleLoad(int port, int connections)
    {
        _endPoint = new IPEndPoint(IPAddress.Loopback, port);
        _waiting = connections;
        _workers = [.. Enumerable.Range(0, connections).Select(_ => Task.Run(RunAsync))];
    }

    /// <summary>Opens the connections (at most 128 at a time, so the first ones are not a SYN
    /// flood) and returns once all of them are idle; the task it returns ends after the
    /// duration, counted from then.</summary>
    public static async Task<Task<LoadResult>> StartAsync(int port, int connections, TimeSpan duration)
    {
        var load = new IdleLoad(port, connections);
        await load._established.Task.WaitAsync(TimeSpan.FromSeconds(120));
        return load.RunForAsync(duration);
    }

    private async Task<LoadResult> RunForAsync(TimeSpan duration)
    {
        var clock = Stopwatch.StartNew();
        await Task.Delay(duration);
        await _stop.CancelAsync();
        await Task.WhenAll(_workers);
        return new LoadResult
        {
            Requests = _succeeded + _non200,
            DurationSeconds = clock.Elapsed.TotalSeconds,
            ConnectErrors = _connectErrors,
            ReadErrors = _readErrors,
            Timeouts = _timeouts,
            Non2xx = _non200,
            Reconnects = _reconnects,
            Closes = [.. _closes],
        }.WithSamples(_samples);
    }

    private async Task RunAsync()
    {
        bool first = true;
        byte[] buffer = new byte[1024];
        while (!_stop.IsCancellationRequested)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            if (first)
            {
                await _opening.WaitAsync();
            }

            var start = DateTime.UtcNow;
            long started = Stopwatch.GetTimestamp();
            try
            {
                using var limit = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                limit.CancelAfter(Timeout);
                try
                {
                    await socket.ConnectAsync(_endPoint, limit.Token);
                }
                catch (SocketException)
                {
                    Interlocked.Increment(ref _connectErrors);
                    await LoadResult.PauseAfterFailedConnectAsync(_stop.Token);
                    continue;
                }

                await socket.SendAsync(Request, SocketFlags.None, limit.Token);
                if (!await ReadResponseAsync(socket, buffer, limit.Token))
                {
                    Interlocked.Increment(ref _non200);
                    continue;
                }

                Interlocked.Increment(ref _succeeded);
                _samples.Enqueue((start, Stopwatch.GetElapsedTime(started).TotalMilliseconds));
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (OperationCanceledException)
            {
                Interlocked.Increment(ref _timeouts);
                continue;
            }
            catch (Exception e) when (e is SocketException or IOException)
            {
                Interlocked.Increment(ref _readErrors);
                continue;
            }
            finally
            {
                if (first)
                {
                    first = false;
                    _opening.Release();
                    if (Interlocked.Decrement(ref _waiting) == 0)
                    {
                        _established.TrySetResult();
                    }
                }
            }

            // Idle until the server lets the connection go: an orderly close or a reset (no
            // request was in flight, so neither fails one); then a new connection and request.
            try
            {
                _ = await socket.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException)
            {
            }

            _closes.Enqueue(DateTime.UtcNow);
            Interlocked.Increment(ref _reconnects);
        }
    }

    /// <summary>Reads one response; true when it was a complete 200. The servers' answers are
    /// small and carry a Content-Length.</summary>
    private static async Task<bool> ReadResponseAsync(Socket socket, byte[] buffer, CancellationToken cancellationToken)
    {
        int filled = 0;
        while (true)
        {
            int read = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                throw new IOException("the connection closed before the response was complete");
            }

            filled += read;
            string text = Encoding.ASCII.GetString(buffer, 0, filled);
            int headerEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (headerEnd < 0)
            {
                if (filled == buffer.Length)
                {
                    throw new IOException("response headers too long");
                }

                continue;
            }

            int lengthAt = text.IndexOf("\r\nContent-Length:", StringComparison.OrdinalIgnoreCase);
            if (lengthAt < 0 || lengthAt > headerEnd)
            {
                throw new IOException("a response without Content-Length");
            }

            int lineEnd = text.IndexOf("\r\n", lengthAt + 2, StringComparison.Ordinal);
            int length = int.Parse(text.AsSpan(lengthAt + 17, lineEnd - lengthAt - 17).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            if (filled >= headerEnd + 4 + length)
            {
                return text.StartsWith("HTTP/1.1 200", StringComparison.Ordinal);
            }
        }
    }

}
