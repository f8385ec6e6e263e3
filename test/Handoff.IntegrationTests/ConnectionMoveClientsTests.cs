using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Handoff.Testing;
using Xunit.Abstractions;

namespace Handoff.IntegrationTests;

/// <summary>
/// Clients nobody here wrote keep their keep-alive connection across an upgrade when connections
/// move (issue 23): curl (several URLs on one connection, paced by <c>--rate</c>), Python's
/// <c>http.client</c> and Node.js's keep-alive <c>http.Agent</c>. None of them retries a request
/// on a connection the server closed; each says how many connections it opened.
/// </summary>
public sealed partial class ConnectionMoveClientsTests(ITestOutputHelper output)
{
    private const int Requests = 12;

    [Theory]
    [InlineData("curl")]
    [InlineData("python")]
    [InlineData("node")]
    public async Task ThirdPartyClient_KeepsItsConnectionAcrossAnUpgrade_AnsweredByBothGenerations(string client)
    {
        await using var server = await ServerProcess.StartAsync(arguments: ["--Handoff:MoveConnections=true", "--Handoff:RollbackWindow=0s"]);
        int old = server.CurrentPid;
        string url = $"http://127.0.0.1:{server.EndPoint.Port}/?sleep=0";
        var lines = new StringBuilder();
        using var process = Start(client, url, lines);
        try
        {
            // Upgrade once the client has had a few answers on its connection.
            await server.WaitUntilAsync(() => Answers(lines).Count >= 3, TimeSpan.FromSeconds(30), $"{client} to get three answers");
            int next = await server.UpgradeWithoutWaitingForExitAsync();
            Assert.Equal(0, await server.WaitForExitAsync(old, ServerProcess.StartTimeout));

            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(limit.Token);
            var answers = Answers(lines);
            output.WriteLine(lines.ToString());
            Assert.Equal(0, process.ExitCode);
            Assert.Equal(Requests, answers.Count);
            Assert.All(answers, a => Assert.Equal(200, a.Status));

            // One connection for all of them, answered first by the old pid, then by the new.
            Assert.Equal(1, client == "curl" ? answers.Sum(a => a.Connects) : answers[^1].Connects);
            Assert.Equal(old, answers[0].Pid);
            Assert.Equal(next, answers[^1].Pid);
            Assert.Equal(answers.Select(a => a.Pid).Distinct().Order(), new[] { old, next }.Order());
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }

            output.WriteLine(server.Output);
        }
    }

    private static Process Start(string client, string url, StringBuilder lines)
    {
        var info = client switch
        {
            "curl" => new ProcessStartInfo("curl", ["-sS", "--rate", "4/s", "-w", "code=%{http_code} connects=%{num_connects}\n", .. Enumerable.Repeat(url, Requests)]),
            "python" => new ProcessStartInfo("python3", ["-c", PythonClient, url, Requests.ToString(CultureInfo.InvariantCulture)]),
            _ => new ProcessStartInfo(NodeHttp2Load.NodePath ?? "node", ["-e", NodeClient, url, Requests.ToString(CultureInfo.InvariantCulture)]),
        };
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => Append(lines, e.Data);
        process.ErrorDataReceived += (_, e) => Append(lines, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static void Append(StringBuilder lines, string? line)
    {
        if (line is not null)
        {
            lock (lines)
            {
                lines.AppendLine(line);
            }
        }
    }

    // Each answer: the pid in its body ("pid:N"), then "code=S connects=C" (connections opened so far).
    private static List<(int Pid, int Status, int Connects)> Answers(StringBuilder lines)
    {
        string text;
        lock (lines)
        {
            text = lines.ToString();
        }

        var pids = PidPattern().Matches(text);
        var codes = CodePattern().Matches(text);
        return [.. codes.Select((c, i) => (
            i < pids.Count ? int.Parse(pids[i].Groups[1].Value, CultureInfo.InvariantCulture) : 0,
            int.Parse(c.Groups[1].Value, CultureInfo.InvariantCulture),
            int.Parse(c.Groups[2].Value, CultureInfo.InvariantCulture)))];
    }

    [GeneratedRegex(@"pid:(\d+)")]
    private static partial Regex PidPattern();

    [GeneratedRegex(@"code=(\d+) connects=(\d+)")]
    private static partial Regex CodePattern();

    // curl's num_connects is per transfer (0 on a reused connection); these two count in total.
    private const string PythonClient = """
        import http.client, sys, time, urllib.parse
        url = urllib.parse.urlsplit(sys.argv[1]); n = int(sys.argv[2])
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        opened = 0
        for i in range(n):
            if c.sock is None:
                opened += 1
            c.request("GET", url.path + "?" + url.query)
            r = c.getresponse()
            body = r.read().decode()
            print(body.splitlines()[0], f"code={r.status} connects={opened}", flush=True)
            time.sleep(0.25)
        """;

    private const string NodeClient = """
        const http = require('http');
        const [url, n] = [process.argv[1], Number(process.argv[2])];
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        let opened = 0;
        function one(i) {
          const req = http.get(url, { agent }, res => {
            let body = '';
            res.on('data', d => body += d);
            res.on('end', () => {
              console.log(body.split('\n')[0] + ` code=${res.statusCode} connects=${opened}`);
              if (i + 1 < n) setTimeout(() => one(i + 1), 250); else agent.destroy();
            });
          });
          req.on('socket', s => { if (!s.counted) { s.counted = true; opened++; } });
          req.on('error', e => { console.log('error ' + e.message); process.exit(1); });
        }
        one(0);
        """;
}
