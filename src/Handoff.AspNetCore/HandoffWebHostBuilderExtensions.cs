using Handoff;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>Adds Handoff to an ASP.NET Core host.</summary>
public static class HandoffWebHostBuilderExtensions
{
    /// <summary>
    /// Makes the server restartable and upgradable without dropping a request: on SIGUSR2 or
    /// SIGHUP (or <see cref="Upgrader.UpgradeAsync"/>) the running process starts the current
    /// build, hands it every Kestrel listening socket, and drains once the new process is ready.
    /// </summary>
    /// <remarks>
    /// Endpoints are configured as usual (<c>--urls</c>, <c>ASPNETCORE_URLS</c>,
    /// <c>Kestrel:Endpoints</c>, <c>options.Listen...</c>). Options come from the configuration
    /// section <c>Handoff</c> and then from <paramref name="configure"/>. The
    /// <see cref="Upgrader"/> is registered as a service. Does nothing on operating systems other
    /// than Linux.
    /// </remarks>
    public static IWebHostBuilder UseHandoff(this IWebHostBuilder builder, Action<HandoffOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        if (!OperatingSystem.IsLinux())
        {
            return builder;
        }

        return builder.ConfigureServices((context, services) =>
        {
            var options = services.AddOptions<HandoffOptions>().Bind(context.Configuration.GetSection(HandoffOptions.SectionName));
            if (configure is not null)
            {
                options.Configure(configure);
            }

            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HandoffOptions>, HandoffOptionsValidator>());
            options.ValidateOnStart();

            services.TryAddSingleton(provider => new Upgrader(
                provider.GetRequiredService<IOptions<HandoffOptions>>().Value,
                provider.GetRequiredService<ILoggerFactory>()));
            services.TryAddSingleton<ConnectionDrainer>();
            services.TryAddSingleton<AcceptGate>();

            // Registered after Kestrel's socket transport, so Kestrel asks this factory first
            // for TCP and Unix endpoints (see HandoffConnectionListenerFactory).
            services.AddSingleton<IConnectionListenerFactory, HandoffConnectionListenerFactory>();
            services.AddSingleton<IStartupFilter, DrainStartupFilter>();
            services.AddHostedService<HandoffHostedService>();

            // The host's own stop deadline must leave room for the drain.
            services.AddOptions<HostOptions>().PostConfigure<IOptions<HandoffOptions>>((host, handoff) =>
            {
                var needed = handoff.Value.DrainTimeout + TimeSpan.FromSeconds(5);
                if (host.ShutdownTimeout < needed)
                {
                    host.ShutdownTimeout = needed;
                }
            });
        });
    }
}
