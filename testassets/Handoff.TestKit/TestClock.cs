using Microsoft.Extensions.Time.Testing;

namespace Handoff.Tests;

/// <summary>A clock that moves only when told to, and that says when code under test has
/// started waiting on it: advancing before a timer exists would leave that timer waiting for
/// ever, so a test first waits for the timer, then advances.</summary>
internal sealed class TestClock : FakeTimeProvider
{
    private int _timers;
    private int _stepped;

    /// <summary>How many timers (a <c>Task.Delay</c>, a <c>WaitAsync</c> with a timeout) have
    /// been created on this clock.</summary>
    public int TimersCreated => Volatile.Read(ref _timers);

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = base.CreateTimer(callback, state, dueTime, period);
        Interlocked.Increment(ref _timers);
        return timer;
    }

    /// <summary>Waits (a real 30 s at most) until <paramref name="count"/> timers exist.</summary>
    public Task WaitForTimersAsync(int count) => UpgraderTestExtensions.WaitUntilAsync(() => TimersCreated >= count);

    /// <summary>One step of a loop that waits on this clock (a drain's tick): once a timer was
    /// created since the last step, moves the clock on by <paramref name="step"/>. A second
    /// loop that had not created its timer yet lags one step behind; none is left waiting.</summary>
    public async Task StepAsync(TimeSpan step)
    {
        await WaitForTimersAsync(_stepped + 1);
        _stepped = TimersCreated;
        Advance(step);
    }

    /// <summary>Steps until <paramref name="done"/> (at most 10,000 steps). Between steps it
    /// waits until either the code under test is done or it waits on a new timer: a loop's last
    /// turn creates none.</summary>
    public async Task StepUntilAsync(Func<bool> done, TimeSpan step)
    {
        for (int i = 0; i < 10_000; i++)
        {
            await UpgraderTestExtensions.WaitUntilAsync(() => done() || TimersCreated > _stepped);
            if (done())
            {
                return;
            }

            _stepped = TimersCreated;
            Advance(step);
        }

        throw new TimeoutException("still not done after 10,000 steps of the clock");
    }
}
