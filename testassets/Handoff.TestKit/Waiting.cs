namespace Handoff.Tests;

/// <summary>Waits that poll with a deadline (a real 30 s), never sleep and hope.</summary>
internal static class UpgraderTestExtensions
{
    public static Task WaitForStateAsync(this Upgrader upgrader, GenerationState state) =>
        WaitUntilAsync(() => upgrader.State == state);

    public static async Task WaitUntilAsync(Func<bool> condition)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!condition())
        {
            await Task.Delay(5, timeout.Token);
        }
    }
}
