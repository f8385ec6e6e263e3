using System.Net.Sockets;
using System.Text;

namespace Handoff.Tests.Systemd;

/// <summary>
/// A stand-in for systemd's notification socket: a real Unix datagram socket that collects
/// every message. Like systemd it drops the descriptors a message carries (the kernel closes
/// them when the receiver takes no control data), which is what completes a BARRIER=1 wait.
/// </summary>
internal sealed class FakeNotifySocket : IDisposable
{
    private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
    private readonly List<string> _messages = [];
    private readonly Task _receiving;

    public FakeNotifySocket(string path)
    {
        Path = path;
        _socket.Bind(new UnixDomainSocketEndPoint(path.StartsWith('@') ? "\0" + path[1..] : path));
        _receiving = Task.Run(Receive);
    }

    /// <summary>The value for NOTIFY_SOCKET.</summary>
    public string Path { get; }

    public IReadOnlyList<string> Messages
    {
        get
        {
            lock (_messages)
            {
                return [.. _messages];
            }
        }
    }

    /// <summary>The messages so far, each with its lines in order, STATUS= lines left out
    /// unless <paramref name="withStatus"/>.</summary>
    public List<string> Assignments(bool withStatus = false) =>
        [.. Messages.Select(m => string.Join(' ', m.Split('\n').Where(line => withStatus || !line.StartsWith("STATUS=", StringComparison.Ordinal))))];

    /// <summary>Waits (bounded) until <paramref name="count"/> messages have arrived, and
    /// returns them as <see cref="Assignments"/> does.</summary>
    public async Task<List<string>> WaitForCountAsync(int count, bool withStatus = false)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (Messages.Count < count)
        {
            await Task.Delay(5, timeout.Token);
        }

        return Assignments(withStatus);
    }

    /// <summary>Waits (bounded) until a message satisfies <paramref name="match"/>.</summary>
    public async Task<string> WaitForAsync(Func<string, bool> match)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            if (Messages.FirstOrDefault(match) is { } found)
            {
                return found;
            }

            await Task.Delay(5, timeout.Token);
        }
    }

    public void Dispose()
    {
        _socket.Dispose();
        try
        {
            _receiving.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }

        if (!Path.StartsWith('@'))
        {
            File.Delete(Path);
        }
    }

    private void Receive()
    {
        byte[] buffer = new byte[8192];
        while (true)
        {
            int n;
            try
            {
                n = _socket.Receive(buffer);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }

            lock (_messages)
            {
                _messages.Add(Encoding.UTF8.GetString(buffer, 0, n));
            }
        }
    }
}
