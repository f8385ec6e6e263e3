using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>A server on Handoff's core API alone (samples/RawTcpServer), without ASP.NET Core.</summary>
public sealed partial class RawTcpServerTests
{
    private static readonly string RawTcpServer = typeof(RawTcpServerTests).Assembly
        .GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "RawTcpServer").Value!;

    [Fact]
    public async Task Upgrade_RawSocketServer_HandsOverAndOldExitsZero()
    {
        string directory = TestAssets.CreateTempDirectory();
        string pidFile = Path.Combine(directory, "raw.pid");
        var info = new ProcessStartInfo(RawTcpServer, ["127.0.0.1:0", pidFile]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var first = Process.Start(info)!;
        var output = new StringBuilder();
        first.OutputDataReceived += (_, e) => { lock (output) { output.AppendLine(e.Data); } };
        first.BeginOutputReadLine();
        string Output() { lock (output) { return output.ToString(); } }
        int second = 0;
        try
        {
            await Until(() => PidFile.Read(pidFile) == first.Id && ListeningRegex().IsMatch(Output()), "the first generation");
            var endPoint = new IPEndPoint(IPAddress.Loopback, int.Parse(ListeningRegex().Match(Output()).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            Assert.StartsWith($"pid:{first.Id}\nhello", await AskAsync(endPoint, "hello"), StringComparison.Ordinal);

            HelloSleepServer.Signal(first.Id, 12);
            await Until(() => PidFile.Read(pidFile) is { } pid && pid != first.Id, "the second generation");
            second = PidFile.Read(pidFile)!.Value;
            await Until(() => first.HasExited, "the first generation to exit");

            Assert.Equal(0, first.ExitCode);
            Assert.StartsWith($"pid:{second}\nagain", await AskAsync(endPoint, "again"), StringComparison.Ordinal);
            Assert.Contains($"pid {second} generation 2 listening on {endPoint}", Output(), StringComparison.Ordinal);

            HelloSleepServer.Signal(second, 15);
            Assert.Equal(0, await ProcessTable.WaitForExitAsync(second, TimeSpan.FromSeconds(30)));
            Assert.False(File.Exists(pidFile));
        }
        finally
        {
            ProcessTable.SignalTrees([first.Id, second], 9);
            if (second != 0)
            {
                try
                {
                    await ProcessTable.WaitForExitAsync(second, TimeSpan.FromSeconds(10));
                }
                catch (TimeoutException)
                {
                }
            }

            Directory.Delete(directory, recursive: true);
        }
    }

    private static async Task<string> AskAsync(EndPoint endPoint, string line)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint, cts.Token);
        await socket.SendAsync(Encoding.UTF8.GetBytes(line + "\n"), cts.Token);
        var received = new List<byte>();
        var buffer = new byte[256];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, cts.Token)) > 0)
        {
            received.AddRange(buffer.AsSpan(0, n));
        }

        return Encoding.UTF8.GetString([.. received]);
    }

    private static async Task Until(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("timed out waiting for " + what);
            }

            await Task.Delay(20);
        }
    }

    [GeneratedRegex(@"listening on 127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningRegex();
}
