using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Handoff.AspNetCore;

/// <summary>
/// Healthy while this generation serves; unhealthy, with the reason, from the moment it stops
/// serving for good or is about to: it is handing over to a new generation, was superseded, or
/// is shutting down (including during <see cref="HandoffOptions.ShutdownDelay"/>, while it still
/// serves, so that load balancers and readiness probes take it out before it stops accepting).
/// </summary>
/// <remarks>
/// A probe that opens a new connection each time (the kubelet's do) always reaches the
/// generation that accepts. One that reuses a keep-alive connection may reach a draining
/// generation once: that answer is unhealthy and closes the connection, and the next probe
/// reaches the new generation (docs/kubernetes.md).
/// </remarks>
internal sealed class HandoffHealthCheck(Upgrader upgrader) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var state = upgrader.State;
        string who = string.Create(CultureInfo.InvariantCulture, $"Generation {upgrader.Generation} (pid {Environment.ProcessId})");
        var data = new Dictionary<string, object>
        {
            ["generation"] = upgrader.Generation,
            ["pid"] = Environment.ProcessId,
            ["state"] = state.ToString(),
        };
        var result = state switch
        {
            GenerationState.Ready => HealthCheckResult.Healthy($"{who} serves.", data),
            GenerationState.Upgrading => HealthCheckResult.Healthy($"{who} serves; a new generation is starting.", data),
            GenerationState.Starting => new HealthCheckResult(context.Registration.FailureStatus, $"{who} is starting and does not accept connections yet.", data: data),
            GenerationState.HandingOver => new HealthCheckResult(context.Registration.FailureStatus, $"{who} stopped accepting: a new generation took over, and this one drains.", data: data),
            GenerationState.Superseded => new HealthCheckResult(context.Registration.FailureStatus, string.Create(CultureInfo.InvariantCulture, $"{who} was superseded by pid {upgrader.SupersededBy?.NewPid} and drains."), data: data),
            _ => new HealthCheckResult(context.Registration.FailureStatus, $"{who} is shutting down.", data: data),
        };
        return Task.FromResult(result);
    }
}
