using Handoff.AspNetCore;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds work a new generation finishes before it reports ready.</summary>
public static class HandoffWarmUpServiceCollectionExtensions
{
    /// <summary>
    /// Adds work the new generation must finish before it reports ready, e.g. filling caches or
    /// opening database connections: until it has, the old generation keeps serving, and if it
    /// throws, the upgrade fails and the old generation goes on as if nothing happened.
    /// </summary>
    /// <remarks>
    /// Each warm-up runs once per process, after the host's <c>ApplicationStarted</c>, with the
    /// application's services and a token cancelled when the host stops; several run one after
    /// another in the order they were added. Their time counts against
    /// <c>Handoff:UpgradeTimeout</c>, after which the new generation is stopped. The first
    /// generation runs them too, before it reports ready to systemd. Needs <c>UseHandoff()</c>.
    /// With the core API alone, do this work before <c>Upgrader.ReadyAsync()</c>.
    /// </remarks>
    /// <param name="services">The application's services.</param>
    /// <param name="warmUp">The work: the application's services and the host's stopping token.</param>
    public static IServiceCollection AddHandoffWarmUp(this IServiceCollection services, Func<IServiceProvider, CancellationToken, Task> warmUp)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(warmUp);
        return services.AddSingleton(new HandoffWarmUp(warmUp));
    }
}
