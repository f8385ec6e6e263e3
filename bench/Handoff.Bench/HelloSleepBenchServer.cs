using System.Diagnostics;
using Handoff.Testing;

namespace Handoff.Bench;

/// <summary>
/// HelloSleep, with Handoff (action: upgrade by SIGUSR2) or as plain Kestrel (action: naive
/// restart, SIGTERM then start again, for contrast).
/// </summary>
internal sealed class HelloSleepBenchServer : BenchServer
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly bool _handoff;
    private readonly HashSet<int> _pids = [];
    private readonly HashSet<int> _startedHere = [];
    private Process? _current;

    public HelloSleepBenchServer(bool handoff, string directory, int port, bool http2)
        : base(directory, port, http2)
    {
        _handoff = handoff;
    }

    public override string Name => _handoff ? "handoff" : "kestrel";

    public override string ActionName => _handoff ? "upgrade" : "restart";

    public override int ServingPid => _handoff ? Handoff.PidFile.Read(PidFilePath) ?? 0 : _current?.Id ?? 0;

    private string PidFilePath => Path.Combine(Directory, "app.pid");

    public override async Task StartAsync()
    {
        var arguments = new List<string>
        {
            "--urls", $"http://127.0.0.1:{Port}",
            "--Handoff:PidFile=" + PidFilePath,
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:Handoff=Information",
        };
        if (!_handoff)
        {
            arguments.Add("--HelloSleep:NoHandoff=true");
        }

        if (Http2)
        {
            arguments.Add("--Kestrel:EndpointDefaults:Protocols=Http2");
        }

        _current = BenchProcess.Start(TestAssets.HelloSleepAppHost, arguments, Path.Combine(Directory, "server.log"));
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
            bool mayReap = !_startedHere.Contains(old);
            var deadline = at + Patience;
            while ((ServingPid == old || ServingPid == 0) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(2);
            }

            double toReady = Since(at);
            bool ok = ServingPid != old;
            _pids.Add(ServingPid);
            var ready = DateTime.UtcNow;
            if (mayReap)
            {
                await BenchProcess.WaitGoneAsync(old, Patience);
            }
            else
            {
                await _current!.WaitForExitAsync();
            }

            return new ActionTiming(at, toReady, Since(ready), ok);
        }

        var previous = _current!;
        BenchProcess.Signal(previous.Id, 15);
        await previous.WaitForExitAsync();
        previous.Dispose();
        await StartAsync();
        return new ActionTiming(at, Since(at), 0, true);
    }

    public override async Task<double?> AllocatedBytesPerRequestAsync()
    {
        // GC.GetTotalAllocatedBytes(precise) before and after 10,000 requests on one connection,
        // after as many to warm up; the two /allocated requests themselves are in the count.
        const int Requests = 10_000;
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var probe = await HttpProbe.ConnectAsync(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, Port), limit.Token);
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
        var all = ProcessTable.SignalTrees([.. _pids, .. _startedHere, ServingPid], 15);
        foreach (int pid in all.Except(_startedHere))
        {
            await BenchProcess.WaitGoneAsync(pid, TimeSpan.FromSeconds(40));
        }

        if (_current is { } current)
        {
            await current.WaitForExitAsync();
            current.Dispose();
        }
    }
}
