#pragma warning disable CA1050 // The runtime looks for a type named StartupHook in the global namespace.

/// <summary>
/// The .NET startup hook of a new generation: the previous generation starts it with
/// <c>DOTNET_STARTUP_HOOKS=Handoff</c>, so the runtime calls <see cref="Initialize"/> before the
/// application's <c>Main</c>, and the handed descriptors are taken over (FD_CLOEXEC) and the
/// upgrade signals handled before any code of the application can start a process or receive one.
/// </summary>
internal static class StartupHook
{
    internal static void Initialize() => Handoff.EarlyStart.Run();
}
