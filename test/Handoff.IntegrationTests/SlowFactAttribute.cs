namespace Handoff.IntegrationTests;

/// <summary>
/// A scenario too slow for every CI run (it repeats what faster tests cover at a larger scale,
/// or waits out long protocol timers). It runs with <c>bench/slow-tests</c>, which sets
/// <c>HANDOFF_SLOW_TESTS=1</c>; otherwise it is reported as skipped with that reason, never
/// dropped.
/// </summary>
public sealed class SlowFactAttribute : FactAttribute
{
    public const string Variable = "HANDOFF_SLOW_TESTS";

    public SlowFactAttribute()
    {
        if (Environment.GetEnvironmentVariable(Variable) != "1")
        {
            Skip = $"slow scenario: run bench/slow-tests ({Variable}=1)";
        }
    }
}

/// <summary><see cref="SlowFactAttribute"/> for a theory.</summary>
public sealed class SlowTheoryAttribute : TheoryAttribute
{
    public SlowTheoryAttribute()
    {
        if (Environment.GetEnvironmentVariable(SlowFactAttribute.Variable) != "1")
        {
            Skip = $"slow scenario: run bench/slow-tests ({SlowFactAttribute.Variable}=1)";
        }
    }
}
