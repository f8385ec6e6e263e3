using Handoff;
using Handoff.AspNetCore;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Handoff's health check.</summary>
public static class HandoffHealthChecksBuilderExtensions
{
    /// <summary>
    /// Adds a check that is healthy while this generation serves and unhealthy (with the
    /// reason) once it is handing over, superseded or shutting down, so that a load balancer or
    /// a readiness probe takes it out first. Map it with <c>app.MapHealthChecks("/healthz")</c>,
    /// which answers 503 when it is unhealthy. Needs <c>UseHandoff()</c>.
    /// </summary>
    /// <param name="builder">The health checks builder.</param>
    /// <param name="name">The check's name; default <c>handoff</c>.</param>
    /// <param name="failureStatus">What the check reports when this generation does not serve;
    /// default <see cref="HealthStatus.Unhealthy"/>.</param>
    /// <param name="tags">Tags to select the check by, e.g. <c>ready</c>.</param>
    public static IHealthChecksBuilder AddHandoff(this IHealthChecksBuilder builder, string name = "handoff", HealthStatus? failureStatus = null, IEnumerable<string>? tags = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Add(new HealthCheckRegistration(name, Create, failureStatus, tags));
    }

    private static IHealthCheck Create(IServiceProvider services)
    {
        if (services.GetService<Upgrader>() is { } upgrader)
        {
            return new HandoffHealthCheck(upgrader);
        }

        // UseHandoff() does nothing off Linux (a developer's machine): nothing to report there.
        // On Linux its absence is a mistake: the check says so (an exception thrown here would
        // escape the health check service as a 500 with a stack trace).
        return new Fixed(OperatingSystem.IsLinux()
            ? HealthCheckResult.Unhealthy("AddHealthChecks().AddHandoff() needs Handoff: call builder.WebHost.UseHandoff() in Program.cs.")
            : HealthCheckResult.Healthy("Handoff runs on Linux only; on this system UseHandoff() does nothing."));
    }

    private sealed class Fixed(HealthCheckResult result) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) => Task.FromResult(result);
    }
}
