namespace Handoff;

/// <summary>
/// Marks an endpoint whose WebSockets Handoff leaves open when the generation drains. By
/// default a drain closes every WebSocket accepted through ASP.NET Core with status 1012
/// (Service Restart), so its client reconnects to the new generation at once instead of
/// holding the old one until <see cref="HandoffOptions.DrainTimeout"/>. An endpoint marked with
/// this attribute ends its WebSockets itself (for example on <see cref="Upgrader.Draining"/>),
/// or at the drain timeout.
/// </summary>
/// <example><code>app.Map("/feed", handler).WithMetadata(new HandoffKeepWebSocketsOpenAttribute());</code></example>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Method)]
public sealed class HandoffKeepWebSocketsOpenAttribute : Attribute;
