using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Handoff.Tool;

/// <summary>
/// The client end of the control socket (docs/control.md): one request line, then JSON
/// answers, one per line, until the server closes the connection.
/// </summary>
internal sealed class ControlClient : IDisposable
{
    private readonly Socket _socket;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private ControlClient(Socket socket) => _socket = socket;

    /// <summary>The control socket when none is named: the server's own default, under
    /// systemd's <c>RuntimeDirectory=</c>.</summary>
    public static string? DefaultPath() => new HandoffOptions().ResolveControlSocket(Environment.GetEnvironmentVariable("RUNTIME_DIRECTORY"));

    /// <summary>Connects and sends <paramref name="request"/>.</summary>
    /// <exception cref="ToolException">The server cannot be reached; the message says why and
    /// what to check.</exception>
    public static async Task<ControlClient> ConnectAsync(string path, string request, CancellationToken cancellationToken)
    {
        if (Encoding.UTF8.GetByteCount(path) >= Interop.Libc.UnixPathMax)
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"{path} is longer than a Unix socket path can be ({Interop.Libc.UnixPathMax - 1} bytes), so no server can listen there.");
        }

        // As connect(2) sees it: a symlink to the socket is the socket.
        if (Interop.Libc.FileType(path, followLinks: true) is { } type && type != Interop.Libc.S_IFSOCK)
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"{path} is not a socket but a {(type == Interop.Libc.S_IFDIR ? "directory" : "file")}: give the server's Handoff:ControlSocket.");
        }

        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
            await socket.SendAsync(Encoding.UTF8.GetBytes(request + "\n"), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            return new ControlClient(socket);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new ToolException(ToolExitCodes.CouldNotAsk, e.SocketErrorCode switch
            {
                _ when Interop.Libc.FileType(path) is null =>
                    $"no control socket at {path}: no server runs with Handoff:ControlSocket={path}, or it is shutting down (a stopping server closes its control socket, then drains its connections for up to Handoff:DrainTimeout).",
                SocketError.ConnectionRefused => $"nobody answers at {path}: the server that created it is gone (the file is left over).",
                SocketError.AccessDenied => $"permission denied at {path}: only the server's user and root may use its control socket.",
                _ => $"cannot connect to {path}: {e.Message}",
            });
        }
        catch (OperationCanceledException)
        {
            socket.Dispose();
            throw new ToolException(ToolExitCodes.TimedOut, $"timed out connecting to {path}: the server accepts no control connections (is it stuck or still starting?).");
        }
    }

    /// <summary>The next answer's envelope (its type) with its raw line, or null when the
    /// server closed the connection. <see cref="Read{T}"/> reads the rest.</summary>
    public async Task<(ControlEnvelope Envelope, string Line)?> ReadAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            int newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (newline >= 0)
            {
                string line = Encoding.UTF8.GetString(_buffer, _start, newline - _start);
                _start = newline + 1;
                return (Read(line, ControlJson.Wire.ControlEnvelope), line);
            }

            if (_start > 0)
            {
                Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            if (_end == _buffer.Length)
            {
                throw new ToolException(ToolExitCodes.CouldNotAsk, "the server's answer is longer than the control protocol allows.");
            }

            int read;
            try
            {
                read = await _socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                read = 0; // Reset: the same as closed, for what the caller can learn.
            }

            if (read == 0)
            {
                return null;
            }

            _end += read;
        }
    }

    public void Dispose() => _socket.Dispose();

    /// <summary>An answer of type "error" is the server refusing the request.</summary>
    public static void ThrowIfError((ControlEnvelope Envelope, string Line) answer)
    {
        if (answer.Envelope.Type == ControlProtocol.ErrorType)
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, "the server refused: " + Read(answer.Line, ControlJson.Wire.ErrorAnswer).Error);
        }
    }

    /// <summary>An answer as the contract (Handoff's ControlMessages) says; one that does not
    /// parse is not the control protocol.</summary>
    public static T Read<T>(string line, JsonTypeInfo<T> type)
    {
        try
        {
            return JsonSerializer.Deserialize(line, type) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new ToolException(ToolExitCodes.CouldNotAsk, $"the server's answer is not the control protocol ({e.Message}): '{line}'");
        }
    }
}

/// <summary>Ends a command with a message on stderr and an exit code, without a stack trace.</summary>
internal sealed class ToolException(int exitCode, string message) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
