using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Handoff.Testing;

/// <summary>The parts of an HTTP/1.1 response the tests look at.</summary>
public sealed record HttpProbeResponse(int Status, int Pid, bool ConnectionClose, string Body);

/// <summary>
/// A minimal HTTP/1.1 client on a raw socket. Unlike HttpClient it never retries and never
/// hides a connection that the server closed under a request: every such request fails here,
/// as it does in wrk.
/// </summary>
public sealed class HttpProbe : IDisposable
{
    private readonly Socket _socket;
    private readonly Stream _stream;
    private readonly byte[] _buffer = new byte[16 * 1024];
    private int _start;
    private int _end;

    private HttpProbe(Socket socket, Stream stream, string? certificateHash)
    {
        _socket = socket;
        _stream = stream;
        CertificateHash = certificateHash;
    }

    /// <summary>This end's address (its port names the TCP connection).</summary>
    public EndPoint? LocalEndPoint => _socket.LocalEndPoint;

    /// <summary>True when something arrived unasked: bytes, or the server's FIN or RST.</summary>
    public bool HasUnaskedInput => _start < _end || _socket.Poll(TimeSpan.Zero, SelectMode.SelectRead);

    /// <summary>With TLS, the SHA-256 hash of the certificate the server presented.</summary>
    public string? CertificateHash { get; }

    /// <summary>Connects, over TLS (HTTP/1.1 by ALPN, any certificate) when <paramref name="tls"/>.</summary>
    public static async Task<HttpProbe> ConnectAsync(EndPoint endPoint, CancellationToken cancellationToken, bool tls = false)
    {
        var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endPoint, cancellationToken);
            Stream stream = new NetworkStream(socket, ownsSocket: false);
            if (!tls)
            {
                return new HttpProbe(socket, stream, null);
            }

            var ssl = new System.Net.Security.SslStream(stream, leaveInnerStreamOpen: false);
            await ssl.AuthenticateAsClientAsync(
                new System.Net.Security.SslClientAuthenticationOptions
                {
                    TargetHost = "localhost",
                    ApplicationProtocols = [System.Net.Security.SslApplicationProtocol.Http11],
#pragma warning disable CA5359 // The servers under test use a self-signed certificate made for the test.
                    RemoteCertificateValidationCallback = (_, _, _, _) => true,
#pragma warning restore CA5359
                },
                cancellationToken);
            string hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(ssl.RemoteCertificate!.GetRawCertData()));
            return new HttpProbe(socket, ssl, hash);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>One request on a new connection, closed afterwards.</summary>
    public static async Task<HttpProbeResponse> GetAsync(EndPoint endPoint, string path, TimeSpan timeout, bool tls = false)
    {
        using var cts = new CancellationTokenSource(timeout);
        using var probe = await ConnectAsync(endPoint, cts.Token, tls);
        return await probe.GetAsync(path, keepAlive: false, cts.Token);
    }

    public Task<HttpProbeResponse> GetAsync(string path, bool keepAlive, CancellationToken cancellationToken) =>
        SendAsync(path, body: null, keepAlive, cancellationToken);

    /// <summary>A POST with <paramref name="body"/> (Content-Length), answered as a GET is.</summary>
    public Task<HttpProbeResponse> PostAsync(string path, byte[] body, bool keepAlive, CancellationToken cancellationToken) =>
        SendAsync(path, body, keepAlive, cancellationToken);

    private async Task<HttpProbeResponse> SendAsync(string path, byte[]? body, bool keepAlive, CancellationToken cancellationToken)
    {
        string request = body is null
            ? $"GET {path} HTTP/1.1\r\nHost: localhost\r\n{(keepAlive ? "" : "Connection: close\r\n")}\r\n"
            : $"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {body.Length}\r\n{(keepAlive ? "" : "Connection: close\r\n")}\r\n";
        await _stream.WriteAsync(Encoding.ASCII.GetBytes(request), cancellationToken);
        if (body is not null)
        {
            await _stream.WriteAsync(body, cancellationToken);
        }

        string head = await ReadHeadAsync(cancellationToken);
        string[] lines = head.Split("\r\n");
        string[] statusLine = lines[0].Split(' ');
        if (statusLine.Length < 2 || !statusLine[0].StartsWith("HTTP/1.", StringComparison.Ordinal))
        {
            throw new IOException($"bad status line '{lines[0]}'");
        }

        int status = int.Parse(statusLine[1], CultureInfo.InvariantCulture);
        var headers = lines.Skip(1)
            .Select(l => l.Split(':', 2))
            .Where(p => p.Length == 2)
            .ToLookup(p => p[0].Trim(), p => p[1].Trim(), StringComparer.OrdinalIgnoreCase);
        bool close = headers["Connection"].Any(v => v.Contains("close", StringComparison.OrdinalIgnoreCase));
        byte[] content = headers["Transfer-Encoding"].Any(v => v.Contains("chunked", StringComparison.OrdinalIgnoreCase))
            ? await ReadChunkedAsync(cancellationToken)
            : await ReadExactlyAsync(int.Parse(headers["Content-Length"].FirstOrDefault() ?? "0", CultureInfo.InvariantCulture), cancellationToken);
        string text = Encoding.UTF8.GetString(content);
        int pid = text.StartsWith("pid:", StringComparison.Ordinal)
            ? int.Parse(text[4..text.IndexOf('\n', StringComparison.Ordinal)], CultureInfo.InvariantCulture)
            : 0;
        return new HttpProbeResponse(status, pid, close, text);
    }

    public void Dispose()
    {
        _stream.Dispose();
        _socket.Dispose();
    }

    private Task<string> ReadHeadAsync(CancellationToken cancellationToken) => ReadUntilAsync("\r\n\r\n"u8.ToArray(), cancellationToken);

    private Task<string> ReadLineAsync(CancellationToken cancellationToken) => ReadUntilAsync("\r\n"u8.ToArray(), cancellationToken);

    /// <summary>Reads up to <paramref name="delimiter"/>, consumes it, and returns what came before.</summary>
    private async Task<string> ReadUntilAsync(byte[] delimiter, CancellationToken cancellationToken)
    {
        while (true)
        {
            int end = _buffer.AsSpan(_start, _end - _start).IndexOf(delimiter);
            if (end >= 0)
            {
                string text = Encoding.ASCII.GetString(_buffer, _start, end);
                _start += end + delimiter.Length;
                return text;
            }

            await FillAsync(cancellationToken);
        }
    }

    private async Task<byte[]> ReadChunkedAsync(CancellationToken cancellationToken)
    {
        var body = new List<byte>();
        while (true)
        {
            int size = int.Parse(await ReadLineAsync(cancellationToken), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            body.AddRange(await ReadExactlyAsync(size, cancellationToken));
            await ReadLineAsync(cancellationToken);
            if (size == 0)
            {
                return [.. body];
            }
        }
    }

    private async Task<byte[]> ReadExactlyAsync(int count, CancellationToken cancellationToken)
    {
        while (_end - _start < count)
        {
            await FillAsync(cancellationToken);
        }

        byte[] result = _buffer[_start..(_start + count)];
        _start += count;
        return result;
    }

    private async Task FillAsync(CancellationToken cancellationToken)
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }

        if (_end == _buffer.Length)
        {
            throw new IOException("response head too large");
        }

        int n = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken);
        if (n == 0)
        {
            throw new IOException("the server closed the connection before the response was complete");
        }

        _end += n;
    }
}
