using Handoff.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;

namespace Handoff.Tests.AspNetCore;

public sealed class UseHandoffTests
{
    [Fact]
    public void UseHandoff_CalledTwice_RegistersEverythingOnce()
    {
        var builder = WebApplication.CreateBuilder();

        builder.WebHost.UseHandoff();
        builder.WebHost.UseHandoff(o => o.DrainTimeout = TimeSpan.FromSeconds(10));

        Assert.Single(builder.Services, d => d.ImplementationType == typeof(HandoffHostedService));
        Assert.Single(builder.Services, d => d.ServiceType == typeof(IConnectionListenerFactory) && d.ImplementationType == typeof(HandoffConnectionListenerFactory));
        Assert.Single(builder.Services, d => d.ServiceType == typeof(IStartupFilter) && d.ImplementationType == typeof(DrainStartupFilter));
        Assert.Single(builder.Services, d => d.ServiceType == typeof(Upgrader));
        Assert.Single(builder.Services, d => d.ServiceType == typeof(IHostedService));
    }
}
