using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Handoff.Testing;

namespace Handoff.Bench;

/// <summary>How TestServer runs in a benchmark.</summary>
internal enum KestrelMode
{
    /// <summary>With Handoff; action: upgrade by SIGUSR2.</summary>
    Handoff,

    /// <summary>samples/HelloAot published as NativeAOT (the executable named by
    /// <see cref="KestrelBenchServer.AotVariable"/>, which bench/run publishes), with Handoff;
    /// action: upgrade by SIGUSR2. Plain HTTP/1.1 only: the slim builder has no HTTPS.</summary>
    HandoffAot,

    /// <summary>Plain Kestrel; action: a naive restart (SIGTERM, wait, start), for contrast.</summary>
    Plain,

    /// <summary>Plain Kestrel under socket activation: the harness holds the listening socket, as
    /// systemd does for a socket unit, and passes it at fd 3 with LISTEN_FDS and LISTEN_PID
    /// (Kestrel's UseSystemd()); action: the same restart, but connections wait in the socket's
    /// queue instead of being refused. The fair plain-Kestrel baseline.</summary>
    SocketActivated,
}

/// <summary>
/// TestServer in one of its <see cref="KestrelMode"/>s.
/// </summary>
internal sealed class KestrelBenchServer : BenchServer
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly bool _handoff;
    private readonly KestrelMode _mode;
    private readonly HashSet<int> _pids = [];
    private readonly HashSet<int> _startedHere = [];
    private Process? _current;
    private Socket? _activationSocket;

    public KestrelBenchServer(KestrelMode mode, string directory, int port, bool http2, bool tls)
        : base(directory, port, http2, tls)
    {
        _mode = mode;
        _handoff = mode is KestrelMode.Handoff or KestrelMode.HandoffAot;
    }

    /// <summary>The environment variable that names the NativeAOT executable.</summary>
    public const string AotVariable = "HANDOFF_BENCH_AOT";

    public override string Name => _mode switch
    {
        KestrelMode.Handoff => "handoff",
        KestrelMode.HandoffAot => "handoff-aot",
        KestrelMode.Plain => "kestrel",
        _ => "kestrel-socket",
    };

    public override string ActionName => _handoff ? "upgrade" : "restart";

    public override int ServingPid => _handoff ? Handoff.PidFile.Read(PidFilePath) ?? 0 : _current?.Id ?? 0;

    private string PidFilePath => Path.Combine(Directory, "app.pid");

    public override async Task StartAsync()
    {
        var arguments = new List<string>
        {
            "--Handoff:PidFile=" + PidFilePath,
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:Handoff=Information",
        };
        if (Tls)
        {
            string pfx = File.Exists(Path.Combine(Directory, "server.pfx")) ? Path.Combine(Directory, "server.pfx") : WriteCertificate();
            arguments.AddRange([
                $"--Kestrel:Endpoints:Https:Url=https://127.0.0.1:{Port}",
                "--Kestrel:Endpoints:Https:Certificate:Path=" + pfx,
                "--Kestrel:Endpoints:Https:Certificate:Password=" + TestCertificate.Password,
                "--Kestrel:Endpoints:Https:Protocols=Http1AndHttp2"]);
        }
        else if (_mode != KestrelMode.SocketActivated)
        {
            arguments.AddRange(["--urls", $"http://127.0.0.1:{Port}"]);
        }

        if (!_handoff)
        {
            arguments.Add("--TestServer:NoHandoff=true");
        }

        if (Http2)
        {
            arguments.Add("--Kestrel:EndpointDefaults:Protocols=Http2");
        }

        string log = Path.Combine(Directory, "server.log");
        if (_mode == KestrelMode.SocketActivated)
        {
            if (Tls)
            {
                throw new InvalidOperationException("the socket-activated baseline serves plain HTTP only");
            }

            // The socket stays with the harness across restarts, as with systemd. The child gets
            // it at fd 3 (bash moves it there) with LISTEN_PID set to its own pid ($$ before exec).
            if (_activationSocket is null)
            {
                _activationSocket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                _activationSocket.Bind(new IPEndPoint(IPAddress.Loopback, Port));
                _activationSocket.Listen(4096);
            }

            arguments.Add("--Logging:LogLevel:Microsoft.Hosting.Lifetime=Information");
            long logOffset = File.Exists(log) ? new FileInfo(log).Length : 0;
            int fd = (int)_activationSocket.Handle;
            Interop.Libc.SetCloseOnExec(fd, false);
            try
            {
                _current = BenchProcess.Start(
                    "/bin/bash",
                    ["-c", $"exec 3<&{fd}- && LISTEN_FDS=1 LISTEN_PID=$$ exec \"$0\" \"$@\"", TestAssets.TestServerAppHost, .. arguments],
                    log);
            }
            finally
            {
                Interop.Libc.SetCloseOnExec(fd, true);
            }

            _startedHere.Add(_current.Id);
            await WaitStartedAsync(logOffset);
            return;
        }

        string executable = TestAssets.TestServerAppHost;
        if (_mode == KestrelMode.HandoffAot)
        {
            executable = Environment.GetEnvironmentVariable(AotVariable) is { Length: > 0 } aot && File.Exists(aot)
                ? aot
                : throw new InvalidOperationException($"{AotVariable} does not name the published NativeAOT sample; bench/run publishes samples/HelloAot and sets it.");
            if (Tls || Http2)
            {
                throw new InvalidOperationException("the NativeAOT sample serves plain HTTP/1.1 only");
            }

            arguments.Remove("--TestServer:NoHandoff=true");
        }

        _current = BenchProcess.Start(executable, arguments, log);
        _startedHere.Add(_current.Id);
        if (_handoff)
        {
            var deadline = DateTime.UtcNow + Patience;
            while (Handoff.PidFile.Read(PidFilePath) != _current.Id && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5);
            }
        }

        await BenchProcess.WaitForPortAsync(Port, Patience);
    }

    public override async Task<ActionTiming> ActAsync()
    {
        var at = DateTime.UtcNow;
        if (_handoff)
        {
            int old = ServingPid;
            BenchProcess.Signal(old, 12);
            var deadline = at + Patience;
            while ((ServingPid == old || ServingPid == 0) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(2);
            }

            double toReady = Since(at);
            int next = ServingPid;
            _pids.Add(next);
            var ready = DateTime.UtcNow;
            bool gone = await BenchProcess.WaitGoneAsync(old, _current, Patience);
            if (gone && old != _current?.Id)
            {
                _pids.Remove(old); // gone: its pid may be reused by anyone
            }

            // Took over: the old process is gone and the pid file still names the new one (a
            // rollback within RollbackWindow rewrites it to the old pid, which then stays).
            return new ActionTiming(at, toReady, Since(ready), gone && next > 0 && next != old && ServingPid == next);
        }

        var previous = _current!;
        BenchProcess.Signal(previous.Id, 15);
        bool stopped = await BenchProcess.WaitGoneAsync(previous.Id, previous, Patience);
        if (!stopped)
        {
            BenchProcess.Signal(previous.Id, 9);
            await previous.WaitForExitAsync();
        }

        _startedHere.Remove(previous.Id); // gone: its pid may be reused by anyone
        previous.Dispose();
        await StartAsync();
        return new ActionTiming(at, Since(at), 0, stopped); // a restart: until the new process accepts
    }

    /// <summary>Waits until the new process logs that it started (Kestrel accepts by then).
    /// Under socket activation a connect succeeds while no process accepts (it waits in the
    /// queue), so the port cannot say; and a probe request would wait behind the load's.</summary>
    private async Task WaitStartedAsync(long logOffset)
    {
        var deadline = DateTime.UtcNow + Patience;
        string log = Path.Combine(Directory, "server.log");
        while (true)
        {
            if (File.Exists(log))
            {
                await using var stream = new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                stream.Seek(Math.Min(logOffset, stream.Length), SeekOrigin.Begin);
                if ((await new StreamReader(stream).ReadToEndAsync()).Contains("Application started", StringComparison.Ordinal))
                {
                    return;
                }
            }

            if (_current!.HasExited || DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException($"{Name} did not start; see {log}");
            }

            await Task.Delay(5);
        }
    }

    public override async Task<double?> AllocatedBytesPerRequestAsync()
    {
        // GC.GetTotalAllocatedBytes(precise) before and after 10,000 requests on one connection,
        // after as many to warm up; the two /allocated requests themselves are in the count.
        const int Requests = 10_000;
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var probe = await HttpProbe.ConnectAsync(new IPEndPoint(IPAddress.Loopback, Port), limit.Token, Tls);
        for (int i = 0; i < Requests; i++)
        {
            await probe.GetAsync("/", keepAlive: true, limit.Token);
        }

        long before = long.Parse((await probe.GetAsync("/allocated", keepAlive: true, limit.Token)).Body, System.Globalization.CultureInfo.InvariantCulture);
        for (int i = 0; i < Requests; i++)
        {
            await probe.GetAsync("/", keepAlive: true, limit.Token);
        }

        long after = long.Parse((await probe.GetAsync("/allocated", keepAlive: true, limit.Token)).Body, System.Globalization.CultureInfo.InvariantCulture);
        return (double)(after - before) / Requests;
    }

    public override async ValueTask DisposeAsync()
    {
        await BenchProcess.StopAllAsync([.. _pids, .. _startedHere, ServingPid], _current, TimeSpan.FromSeconds(40));
        _current?.Dispose();
        _activationSocket?.Dispose();
    }
}
