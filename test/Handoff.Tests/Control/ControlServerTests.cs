using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;

namespace Handoff.Tests.Control;

/// <summary>The control socket's protocol against an <see cref="Upgrader"/> whose new
/// generations are fakes: a real Unix socket, real requests.</summary>
public sealed class ControlServerTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-control-").FullName;
    private readonly FakeLauncher _launcher = new();

    private string SocketPath => Path.Combine(_directory, "control.sock");

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task Status_WhenReady_AnswersWithGenerationListenersAndNoLastUpgrade()
    {
        using var upgrader = Create();
        await upgrader.ReadyAsync();

        var answers = await RequestAsync("status\n");

        var status = Assert.Single(answers);
        Assert.Equal(1, status.GetProperty("protocol").GetInt32());
        Assert.Equal("status", status.GetProperty("type").GetString());
        Assert.Equal(Environment.ProcessId, status.GetProperty("pid").GetInt32());
        Assert.Equal(1, status.GetProperty("generation").GetInt32());
        Assert.Equal("serving", status.GetProperty("state").GetString());
        Assert.Equal(SocketPath, status.GetProperty("controlSocket").GetString());
        Assert.Equal(0, status.GetProperty("listeners").GetArrayLength()); // the control socket is not listed
        Assert.Equal(JsonValueKind.Null, status.GetProperty("openConnections").ValueKind);
        Assert.Equal(JsonValueKind.Null, status.GetProperty("lastUpgrade").ValueKind);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(SocketPath));
    }

    [Fact]
    public async Task Upgrade_Succeeds_AnswersUpgradingThenTheResult()
    {
        using var upgrader = Create();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);

        var answers = await RequestAsync("upgrade\n");

        Assert.Equal(2, answers.Count);
        Assert.Equal("upgrading", answers[0].GetProperty("type").GetString());
        var result = answers[1];
        Assert.Equal("result", result.GetProperty("type").GetString());
        Assert.Equal("upgraded", result.GetProperty("outcome").GetString());
        Assert.Equal(Environment.ProcessId, result.GetProperty("oldPid").GetInt32());
        Assert.Equal(4321, result.GetProperty("newPid").GetInt32());
        Assert.Equal(2, result.GetProperty("generation").GetInt32());
        Assert.False(result.TryGetProperty("reason", out _));
    }

    [Fact]
    public async Task Upgrade_NewGenerationFails_AnswersFailedWithTheReason()
    {
        using var upgrader = Create();
        await upgrader.ReadyAsync();
        _launcher.Next = new FakeGeneration(pid: 1111, readyResult: new(UpgradeFailureReason.Exited, "it exited (exit code 3) before reporting ready"));

        var result = (await RequestAsync("upgrade\n"))[^1];

        Assert.Equal("failed", result.GetProperty("outcome").GetString());
        Assert.Equal("new generation 2 (pid 1111) failed: it exited (exit code 3) before reporting ready; it was stopped (exit code 0 after SIGTERM)", result.GetProperty("reason").GetString());
        Assert.Equal("exited", result.GetProperty("errorType").GetString());
    }

    [Fact]
    public async Task Upgrade_WhileAnotherRuns_WaitsItsTurn_AndAnswersWithItsOwnOutcome()
    {
        using var upgrader = Create();
        await upgrader.ReadyAsync();
        var broken = new FakeGeneration(pid: 5, readyResult: new(UpgradeFailureReason.Exited, "it exited (exit code 1) before reporting ready"), holdReady: true);
        _launcher.Next = broken;
        var first = upgrader.UpgradeAsync();
        await broken.Waiting;

        var answering = RequestAsync("upgrade\n");
        await Task.Delay(100);
        Assert.False(answering.IsCompleted);
        _launcher.Next = new FakeGeneration(pid: 6, readyResult: null);
        broken.Release();
        Assert.False((await first).Succeeded);

        var result = (await answering.WaitAsync(TimeSpan.FromSeconds(10)))[^1];
        Assert.Equal("upgraded", result.GetProperty("outcome").GetString());
        Assert.Equal(6, result.GetProperty("newPid").GetInt32());
    }

    [Theory]
    [InlineData("reboot\n", "unknown request 'reboot'")]
    [InlineData("reboot", "unknown request 'reboot'")]
    [InlineData("x300", "the request is longer than 256 bytes")]
    [InlineData("x70000", "the request is longer than 256 bytes")]
    [InlineData("x1048576\n", "the request is longer than 256 bytes")]
    [InlineData("x1048576", "the request is longer than 256 bytes")]
    public async Task BadRequest_AnswersAnErrorNamingIt(string request, string expected)
    {
        using var upgrader = Create();
        await upgrader.ReadyAsync();

        // xN: N bytes (more than the socket buffers hold: the client is still writing when the
        // server has read its first 256), then maybe the newline.
        if (request.StartsWith('x'))
        {
            int length = int.Parse(request[1..].TrimEnd('\n'), System.Globalization.CultureInfo.InvariantCulture);
            request = new string('x', length) + (request.EndsWith('\n') ? "\n" : "");
        }

        var answer = Assert.Single(await RequestAsync(request, closeAfterSending: true));

        Assert.Equal("error", answer.GetProperty("type").GetString());
        Assert.Contains(expected, answer.GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ConnectionClosedWithoutARequest_GetsNoAnswer_TheNextIsServed()
    {
        using var upgrader = Create();
        await upgrader.ReadyAsync();

        Assert.Empty(await RequestAsync("", closeAfterSending: true));
        Assert.Equal("status", Assert.Single(await RequestAsync("status\n")).GetProperty("type").GetString());
    }

    [Fact]
    public async Task NotReady_NothingIsAccepted_TheRequestWaitsInTheQueue()
    {
        using var upgrader = Create();
        var pending = RequestAsync("status\n");
        // An absence can only be watched for a while: no answer may come in this window before
        // ReadyAsync (the request waits in the accept queue); the answer after it is awaited.
        await Task.Delay(200);
        Assert.False(pending.IsCompleted);

        await upgrader.ReadyAsync();
        Assert.Equal("serving", Assert.Single(await pending).GetProperty("state").GetString());
    }

    [Fact]
    public async Task Stop_RemovesTheSocketPath()
    {
        var upgrader = Create();
        await upgrader.ReadyAsync();
        await upgrader.StopAsync();
        upgrader.Dispose();

        Assert.Null(Interop.Libc.FileType(SocketPath));
    }

    private Upgrader Create() =>
        new(new HandoffOptions { ControlSocket = SocketPath, RollbackWindow = TimeSpan.Zero }, Inheritance.None, new StartCommand(["/bin/sh"], "/", []), _launcher, NullLoggerFactory.Instance);

    private async Task<List<JsonElement>> RequestAsync(string request, bool closeAfterSending = false)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), timeout.Token);
        await socket.SendAsync(Encoding.UTF8.GetBytes(request), SocketFlags.None, timeout.Token);
        if (closeAfterSending)
        {
            socket.Shutdown(SocketShutdown.Send);
        }

        var received = new MemoryStream();
        byte[] buffer = new byte[4096];
        int read;
        while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
        {
            received.Write(buffer, 0, read);
        }

        return [.. Encoding.UTF8.GetString(received.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => JsonDocument.Parse(line).RootElement.Clone())];
    }
}
