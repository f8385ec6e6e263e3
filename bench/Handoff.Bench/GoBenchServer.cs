using System.Diagnostics;
using System.Net;
using Handoff.Testing;

namespace Handoff.Bench;

/// <summary>
/// The Go systems the project grew from, built from Debian's packages (bench/go): facebookgo/grace
/// (gracehttp; SIGUSR2; the new process sends SIGTERM to the old one once it listens),
/// cloudflare/tableflip (SIGHUP; the new process reports ready, then the old one shuts down) and
/// the second article's net/http <c>Shutdown</c> demo (SIGHUP; the old process starts a new one
/// with the listener at fd 3 and shuts down at once, within 20 s). Each serves the same endpoint
/// as TestServer.
/// </summary>
internal sealed class GoBenchServer : BenchServer
{
    /// <summary>The systems, by the name the scenarios use.</summary>
    public static readonly IReadOnlyList<string> Systems = ["grace", "tableflip", "shutdown"];

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly string _system;
    private readonly HashSet<int> _pids = [];
    private Process? _first;
    private int _serving;

    public GoBenchServer(string system, string directory, int port)
        : base(directory, port, http2: false, tls: false)
    {
        _system = Systems.Contains(system) ? system : throw new ArgumentException($"unknown Go system '{system}'", nameof(system));
    }

    public override string Name => _system;

    public override string ActionName => "upgrade";

    public override int ServingPid => _serving;

    /// <summary>Where bench/run builds the programs.</summary>
    public static string Executable(string root, string system) => Path.Combine(root, "bench", "go", "bin", system + "demo");

    private string PidFilePath => Path.Combine(Directory, "app.pid");

    private int UpgradeSignal => _system == "grace" ? 12 : 1; // SIGUSR2, else SIGHUP

    public override async Task StartAsync()
    {
        string program = Executable(TestAssets.RepositoryRoot, _system);
        if (!File.Exists(program))
        {
            throw new InvalidOperationException($"{program} is missing: bench/run builds it (Go from Debian's golang-go).");
        }

        List<string> arguments = ["-addr", $"127.0.0.1:{Port}"];
        if (_system == "tableflip")
        {
            arguments.AddRange(["-pid-file", PidFilePath]);
        }

        _first = BenchProcess.Start(program, arguments, Path.Combine(Directory, "server.log"));
        _pids.Add(_first.Id);
        await BenchProcess.WaitForPortAsync(Port, Patience);
        _serving = await ProbePidAsync();
    }

    public override async Task<ActionTiming> ActAsync()
    {
        int old = _serving;
        var at = DateTime.UtcNow;
        BenchProcess.Signal(old, UpgradeSignal);
        var deadline = at + Patience;

        // Ready: a new connection reaches another process (tableflip: the pid file names it,
        // written once it reported ready).
        int next = old;
        while ((next == old || next == 0) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(2);
            next = _system == "tableflip" ? Handoff.PidFile.Read(PidFilePath) ?? old : await ProbePidAsync();
        }

        double toReady = Since(at);
        var ready = DateTime.UtcNow;
        _serving = next;
        _pids.Add(next);
        bool gone = await BenchProcess.WaitGoneAsync(old, _first, Patience);
        return new ActionTiming(at, toReady, Since(ready), gone && next != old && next > 0);
    }

    public override async ValueTask DisposeAsync()
    {
        await BenchProcess.StopAllAsync([.. _pids], _first, TimeSpan.FromSeconds(40));
        _first?.Dispose();
    }

    private async Task<int> ProbePidAsync()
    {
        try
        {
            return (await HttpProbe.GetAsync(new IPEndPoint(IPAddress.Loopback, Port), "/", TimeSpan.FromSeconds(10))).Pid;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or OperationCanceledException)
        {
            return 0; // between two processes, or busy: asked again
        }
    }
}
