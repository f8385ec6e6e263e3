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
        return builder.Add(new HealthCheckRegistration(
            name,
            services => new HandoffHealthCheck(services.GetService<Upgrader>() ?? throw new InvalidOperationException("AddHealthChecks().AddHandoff() needs Handoff: call builder.WebHost.UseHandoff() in Program.cs (Handoff runs on Linux only).")),
            failureStatus,
            tags));
    }
}
