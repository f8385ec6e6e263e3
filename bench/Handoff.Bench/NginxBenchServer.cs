using System.Globalization;
using Handoff.Testing;

namespace Handoff.Bench;

/// <summary>
/// Debian's nginx with its own prefix and configuration on loopback, one worker, answering
/// <c>pid:$pid</c>. Action: the binary upgrade documented by nginx: USR2 to the master (it
/// starts a new master from the binary, which writes the pid file), then WINCH (old workers
/// stop gracefully) and QUIT (old master exits) to the old master.
/// </summary>
internal sealed class NginxBenchServer : BenchServer
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly HashSet<int> _masters = [];

    public NginxBenchServer(string directory, int port, bool http2, bool tls)
        : base(directory, port, http2, tls)
    {
    }

    public override string Name => "nginx";

    public override string ActionName => "upgrade";

    public override int ServingPid => ProcessTable.Descendants(Master) is [var worker, ..] ? worker : 0;

    private int Master => Handoff.PidFile.Read(PidFilePath) ?? 0;

    private string PidFilePath => Path.Combine(Directory, "nginx.pid");

    /// <summary>With <paramref name="tls"/>, HTTPS with server.crt and server.key from the
    /// directory, HTTP/2 and HTTP/1.1 by ALPN. Room for 10,000 idle connections and more.</summary>
    public static string Configuration(string directory, int port, bool http2, bool tls = false) => string.Create(CultureInfo.InvariantCulture, $$"""
        worker_processes 1;
        worker_rlimit_nofile 16384;
        pid {{directory}}/nginx.pid;
        error_log {{directory}}/error.log warn;
        events { worker_connections 12000; }
        http {
            access_log off;
            {{ReverseProxy.NginxTempPaths(directory)}}
            keepalive_requests 1000000;
            server {
                listen 127.0.0.1:{{port}}{{(tls ? " ssl http2" : http2 ? " http2" : "")}};
                {{(tls ? $"ssl_certificate {directory}/server.crt; ssl_certificate_key {directory}/server.key;" : "")}}
                location / { default_type text/plain; return 200 "pid:$pid\n"; }
            }
        }
        """);

    public override async Task StartAsync()
    {
        System.IO.Directory.CreateDirectory(Path.Combine(Directory, "tmp"));
        string config = Path.Combine(Directory, "nginx.conf");
        if (Tls)
        {
            WriteCertificate();
        }

        File.WriteAllText(config, Configuration(Directory, Port, Http2, Tls));
        // Started by absolute path: the binary upgrade re-executes argv[0] without a PATH search.
        string[] command = ["/usr/sbin/nginx", "-p", Directory, "-c", config];
        var (exit, output) = BenchProcess.ServerCpus is { } cpus
            ? await BenchProcess.RunAsync("taskset", ["-c", cpus, .. command], TimeSpan.FromSeconds(30))
            : await BenchProcess.RunAsync(command[0], command[1..], TimeSpan.FromSeconds(30));
        if (exit != 0)
        {
            throw new InvalidOperationException("nginx failed to start: " + output);
        }

        var deadline = DateTime.UtcNow + Patience;
        while (Master == 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5);
        }

        _masters.Add(Master);
        await BenchProcess.WaitForPortAsync(Port, Patience);
    }

    public override async Task<ActionTiming> ActAsync()
    {
        int old = Master;
        var at = DateTime.UtcNow;
        BenchProcess.Signal(old, 12);
        var deadline = at + Patience;
        while ((Master == old || Master == 0) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(2);
        }

        int next = Master;
        _masters.Add(next);

        // The new master is ready when its worker runs.
        while (!ProcessTable.Descendants(next).Any() && DateTime.UtcNow < deadline)
        {
            await Task.Delay(2);
        }

        double toReady = Since(at);
        var ready = DateTime.UtcNow;
        BenchProcess.Signal(old, 28); // WINCH
        BenchProcess.Signal(old, 3);  // QUIT
        bool gone = await BenchProcess.WaitGoneAsync(old, Patience);
        return new ActionTiming(at, toReady, Since(ready), gone && next != old && next > 0 && ProcessTable.Descendants(next).Any());
    }

    public override async ValueTask DisposeAsync()
    {
        var all = new HashSet<int>(_masters);
        foreach (int pid in all.ToList())
        {
            all.UnionWith(ProcessTable.Descendants(pid));
        }

        foreach (int master in _masters)
        {
            BenchProcess.Signal(master, 3); // QUIT: graceful
        }

        foreach (int pid in all)
        {
            if (!await BenchProcess.WaitGoneAsync(pid, TimeSpan.FromSeconds(30)))
            {
                BenchProcess.Signal(pid, 9); // not gone after a graceful QUIT: never into the next scenario
                _ = await BenchProcess.WaitGoneAsync(pid, TimeSpan.FromSeconds(10));
            }
        }
    }
}
