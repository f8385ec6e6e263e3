using Handoff.AspNetCore;
using Microsoft.AspNetCore.Connections;

namespace Handoff.Tests.AspNetCore;

public sealed class ConnectionTableTests
{
    [Fact]
    public void AddAndRemove_TheWalkSeesWhatIsInTheTable_SlotsAreReused()
    {
        var table = new ConnectionTable();
        var connections = Enumerable.Range(0, 100).Select(i => Connection($"c{i}")).ToList();
        foreach (var connection in connections)
        {
            table.Add(connection);
        }

        foreach (var connection in connections.Where((_, i) => i % 2 == 0))
        {
            Assert.True(table.Remove(connection));
            Assert.False(table.Remove(connection)); // once only
        }

        Assert.Equal(50, table.Count);
        Assert.Equal(connections.Where((_, i) => i % 2 == 1).Select(c => c.Id).Order(), Walk(table).Select(c => c.Id).Order());

        // The freed slots take the next connections: the table does not grow.
        var again = Enumerable.Range(0, 50).Select(i => Connection($"d{i}")).ToList();
        foreach (var connection in again)
        {
            table.Add(connection);
        }

        Assert.Equal(100, table.Count);
        Assert.True(again.All(c => c.Slot < 128));
        Assert.Equal(100, Walk(table).Distinct().Count());
    }

    [Fact]
    public void Walk_WhileConnectionsComeAndGo_SeesEveryConnectionThatStaysExactlyOnce()
    {
        var table = new ConnectionTable();
        var staying = Enumerable.Range(0, 1000).Select(i => Connection($"s{i}")).ToList();
        foreach (var connection in staying)
        {
            table.Add(connection);
        }

        var seen = new List<DrainableConnection>();
        int step = 0;
        foreach (var connection in table)
        {
            seen.Add(connection);

            // Others arrive (the table grows under the walk) and leave meanwhile.
            var passing = Connection($"p{step++}");
            table.Add(passing);
            table.Add(Connection($"q{step}"));
            table.Remove(passing);
        }

        Assert.Equal(staying.Count, seen.Count(staying.Contains));
        Assert.Equal(seen.Count, seen.Distinct().Count());
    }

    [Fact]
    public async Task Walk_WhileTwoThreadsAddAndRemoveAndTheTableGrows_SeesEveryConnectionThatStays()
    {
        var table = new ConnectionTable();
        var staying = Enumerable.Range(0, 50).Select(i => Connection($"s{i}")).ToArray();
        foreach (var connection in staying)
        {
            table.Add(connection);
        }

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        var churn = Enumerable.Range(0, 2).Select(seed => Task.Run(() =>
        {
            var mine = new List<DrainableConnection>();
            var random = new Random(seed);
            while (!stop.IsCancellationRequested)
            {
                if (mine.Count < 3000 && random.Next(3) != 0)
                {
                    var connection = Connection("x");
                    table.Add(connection);
                    mine.Add(connection);
                }
                else if (mine.Count > 0)
                {
                    int k = random.Next(mine.Count);
                    Assert.True(table.Remove(mine[k]));
                    mine.RemoveAt(k);
                }
            }
        })).ToArray();

        int walks = 0;
        while (!stop.IsCancellationRequested)
        {
            var seen = Walk(table).ToHashSet();
            Assert.All(staying, connection => Assert.Contains(connection, seen));
            walks++;
        }

        await Task.WhenAll(churn);
        Assert.True(walks > 10);
    }

    private static List<DrainableConnection> Walk(ConnectionTable table)
    {
        var list = new List<DrainableConnection>();
        foreach (var connection in table)
        {
            list.Add(connection);
        }

        return list;
    }

    private static DrainableConnection Connection(string id) => new(new DefaultConnectionContext(id));
}
