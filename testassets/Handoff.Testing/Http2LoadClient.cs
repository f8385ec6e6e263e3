using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace Handoff.Testing;

/// <summary>
/// An HTTP/2 load (h2c with prior knowledge, or h2 over TLS with ALPN) that behaves as the
/// issue's measurement asks: each connection sends one request at a time, back to back; after
/// a GOAWAY it opens no new stream there and, once its last stream ended, opens a new
/// connection. It never retries: a stream above the GOAWAY's last stream id (refused), a
/// RST_STREAM, a connection that ends with a stream open, a failed connect or a status other
/// than 200 each count as one failure. HttpClient is no use for this: it retries refused streams.
/// </summary>
public sealed class Http2LoadClient : ILoad
{
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);

    private readonly IPEndPoint _endPoint;
    private readonly bool _tls;
    private readonly string _path;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly ConcurrentDictionary<int, bool> _pids = new();
    private readonly Task[] _workers;
    private readonly Action<DateTime, TimeSpan>? _sampled;
    private long _succeeded;
    private long _connections;
    private long _goAways;

    /// <param name="endPoint">The server.</param>
    /// <param name="connections">How many connections run at once.</param>
    /// <param name="tls">h2 over TLS (any certificate accepted), else h2c with prior knowledge.</param>
    /// <param name="path">What to GET.</param>
    /// <param name="sampled">Called with each successful request's start and duration (the
    /// benchmark's per-request log).</param>
    public Http2LoadClient(IPEndPoint endPoint, int connections, bool tls, string path = "/?sleep=0", Action<DateTime, TimeSpan>? sampled = null)
    {
        _endPoint = endPoint;
        _tls = tls;
        _path = path;
        _sampled = sampled;
        _workers = [.. Enumerable.Range(0, connections).Select(_ => Task.Run(RunAsync))];
    }

    public long Succeeded => Interlocked.Read(ref _succeeded);

    public int FailureCount => _failures.Count;

    /// <summary>Connections opened so far.</summary>
    public long Connections => Interlocked.Read(ref _connections);

    /// <summary>GOAWAY frames received so far.</summary>
    public long GoAways => Interlocked.Read(ref _goAways);

    /// <summary>Waits until at least <paramref name="count"/> more requests succeeded.</summary>
    public async Task WaitForProgressAsync(long count, TimeSpan timeout)
    {
        long target = Succeeded + count;
        var deadline = DateTime.UtcNow + timeout;
        while (Succeeded < target)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the HTTP/2 load made no progress: {Succeeded} succeeded, {FailureCount} failed");
            }

            await Task.Delay(10);
        }
    }

    /// <summary>Stops opening streams, lets those in flight finish, and reports.</summary>
    public async Task<LoadReport> StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_workers);
        return new LoadReport(Succeeded, [.. _failures], [.. _pids.Keys]);
    }

    private void Fail(string reason) => _failures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} {reason}");

    private async Task RunAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Connection connection;
            try
            {
                using var timeout = new CancellationTokenSource(RequestTimeout);
                connection = await Connection.OpenAsync(_endPoint, _tls, timeout.Token);
                Interlocked.Increment(ref _connections);
            }
            catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or AuthenticationException)
            {
                Fail($"connect: {e.GetType().Name}: {e.Message}");
                continue;
            }

            await using (connection)
            {
                while (!_stop.IsCancellationRequested && connection.LastStreamId is null)
                {
                    using var timeout = new CancellationTokenSource(RequestTimeout);
                    int stream = connection.NextStream();
                    var start = DateTime.UtcNow;
                    long startTimestamp = System.Diagnostics.Stopwatch.GetTimestamp();
                    try
                    {
                        await connection.SendRequestAsync(stream, _path, _tls, timeout.Token);
                        var (outcome, pid) = await connection.ReadResponseAsync(stream, () => Interlocked.Increment(ref _goAways), timeout.Token);
                        if (outcome is null)
                        {
                            Interlocked.Increment(ref _succeeded);
                            _pids.TryAdd(pid, true);
                            _sampled?.Invoke(start, System.Diagnostics.Stopwatch.GetElapsedTime(startTimestamp));
                        }
                        else
                        {
                            Fail($"stream {stream}: {outcome}");
                            break;
                        }
                    }
                    catch (Exception e) when (e is IOException or SocketException or OperationCanceledException)
                    {
                        Fail($"stream {stream}: {e.GetType().Name}: {e.Message}");
                        break;
                    }
                }
            }
        }
    }

    private sealed class AuthenticationException(string message) : Exception(message);

    private sealed class Connection : IAsyncDisposable
    {
        private const byte Data = 0x0, Headers = 0x1, RstStream = 0x3, Settings = 0x4, Ping = 0x6, GoAway = 0x7;
        private const byte EndStream = 0x1, Ack = 0x1, EndHeaders = 0x4;

        private readonly Socket _socket;
        private readonly Stream _stream;
        private readonly string _authority;
        private readonly byte[] _header = new byte[9];
        private int _nextStream = 1;
        private long _unacknowledged;

        private Connection(Socket socket, Stream stream, string authority)
        {
            _socket = socket;
            _stream = stream;
            _authority = authority;
        }

        public int? LastStreamId { get; private set; }

        public static async Task<Connection> OpenAsync(IPEndPoint endPoint, bool tls, CancellationToken cancellationToken)
        {
            var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(endPoint, cancellationToken);
                Stream stream = new NetworkStream(socket, ownsSocket: false);
                if (tls)
                {
                    var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                    await ssl.AuthenticateAsClientAsync(
                        new SslClientAuthenticationOptions
                        {
                            TargetHost = "localhost",
                            ApplicationProtocols = [SslApplicationProtocol.Http2],
#pragma warning disable CA5359 // The servers under test use a self-signed certificate made for the test.
                            RemoteCertificateValidationCallback = (_, _, _, _) => true,
#pragma warning restore CA5359
                        },
                        cancellationToken);
                    if (ssl.NegotiatedApplicationProtocol != SslApplicationProtocol.Http2)
                    {
                        throw new AuthenticationException($"ALPN chose '{ssl.NegotiatedApplicationProtocol}', not h2");
                    }

                    stream = ssl;
                }

                var connection = new Connection(socket, stream, endPoint.ToString());
                var start = new byte[24 + 9 + 6];
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.CopyTo(start);
                WriteHeader(start.AsSpan(24), 6, Settings, 0, 0);
                BinaryPrimitives.WriteUInt16BigEndian(start.AsSpan(33), 0x2); // SETTINGS_ENABLE_PUSH
                BinaryPrimitives.WriteUInt32BigEndian(start.AsSpan(35), 0);
                await stream.WriteAsync(start, cancellationToken);
                return connection;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        public int NextStream()
        {
            int stream = _nextStream;
            _nextStream += 2;
            return stream;
        }

        public async Task SendRequestAsync(int stream, string path, bool tls, CancellationToken cancellationToken)
        {
            // HPACK without the dynamic table: :method GET and the scheme from the static table,
            // :path and :authority as literals without indexing (RFC 7541 §6.2.2).
            var block = new List<byte> { 0x82, tls ? (byte)0x87 : (byte)0x86 };
            AddLiteral(block, 4, path);
            AddLiteral(block, 1, _authority);
            var frame = new byte[9 + block.Count];
            WriteHeader(frame, block.Count, Headers, EndHeaders | EndStream, stream);
            block.CopyTo(frame, 9);
            await _stream.WriteAsync(frame, cancellationToken);
        }

        /// <summary>Reads frames until <paramref name="stream"/> ends; returns null and the pid
        /// on a complete 200, otherwise why it failed.</summary>
        public async Task<(string? Failure, int Pid)> ReadResponseAsync(int stream, Action goAway, CancellationToken cancellationToken)
        {
            int status = 0;
            var body = new List<byte>();
            while (true)
            {
                if (!await ReadExactlyOrEndAsync(_header, cancellationToken))
                {
                    return ($"connection closed with the stream open (GOAWAY last stream {LastStreamId?.ToString(CultureInfo.InvariantCulture) ?? "none"})", 0);
                }

                int length = (_header[0] << 16) | (_header[1] << 8) | _header[2];
                byte type = _header[3];
                byte flags = _header[4];
                int id = BinaryPrimitives.ReadInt32BigEndian(_header.AsSpan(5)) & int.MaxValue;
                var payload = new byte[length];
                if (length > 0 && !await ReadExactlyOrEndAsync(payload, cancellationToken))
                {
                    return ("connection closed inside a frame", 0);
                }

                switch (type)
                {
                    case Settings when (flags & Ack) == 0:
                        await SendAsync(Settings, Ack, 0, [], cancellationToken);
                        break;
                    case Ping when (flags & Ack) == 0:
                        await SendAsync(Ping, Ack, 0, payload, cancellationToken);
                        break;
                    case GoAway:
                        goAway();
                        LastStreamId = BinaryPrimitives.ReadInt32BigEndian(payload) & int.MaxValue;
                        if (stream > LastStreamId)
                        {
                            return ($"refused: GOAWAY with last stream {LastStreamId}", 0);
                        }

                        break;
                    case RstStream when id == stream:
                        return ($"RST_STREAM error {BinaryPrimitives.ReadUInt32BigEndian(payload)}", 0);
                    case Headers when id == stream:
                        // Kestrel sends :status 200 as index 8 of the static table.
                        status = payload.Length > 0 && payload[0] == 0x88 ? 200 : -1;
                        break;
                    case Data when id == stream:
                        body.AddRange(payload);
                        await CreditAsync(length, cancellationToken);
                        break;
                    default:
                        break;
                }

                if ((type == Headers || type == Data) && id == stream && (flags & EndStream) != 0)
                {
                    if (status != 200)
                    {
                        return ("status other than 200", 0);
                    }

                    string text = Encoding.ASCII.GetString([.. body]);
                    int pid = text.StartsWith("pid:", StringComparison.Ordinal)
                        ? int.Parse(text.AsSpan(4, text.IndexOf('\n', StringComparison.Ordinal) is var nl and > 4 ? nl - 4 : text.Length - 4).Trim(), CultureInfo.InvariantCulture)
                        : 0;
                    return (null, pid);
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stream.DisposeAsync();
            _socket.Dispose();
        }

        private static void AddLiteral(List<byte> block, byte nameIndex, string value)
        {
            block.Add(nameIndex);
            block.Add(checked((byte)value.Length)); // short values only: 7-bit length, no Huffman
            block.AddRange(Encoding.ASCII.GetBytes(value));
        }

        private static void WriteHeader(Span<byte> span, int length, byte type, byte flags, int stream)
        {
            span[0] = (byte)(length >> 16);
            span[1] = (byte)(length >> 8);
            span[2] = (byte)length;
            span[3] = type;
            span[4] = flags;
            BinaryPrimitives.WriteInt32BigEndian(span[5..], stream);
        }

        // The connection's flow-control window (65,535 bytes) would run out after about a
        // thousand small responses: give back what was read.
        private async Task CreditAsync(int length, CancellationToken cancellationToken)
        {
            _unacknowledged += length;
            if (_unacknowledged >= 16384)
            {
                var increment = new byte[4];
                BinaryPrimitives.WriteInt32BigEndian(increment, (int)_unacknowledged);
                _unacknowledged = 0;
                await SendAsync(0x8, 0, 0, increment, cancellationToken);
            }
        }

        private async Task SendAsync(byte type, byte flags, int stream, byte[] payload, CancellationToken cancellationToken)
        {
            var frame = new byte[9 + payload.Length];
            WriteHeader(frame, payload.Length, type, flags, stream);
            payload.CopyTo(frame, 9);
            await _stream.WriteAsync(frame, cancellationToken);
        }

        private async Task<bool> ReadExactlyOrEndAsync(byte[] buffer, CancellationToken cancellationToken)
        {
            int read = await _stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken);
            return read == buffer.Length;
        }
    }
}
