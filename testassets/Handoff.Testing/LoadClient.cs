using System.Collections.Concurrent;
using System.Net;

namespace Handoff.Testing;

/// <summary>What a load run saw.</summary>
public sealed record LoadReport(long Succeeded, IReadOnlyList<string> Failures, IReadOnlyCollection<int> Pids)
{
    public override string ToString() =>
        $"{Succeeded} succeeded, {Failures.Count} failed; pids {string.Join(",", Pids.Order())}" +
        (Failures.Count > 0 ? "\nfailures:\n" + string.Join("\n", Failures.Take(20)) : "");
}

/// <summary>A load that counts what it sees, for <see cref="ServerProcess.UpgradeUnderLoadAsync"/>.</summary>
public interface ILoad
{
    /// <summary>Waits until at least <paramref name="count"/> more requests succeeded.</summary>
    Task WaitForProgressAsync(long count, TimeSpan timeout);

    /// <summary>Stops, lets what is in flight finish, and reports.</summary>
    Task<LoadReport> StopAsync();
}

/// <summary>
/// A constant load of GET (or POST) requests from several connections, without retries: every request
/// that does not get a complete 200 response counts as a failure, with its reason. With
/// <c>keepAlive</c> each connection sends its next request as soon as the last one finished
/// and reconnects only when the server said <c>Connection: close</c>; without, every request
/// uses a new connection.
/// </summary>
public sealed class LoadClient : ILoad
{
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);

    private readonly EndPoint _endPoint;
    private readonly bool _keepAlive;
    private readonly bool _tls;
    private readonly string _path;
    private readonly byte[]? _post;
    private readonly TimeSpan _pause;
    private readonly Action<DateTime, TimeSpan>? _sampled;
    private readonly ConcurrentDictionary<string, bool> _certificates = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly ConcurrentDictionary<int, bool> _pids = new();
    private readonly Task[] _workers;
    private long _succeeded;
    private long _connects;

    /// <param name="endPoint">The server.</param>
    /// <param name="connections">How many clients run at once, each on its own connection.</param>
    /// <param name="keepAlive">Reuse each connection until the server says <c>Connection: close</c>.</param>
    /// <param name="path">What to GET.</param>
    /// <param name="tls">Over TLS (any certificate accepted).</param>
    /// <param name="pause">How long each client waits between a response and its next request,
    /// give or take a fifth (zero: none). A keep-alive client does not look whether the server
    /// closed the connection meanwhile: a request sent on a connection closed under it fails.</param>
    /// <param name="sampled">Called with each successful request's start and duration (the
    /// benchmark's per-request log).</param>
    /// <param name="postBytes">When above zero, each request is a POST of that many bytes (a
    /// request a proxy must not send again on its own) instead of a GET.</param>
    public LoadClient(EndPoint endPoint, int connections, bool keepAlive, string path = "/?sleep=0", bool tls = false, TimeSpan pause = default, Action<DateTime, TimeSpan>? sampled = null, int postBytes = 0)
    {
        _post = postBytes > 0 ? new byte[postBytes] : null;
        _sampled = sampled;
        _endPoint = endPoint;
        _keepAlive = keepAlive;
        _tls = tls;
        _path = path;
        _pause = pause;
        _workers = [.. Enumerable.Range(0, connections).Select(_ => Task.Run(RunAsync))];
    }

    public long Succeeded => Interlocked.Read(ref _succeeded);

    public int FailureCount => _failures.Count;

    /// <summary>Connections opened so far: with keep-alive, one per client unless the server
    /// closed some (a drain) or a request failed.</summary>
    public long Connects => Interlocked.Read(ref _connects);

    /// <summary>Over TLS: the hashes of the certificates the server presented so far.</summary>
    public IReadOnlyCollection<string> Certificates => [.. _certificates.Keys];

    /// <summary>Waits until at least <paramref name="count"/> more requests succeeded, so an
    /// upgrade happens under load rather than before the load started.</summary>
    public async Task WaitForProgressAsync(long count, TimeSpan timeout)
    {
        long target = Succeeded + count;
        var deadline = DateTime.UtcNow + timeout;
        while (Succeeded < target)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the load made no progress: {Succeeded} succeeded, {FailureCount} failed");
            }

            await Task.Delay(10);
        }
    }

    /// <summary>Stops sending new requests, lets those in flight finish, and reports.</summary>
    public async Task<LoadReport> StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_workers);
        return new LoadReport(Succeeded, [.. _failures], [.. _pids.Keys]);
    }

    // ss's view of both ends of the connection from this local port, with their processes.
    private static string SocketState(int port)
    {
        var info = new System.Diagnostics.ProcessStartInfo("sh", ["-c", $"ss -tnpie | grep -A1 ':{port}\\b'"]) { RedirectStandardOutput = true };
        using var ss = System.Diagnostics.Process.Start(info)!;
        string state = ss.StandardOutput.ReadToEnd();
        ss.WaitForExit();
        return $"; the connection from port {port} now:\n{state}";
    }

    private async Task RunAsync()
    {
        HttpProbe? connection = null;
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                using var timeout = new CancellationTokenSource(RequestTimeout);
                try
                {
                    if (connection is null)
                    {
                        Interlocked.Increment(ref _connects);
                        connection = await HttpProbe.ConnectAsync(_endPoint, timeout.Token, _tls);
                        if (connection.CertificateHash is { } hash)
                        {
                            _certificates.TryAdd(hash, true);
                        }
                    }

                    var start = DateTime.UtcNow;
                    long started = System.Diagnostics.Stopwatch.GetTimestamp();
                    var response = _post is null
                        ? await connection.GetAsync(_path, _keepAlive, timeout.Token)
                        : await connection.PostAsync(_path, _post, _keepAlive, timeout.Token);
                    if (response.Status != 200)
                    {
                        _failures.Enqueue($"HTTP {response.Status}");
                    }
                    else
                    {
                        Interlocked.Increment(ref _succeeded);
                        _pids.TryAdd(response.Pid, true);
                        _sampled?.Invoke(start, System.Diagnostics.Stopwatch.GetElapsedTime(started));
                    }

                    if (!_keepAlive || response.ConnectionClose)
                    {
                        connection.Dispose();
                        connection = null;
                    }
                }
                catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or OperationCanceledException or FormatException or System.Security.Authentication.AuthenticationException)
                {
                    // A request that timed out: where is its connection now (which process holds
                    // it, what waits unread in it)? Nothing else can tell once the test has ended.
                    string diag = e is OperationCanceledException && connection?.LocalEndPoint is System.Net.IPEndPoint local ? SocketState(local.Port) : "";
                    _failures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} {e.GetType().Name}: {e.Message}{diag}");
                    connection?.Dispose();
                    connection = null;
                }

                if (_pause > TimeSpan.Zero)
                {
                    try
                    {
                        await Task.Delay(_pause * (0.8 + (0.4 * Random.Shared.NextDouble())), _stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                }
            }
        }
        finally
        {
            connection?.Dispose();
        }
    }
}
