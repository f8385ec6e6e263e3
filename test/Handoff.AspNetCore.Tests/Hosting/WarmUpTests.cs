using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Handoff.Tests.AspNetCore;

/// <summary>services.AddHandoffWarmUp in a real host with Kestrel on a loopback port.</summary>
public sealed class WarmUpTests
{
    [Fact]
    public async Task AddHandoffWarmUp_Several_RunInOrderWithTheServices_BeforeTheGenerationIsReady()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseHandoff().UseUrls("http://127.0.0.1:0");
        var ran = new List<(int WarmUp, GenerationState State)>();
        var second = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        builder.Services.AddHandoffWarmUp(async (services, _) =>
        {
            await Task.Yield();
            ran.Add((1, services.GetRequiredService<Upgrader>().State));
        });
        builder.Services.AddHandoffWarmUp(async (services, stopping) =>
        {
            ran.Add((2, services.GetRequiredService<Upgrader>().State));
            await second.Task.WaitAsync(stopping);
        });
        await using var app = builder.Build();
        var upgrader = app.Services.GetRequiredService<Upgrader>();

        await app.StartAsync();
        await UpgraderTestExtensions.WaitUntilAsync(() => ran.Count == 2);
        Assert.Equal(GenerationState.Starting, upgrader.State);
        second.SetResult();
        await upgrader.WaitForStateAsync(GenerationState.Ready);

        Assert.Equal([(1, GenerationState.Starting), (2, GenerationState.Starting)], ran);
        await app.StopAsync();
        Assert.Equal(GenerationState.Stopped, upgrader.State);
    }
}
