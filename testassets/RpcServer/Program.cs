// gRPC and SignalR behind Handoff: what the integration tests call with Grpc.Net.Client and the
// .NET SignalR client across upgrades.
//
//   gRPC  handoff.test.Pids/Get    unary: the serving pid (after sleep_ms)
//         handoff.test.Pids/Watch  server stream: the pid every interval_ms; ends with
//                                  UNAVAILABLE when this generation drains
//   SignalR /hub                   Pid(sleepMs): the serving pid
//
// gRPC needs HTTP/2: without TLS, run it with --Kestrel:EndpointDefaults:Protocols=Http2.
using Grpc.Core;
using Handoff;
using Microsoft.AspNetCore.SignalR;
using RpcServer;

var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.WebHost.UseHandoff();
builder.Services.AddGrpc();
builder.Services.AddSignalR();

var app = builder.Build();
app.MapGrpcService<PidService>();
app.MapHub<PidHub>("/hub");
app.Run();

/// <summary>The gRPC service of pids.proto.</summary>
internal sealed class PidService(Upgrader upgrader) : Pids.PidsBase
{
    public override async Task<PidReply> Get(PidRequest request, ServerCallContext context)
    {
        if (request.SleepMs > 0)
        {
            await Task.Delay(request.SleepMs, context.CancellationToken);
        }

        return new PidReply { Pid = Environment.ProcessId };
    }

    public override async Task Watch(WatchRequest request, IServerStreamWriter<PidReply> responseStream, ServerCallContext context)
    {
        // A stream never ends by itself: it would hold this generation until
        // Handoff:DrainTimeout. It ends when the generation drains instead, with UNAVAILABLE,
        // which tells the client to call again (it reaches the new generation); a call that
        // arrives while this generation drains gets UNAVAILABLE at once. The drain's token goes
        // to the wait only, never to WriteAsync: gRPC resets a stream whose write token is
        // cancelled with RST_STREAM(CANCEL), which the client reports as CANCELLED, before any
        // status could tell it to call again.
        var draining = upgrader.Draining;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, draining);
        try
        {
            while (!draining.IsCancellationRequested)
            {
                await responseStream.WriteAsync(new PidReply { Pid = Environment.ProcessId }, context.CancellationToken);
                await Task.Delay(Math.Max(1, request.IntervalMs), stop.Token);
            }
        }
        catch (OperationCanceledException) when (draining.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
        }

        throw new RpcException(new Status(StatusCode.Unavailable, "this server is restarting; call again"));
    }
}

/// <summary>The SignalR hub at /hub.</summary>
internal sealed class PidHub : Hub
{
    public async Task<int> Pid(int sleepMs)
    {
        if (sleepMs > 0)
        {
            await Task.Delay(sleepMs, Context.ConnectionAborted);
        }

        return Environment.ProcessId;
    }
}
