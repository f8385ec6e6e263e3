using System.Diagnostics.Metrics;
using Handoff;
using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
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
    /// Makes the server restartable and upgradable without dropping a request: on SIGUSR2 (or
    /// <see cref="Upgrader.UpgradeAsync"/>) the running process starts the current build, hands
    /// it every Kestrel listening socket, and drains once the new process is ready.
    /// </summary>
    /// <remarks>
    /// Endpoints are configured as usual (<c>--urls</c>, <c>ASPNETCORE_URLS</c>,
    /// <c>Kestrel:Endpoints</c>, <c>options.Listen...</c>). Options come from the configuration
    /// section <c>Handoff</c> and then from <paramref name="configure"/>; invalid ones end the
    /// process at once with exit code 78 and a message naming the option, before anything binds.
    /// The <see cref="Upgrader"/> is registered as a service. A second call does nothing. Does
    /// nothing on operating systems other than Linux.
    /// </remarks>
    public static IWebHostBuilder UseHandoff(this IWebHostBuilder builder, Action<HandoffOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        if (!OperatingSystem.IsLinux())
        {
            return builder;
        }

        // Adopt what a previous generation handed over and handle SIGUSR2 now, before the rest of
        // Program.cs runs (a new generation has done this in its startup hook already).
        EarlyStart.Run();

        return builder.ConfigureServices((context, services) =>
        {
            if (services.Any(d => d.ServiceType == typeof(HandoffConfigurationWarnings)))
            {
                return;
            }

            var section = context.Configuration.GetSection(HandoffOptions.SectionName);
            var (errors, warnings) = CheckConfiguration(section, configure);
            errors.AddRange(Http3Refusal.Check(context.Configuration));
            if (errors.Count > 0)
            {
                ExitInvalid(errors);
            }

            services.AddSingleton(new HandoffConfigurationWarnings(warnings));
            var options = services.AddOptions<HandoffOptions>().Configure(o => HandoffConfiguration.Bind(section, o));
            if (configure is not null)
            {
                options.Configure(configure);
            }

            // Options configured elsewhere (services.Configure) are checked at host start too.
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HandoffOptions>, HandoffOptionsValidator>());
            options.ValidateOnStart();

            services.AddMetrics();
            services.TryAddSingleton(provider =>
            {
                var upgrader = new Upgrader(
                    provider.GetRequiredService<IOptions<HandoffOptions>>().Value,
                    provider.GetRequiredService<ILoggerFactory>(),
                    provider.GetService<IMeterFactory>());
                var drainer = provider.GetRequiredService<ConnectionDrainer>();
                upgrader.OpenConnections = () => drainer.Count;
                drainer.Metrics = upgrader.Metrics;
                upgrader.Metrics.ObserveDrainingConnections(() => drainer.IsDraining ? drainer.Count : 0);
                return upgrader;
            });
            services.TryAddSingleton<ConnectionDrainer>();
            services.TryAddSingleton<ConnectionAdoption>();
            services.TryAddSingleton<WebSocketMoves>();

            // Socket activation: with no address configured, serve every socket systemd passed,
            // as Kestrel's own UseSystemd() does; otherwise the configured addresses claim them.
            services.AddOptions<KestrelServerOptions>().PostConfigure<Upgrader>((kestrel, upgrader) =>
            {
                if (!HasConfiguredAddresses(context.Configuration))
                {
                    foreach (var activated in upgrader.Listeners.UnclaimedActivated)
                    {
                        kestrel.ListenHandle((ulong)activated.FileDescriptor);
                    }
                }
            });

            // Registered after Kestrel's socket transport, so Kestrel asks this factory first
            // for TCP and Unix endpoints (see HandoffConnectionListenerFactory).
            services.AddSingleton<IConnectionListenerFactory, HandoffConnectionListenerFactory>();
            services.AddSingleton<IMultiplexedConnectionListenerFactory, RefusingMultiplexedListenerFactory>();
            services.AddSingleton<IStartupFilter, DrainStartupFilter>();
            services.AddHostedService<HandoffHostedService>();

            // The host's own stop deadline must leave room for the drain.
            services.AddOptions<HostOptions>().PostConfigure<IOptions<HandoffOptions>>((host, handoff) =>
            {
                var needed = handoff.Value.ShutdownDelay + handoff.Value.DrainTimeout + handoff.Value.RollbackWindow + TimeSpan.FromSeconds(5);
                if (host.ShutdownTimeout < needed)
                {
                    host.ShutdownTimeout = needed;
                }
            });
        });
    }

    // The places Kestrel takes addresses from besides code (options.Listen...), which cannot be
    // seen from here; docs/systemd.md says to list activated addresses there.
    private static bool HasConfiguredAddresses(Microsoft.Extensions.Configuration.IConfiguration configuration) =>
        !string.IsNullOrEmpty(configuration["urls"]) ||
        !string.IsNullOrEmpty(configuration["http_ports"]) ||
        !string.IsNullOrEmpty(configuration["https_ports"]) ||
        configuration.GetSection("Kestrel:Endpoints").GetChildren().Any();

    private static (List<string> Errors, List<string> Warnings) CheckConfiguration(Microsoft.Extensions.Configuration.IConfiguration section, Action<HandoffOptions>? configure)
    {
        var probe = new HandoffOptions();
        var (errors, warnings) = HandoffConfiguration.Bind(section, probe);
        configure?.Invoke(probe);
        errors.AddRange(probe.Validate());
        if (errors.Count == 0 && probe.PidFile is { } pidFile && PidFile.CheckWritable(pidFile) is { } pidFileError)
        {
            errors.Add(pidFileError);
        }

        if (errors.Count == 0 && StartCommand.CheckWorkingDirectoryOption(probe.WorkingDirectory) is { } directoryError)
        {
            errors.Add(directoryError);
        }

        if (errors.Count == 0 && ControlServer.CheckPath(probe.ResolveControlSocket(Environment.GetEnvironmentVariable("RUNTIME_DIRECTORY")), EarlyStart.Run().ParentPid != 0) is { } controlError)
        {
            errors.Add(controlError);
        }

        return (errors, warnings);
    }

    // Before the host exists, so there is no logger yet and nothing to shut down: one line on
    // stderr in the console logger's shape, the reason sent to the previous generation (if this
    // is an upgrade), and a defined exit code instead of an exception's stack trace.
    private static void ExitInvalid(List<string> errors)
    {
        string message = "Invalid Handoff configuration: " + string.Join(" ", errors);
        EarlyStart.Run().ReadyPipe?.ReportFailed(message);
        Console.Error.WriteLine($"fail: Handoff[{ExitCodes.InvalidConfiguration}] {message} Exiting with code {ExitCodes.InvalidConfiguration}.");
        Environment.Exit(ExitCodes.InvalidConfiguration);
    }
}
