using Handoff.Tool;

namespace Handoff.Tests.Tool;

public sealed class StatusCommandTests
{
    [Fact]
    public void Format_ShowsEveryFactOnItsOwnLine()
    {
        const string Json = """
            {"protocol":1,"type":"status","pid":72,"generation":2,"state":"serving","startedAt":"2026-11-22T09:00:00.000Z","parentPid":50,
             "listeners":[{"address":"127.0.0.1:8080","inherited":true,"activated":false},{"address":"unix:/run/a.sock","inherited":true,"activated":true}],
             "controlSocket":"/run/myapp/handoff.sock","openConnections":12,
             "draining":[{"pid":50,"startedAt":"2026-11-22T08:00:00.000Z","openConnections":3}],
             "lastUpgrade":{"outcome":"succeeded","at":"2026-11-22T09:00:01.000Z","detail":"generation 2 (pid 72) took over from pid 50"}}
            """;
        var status = ControlClient.Read(Json.ReplaceLineEndings(""), ControlJson.Wire.StatusAnswer);

        string text = StatusCommand.Format(status, new DateTimeOffset(2026, 11, 22, 9, 3, 12, TimeSpan.Zero));

        Assert.Equal(
            """
            generation 2, pid 72: serving since 2026-11-22 09:00:00 UTC (3m 12s)
            listeners: 127.0.0.1:8080, unix:/run/a.sock (socket activation)
            control socket: /run/myapp/handoff.sock
            open connections: 12
            draining: pid 50 (3 connections)
            last upgrade: succeeded at 2026-11-22 09:00:01 UTC: generation 2 (pid 72) took over from pid 50
            """.ReplaceLineEndings("\n"),
            text.ReplaceLineEndings("\n"));
    }

    [Fact]
    public void Format_ConnectionsMovedHere_OneLineWithTheirOutcomes()
    {
        var status = ControlClient.Read("""{"pid":9,"generation":3,"state":"serving","listeners":[],"controlSocket":"/c","openConnections":40,"draining":[],"lastUpgrade":null,"movedHere":{"adopted":38,"closed":1,"passedOn":0,"ended":false}}""", ControlJson.Wire.StatusAnswer);

        string text = StatusCommand.Format(status, DateTimeOffset.UnixEpoch);

        Assert.Contains("\nmoved here at the last upgrade: 38 connections adopted, 1 closed, 0 passed on (still arriving)\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Format_WebSocketsMovedHere_ByKind()
    {
        var status = ControlClient.Read("""{"pid":9,"generation":3,"state":"serving","listeners":[],"controlSocket":"/c","openConnections":70,"draining":[],"lastUpgrade":null,"movedHere":{"adopted":64,"closed":1,"passedOn":0,"ended":true,"byKind":{"websocket":{"adopted":4,"closed":1,"passedOn":0},"http1":{"adopted":60,"closed":0,"passedOn":0}}}}""", ControlJson.Wire.StatusAnswer);

        string text = StatusCommand.Format(status, DateTimeOffset.UnixEpoch);

        Assert.Contains("\nmoved here at the last upgrade: 64 connections adopted, 1 closed, 0 passed on (http1: 60 adopted, 0 closed; websocket: 4 adopted, 1 closed)\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Format_RawServerWithNothingDraining()
    {
        var status = ControlClient.Read("""{"pid":9,"generation":1,"state":"serving","listeners":[],"controlSocket":"/c","openConnections":null,"draining":[],"lastUpgrade":null}""", ControlJson.Wire.StatusAnswer);

        string text = StatusCommand.Format(status, DateTimeOffset.UnixEpoch);

        Assert.Contains("open connections: not counted (raw server)", text, StringComparison.Ordinal);
        Assert.Contains("draining: none", text, StringComparison.Ordinal);
        Assert.Contains("listeners: none", text, StringComparison.Ordinal);
        Assert.EndsWith("last upgrade: none since this generation started", text, StringComparison.Ordinal);
    }
}
