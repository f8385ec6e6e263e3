using static Handoff.GenerationState;

namespace Handoff.Tests;

/// <summary>The transition table: exactly these changes of state are legal, every one of them
/// is reached by a real course of events, and the events arrive in the order the changes
/// happened (each event's state follows legally from the one before).</summary>
public sealed class UpgraderTransitionTests : IDisposable
{
    private static readonly (GenerationState From, GenerationState To)[] Legal =
    [
        (Starting, Ready),
        (Starting, Stopping),
        (Ready, Upgrading),
        (Ready, Stopping),
        (Upgrading, HandingOver),
        (Upgrading, Ready),
        (Upgrading, Stopping),
        (HandingOver, Superseded),
        (HandingOver, Ready),
        (Superseded, Stopped),
        (Stopping, Stopped),
    ];

    private readonly string _directory = Directory.CreateTempSubdirectory("handoff-transitions-").FullName;
    private readonly FakeLauncher _launcher = new();
    private readonly List<(GenerationState From, GenerationState To)> _seen = [];

    public static TheoryData<GenerationState, GenerationState> AllPairs()
    {
        var data = new TheoryData<GenerationState, GenerationState>();
        foreach (var from in Enum.GetValues<GenerationState>())
        {
            foreach (var to in Enum.GetValues<GenerationState>())
            {
                data.Add(from, to);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(AllPairs))]
    public void CheckTransition_EveryPair_AcceptsExactlyTheListedOnes(GenerationState from, GenerationState to)
    {
        if (Legal.Contains((from, to)))
        {
            Upgrader.CheckTransition(from, to);
        }
        else
        {
            var e = Assert.Throws<InvalidOperationException>(() => Upgrader.CheckTransition(from, to));
            Assert.Contains($"from {from} to {to}", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Transitions_AreTheDocumentedList()
    {
        Assert.Equal(Legal.Order(), Upgrader.Transitions.Order());
    }

    [Fact]
    public async Task EveryLegalTransition_IsReached_AndEventsFollowEachOtherLegally()
    {
        // Ready, then an upgrade that stands: Upgrading, HandingOver, Superseded; the stop ends it.
        using (var upgrader = Watch(Create()))
        {
            await upgrader.ReadyAsync();
            _launcher.Next = new FakeGeneration(pid: 4321, readyResult: null);
            Assert.True((await upgrader.UpgradeAsync()).Succeeded);
            await upgrader.StopAsync();
        }

        // A new generation that fails, then a stop of a serving generation.
        using (var upgrader = Watch(Create()))
        {
            await upgrader.ReadyAsync();
            _launcher.Next = new FakeGeneration(pid: 4322, readyResult: new(UpgradeFailureReason.Exited, "it exited (exit code 3) before reporting ready"));
            Assert.False((await upgrader.UpgradeAsync()).Succeeded);
            await upgrader.StopAsync();
        }

        // Stopped before it became ready.
        using (var upgrader = Watch(Create()))
        {
            await upgrader.StopAsync();
        }

        // Stopped during an upgrade: the failed upgrade's Ready must not follow Stopping.
        using (var upgrader = Watch(Create()))
        {
            await upgrader.ReadyAsync();
            var slow = new FakeGeneration(pid: 4323, readyResult: null, holdReady: true);
            _launcher.Next = slow;
            var upgrade = upgrader.UpgradeAsync();
            await slow.Waiting;
            await upgrader.StopAsync();
            Assert.False((await upgrade).Succeeded);
        }

        // Rolled back: the new generation withdraws within the rollback window.
        using (var upgrader = Watch(Create(TimeSpan.FromSeconds(30))))
        {
            await upgrader.ReadyAsync();
            var child = new FakeGeneration(pid: 4324, readyResult: null);
            _launcher.Next = child;
            var upgrade = upgrader.UpgradeAsync();
            await upgrader.WaitForStateAsync(HandingOver);
            child.Withdraw();
            Assert.Equal(UpgradeFailureReason.RolledBack, (await upgrade).Reason);
        }

        Assert.All(_seen, pair => Assert.Contains(pair, Legal));
        Assert.Equal(Legal.Order(), _seen.Distinct().Order());
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private Upgrader Create(TimeSpan? rollbackWindow = null) => TestUpgrader.Create(
        _launcher,
        new HandoffOptions { PidFile = Path.Combine(_directory, "app.pid"), RollbackWindow = rollbackWindow ?? TimeSpan.Zero });

    // Records each event's state against the one before it (an event out of order makes a pair
    // the table does not have). Checked at the end: a handler that threw would be lost.
    private Upgrader Watch(Upgrader upgrader)
    {
        var last = upgrader.State;
        upgrader.StateChanged += state =>
        {
            lock (_seen)
            {
                _seen.Add((last, state));
                last = state;
            }
        };
        return upgrader;
    }
}
