namespace Handoff.AspNetCore;

/// <summary>One warm-up added with <c>AddHandoffWarmUp</c>; the hosted service runs them all,
/// in the order they were added, before it reports ready.</summary>
internal sealed record HandoffWarmUp(Func<IServiceProvider, CancellationToken, Task> Run);
