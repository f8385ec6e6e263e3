using Handoff.AspNetCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Handoff.Tests.AspNetCore;

public sealed class HandoffHealthCheckTests
{
    private readonly FakeLauncher _launcher = new();

    [Fact]
    public async Task CheckHealthAsync_AcrossAGenerationsLife_HealthyOnlyWhileItServes()
    {
        using var upgrader = CreateUpgrader(TimeSpan.FromMinutes(5));
        var check = new HandoffHealthCheck(upgrader);

        var starting = await CheckAsync(check);
        await upgrader.ReadyAsync();
        var ready = await CheckAsync(check);
        var child = new FakeGeneration(pid: 4321, readyResult: null);
        _launcher.Next = child;
        var upgrade = upgrader.UpgradeAsync();
        await upgrader.WaitForStateAsync(GenerationState.HandingOver);
        var handingOver = await CheckAsync(check);
        var stop = upgrader.StopAsync(); // ends the rollback window: superseded, then stopped
        await upgrade.WaitAsync(TimeSpan.FromSeconds(30));
        await stop.WaitAsync(TimeSpan.FromSeconds(30));
        var stopped = await CheckAsync(check);

        Assert.Equal(HealthStatus.Unhealthy, starting.Status);
        Assert.Equal(HealthStatus.Healthy, ready.Status);
        Assert.Equal(HealthStatus.Unhealthy, handingOver.Status);
        Assert.Contains("a new generation took over", handingOver.Description, StringComparison.Ordinal);
        Assert.Equal(HealthStatus.Unhealthy, stopped.Status);
        Assert.Equal(1, ready.Data["generation"]);
    }

    [Fact]
    public async Task CheckHealthAsync_ShutdownDelay_UnhealthyAtOnceWhileStillAccepting()
    {
        using var upgrader = TestUpgrader.Create(_launcher, new HandoffOptions { ShutdownDelay = TimeSpan.FromMinutes(5) });
        var check = new HandoffHealthCheck(upgrader);
        await upgrader.ReadyAsync();

        var stop = upgrader.StopAsync();
        await upgrader.WaitForStateAsync(GenerationState.Stopping);
        var result = await CheckAsync(check);

        Assert.Equal(HealthStatus.Unhealthy, result.Status);
        Assert.Contains("shutting down", result.Description, StringComparison.Ordinal);
        Assert.True(upgrader.Listeners.Gate.IsOpen);
        upgrader.EndShutdownDelay();
        await stop.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task CheckHealthAsync_RegisteredFailureStatus_IsWhatItReports()
    {
        using var upgrader = CreateUpgrader(TimeSpan.Zero);
        var check = new HandoffHealthCheck(upgrader);

        var result = await check.CheckHealthAsync(new HealthCheckContext { Registration = new HealthCheckRegistration("handoff", check, HealthStatus.Degraded, null) });

        Assert.Equal(HealthStatus.Degraded, result.Status);
    }

    [Fact]
    public async Task AddHandoff_WithoutUseHandoff_ReportsUnhealthyNamingTheMissingCall()
    {
        var collection = new ServiceCollection().AddLogging();
        collection.AddHealthChecks().AddHandoff();
        using var services = collection.BuildServiceProvider();

        var report = await services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

        Assert.Equal(HealthStatus.Unhealthy, report.Status);
        Assert.Contains("UseHandoff()", report.Entries["handoff"].Description, StringComparison.Ordinal);
    }

    private static Task<HealthCheckResult> CheckAsync(HandoffHealthCheck check) =>
        check.CheckHealthAsync(new HealthCheckContext { Registration = new HealthCheckRegistration("handoff", check, null, null) });

    private Upgrader CreateUpgrader(TimeSpan rollbackWindow) =>
        TestUpgrader.Create(_launcher, new HandoffOptions { RollbackWindow = rollbackWindow });
}
