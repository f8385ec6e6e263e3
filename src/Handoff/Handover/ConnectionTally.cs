using System.Collections.Concurrent;

namespace Handoff;

/// <summary>
/// What became of the connections of one move, by kind (<see cref="MoveKind"/>), outcome and,
/// for those that did not move, why: the source of <c>handoff.drain.connections</c> and
/// <c>handoff.moved_connections</c> and of <c>handoff status</c>. Counted once per connection,
/// never per request.
/// </summary>
internal sealed class ConnectionTally
{
    private readonly ConcurrentDictionary<Key, int> _counts = new();

    /// <summary>Counts <paramref name="count"/> connections.</summary>
    /// <param name="kind">What they carry.</param>
    /// <param name="outcome">One of the instrument's outcomes (moved, closed, drained;
    /// adopted, passed_on, closed).</param>
    /// <param name="reason">Why they did not move: one of a few fixed, lower-case words (a
    /// metric attribute: never free text).</param>
    /// <param name="count">How many.</param>
    public void Add(MoveKind kind, string outcome, string? reason = null, int count = 1)
    {
        if (count > 0)
        {
            _counts.AddOrUpdate(new Key(kind, outcome, reason), count, (_, sum) => sum + count);
        }
    }

    /// <summary>The counts so far, each (kind, outcome, reason) once.</summary>
    public IReadOnlyList<(MoveKind Kind, string Outcome, string? Reason, int Count)> Entries =>
        [.. _counts.Select(c => (c.Key.Kind, c.Key.Outcome, c.Key.Reason, c.Value)).OrderBy(e => e.Kind).ThenBy(e => e.Outcome, StringComparer.Ordinal).ThenBy(e => e.Reason, StringComparer.Ordinal)];

    /// <summary>How many connections of <paramref name="kind"/> had <paramref name="outcome"/>, whatever the reason.</summary>
    public int Count(MoveKind kind, string outcome) =>
        _counts.Where(c => c.Key.Kind == kind && c.Key.Outcome == outcome).Sum(c => c.Value);

    /// <summary>The name of a kind in metrics and in <c>handoff status --json</c>.</summary>
    public static string Name(MoveKind kind) => kind switch
    {
        MoveKind.Http1 => "http1",
        MoveKind.Tcp => "tcp",
        MoveKind.WebSocket => "websocket",
        _ => "unknown",
    };

    private readonly record struct Key(MoveKind Kind, string Outcome, string? Reason);
}
