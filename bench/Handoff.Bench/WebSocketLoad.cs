using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;

namespace Handoff.Bench;

/// <summary>
/// A WebSocket load: each of its connections sends a short message and waits for its echo, again
/// and again, on TestServer's <c>/ws</c> (which greets with "pid:N" first) or <c>/ws-move</c>
/// (mapped with MapHandoffWebSocket: its WebSockets move to the new generation at an upgrade). A close frame from the server with 1012 (Service
/// Restart) or 1001 (Going Away) is answered and followed by a new connection: a reconnect, not a
/// failure, and never a resend. Every other end counts: a failed connect or handshake, a
/// connection lost without a close frame, a close with another status, an echo that never came.
/// </summary>
internal sealed class WebSocketLoad
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly Uri _uri;
    private readonly bool _greets;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<(DateTime Start, double LatencyMs)> _samples = new();
    private readonly Task[] _workers;
    private long _succeeded;
    private long _connectErrors;
    private long _lost;
    private long _badCloses;
    private long _timeouts;
    private long _reconnects;
    private long _unansweredAtClose;

    public WebSocketLoad(int port, int connections, bool moving)
    {
        _uri = new Uri($"ws://127.0.0.1:{port}/{(moving ? "ws-move" : "ws")}");
        _greets = !moving;
        _workers = [.. Enumerable.Range(0, connections).Select(_ => Task.Run(RunAsync))];
    }

    public static async Task<LoadResult> RunAsync(int port, int connections, TimeSpan duration, bool moving = false)
    {
        var clock = Stopwatch.StartNew();
        var load = new WebSocketLoad(port, connections, moving);
        await Task.Delay(duration);
        await load._stop.CancelAsync();
        await Task.WhenAll(load._workers);
        return new LoadResult
        {
            Requests = load._succeeded,
            DurationSeconds = clock.Elapsed.TotalSeconds,
            ConnectErrors = load._connectErrors,
            ReadErrors = load._lost + load._badCloses,
            Timeouts = load._timeouts,
            Reconnects = load._reconnects,
            UnansweredAtClose = load._unansweredAtClose,
        }.WithSamples(load._samples);
    }

    private async Task RunAsync()
    {
        byte[] message = Encoding.ASCII.GetBytes("hello");
        byte[] buffer = new byte[256];
        while (!_stop.IsCancellationRequested)
        {
            using var socket = new ClientWebSocket();
            try
            {
                using var connect = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                connect.CancelAfter(Timeout);
                await socket.ConnectAsync(_uri, connect.Token);
                // /ws's first message names the generation ("pid:N").
                if (_greets && (await socket.ReceiveAsync(buffer, connect.Token)).MessageType == WebSocketMessageType.Close)
                {
                    await EndAsync(socket, awaitingEcho: false);
                    continue;
                }
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is WebSocketException or IOException or OperationCanceledException)
            {
                Interlocked.Increment(ref _connectErrors);
                await LoadResult.PauseAfterFailedConnectAsync(_stop.Token);
                continue;
            }

            while (!_stop.IsCancellationRequested)
            {
                var start = DateTime.UtcNow;
                long started = Stopwatch.GetTimestamp();
                using var limit = new CancellationTokenSource(Timeout);
                try
                {
                    await socket.SendAsync(message, WebSocketMessageType.Text, endOfMessage: true, limit.Token);
                    var received = await socket.ReceiveAsync(buffer, limit.Token);
                    if (received.MessageType == WebSocketMessageType.Close)
                    {
                        await EndAsync(socket, awaitingEcho: true);
                        break;
                    }

                    Interlocked.Increment(ref _succeeded);
                    _samples.Enqueue((start, Stopwatch.GetElapsedTime(started).TotalMilliseconds));
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref _timeouts);
                    break;
                }
                catch (Exception e) when (e is WebSocketException or IOException)
                {
                    // The connection ended without a close frame: the message in flight is lost.
                    Interlocked.Increment(ref _lost);
                    break;
                }
            }

            if (_stop.IsCancellationRequested && socket.State == WebSocketState.Open)
            {
                try
                {
                    using var limit = new CancellationTokenSource(Timeout);
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, limit.Token);
                }
                catch (Exception e) when (e is WebSocketException or IOException or OperationCanceledException)
                {
                }
            }
        }
    }

    /// <summary>The server closed: with 1012 or 1001 the client answers and reconnects; any other
    /// status is a failure. A message sent before the close arrived stays unanswered: RFC 6455
    /// lets the server stop sending after its close frame, so it is counted on its own, not as a
    /// failed request (a client resends it on its new connection).</summary>
    private async Task EndAsync(ClientWebSocket socket, bool awaitingEcho)
    {
        var status = socket.CloseStatus;
        if (status is (WebSocketCloseStatus)1012 or WebSocketCloseStatus.EndpointUnavailable)
        {
            Interlocked.Increment(ref _reconnects);
            if (awaitingEcho)
            {
                Interlocked.Increment(ref _unansweredAtClose);
            }
        }
        else
        {
            Interlocked.Increment(ref _badCloses);
        }

        try
        {
            using var limit = new CancellationTokenSource(Timeout);
            await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, limit.Token);
        }
        catch (Exception e) when (e is WebSocketException or IOException or OperationCanceledException)
        {
        }
    }

}
