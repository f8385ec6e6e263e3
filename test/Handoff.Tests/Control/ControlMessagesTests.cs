using System.Text.Json;

namespace Handoff.Tests.Control;

/// <summary>The control protocol's contract, shared by the server and the tool: the lines on
/// the wire are the ones docs/control.md shows (protocol and type first, optional fields left
/// out, unknown fields of a newer peer ignored).</summary>
public sealed class ControlMessagesTests
{
    [Fact]
    public void Result_Failed_IsTheDocumentedLine()
    {
        var answer = new ResultAnswer("failed", 4120, 1, 4187, 2, 0, true, "new generation 2 (pid 4187) failed: it exited (exit code 1) before reporting ready", "exited");

        Assert.Equal(
            """{"protocol":1,"type":"result","outcome":"failed","oldPid":4120,"oldGeneration":1,"newPid":4187,"generation":2,"timeToReadyMs":0,"oldServing":true,"reason":"new generation 2 (pid 4187) failed: it exited (exit code 1) before reporting ready","errorType":"exited"}""",
            JsonSerializer.Serialize(answer, ControlJson.Wire.ResultAnswer));
    }

    [Fact]
    public void Result_Upgraded_LeavesOutReasonAndErrorType()
    {
        var answer = new ResultAnswer("upgraded", 4120, 1, 4187, 2, 231, false, null, null);

        Assert.Equal(
            """{"protocol":1,"type":"result","outcome":"upgraded","oldPid":4120,"oldGeneration":1,"newPid":4187,"generation":2,"timeToReadyMs":231,"oldServing":false}""",
            JsonSerializer.Serialize(answer, ControlJson.Wire.ResultAnswer));
    }

    [Fact]
    public void Status_FirstGeneration_LeavesOutParentPidAndWritesNullsThatMean()
    {
        var answer = new StatusAnswer(9, 1, "serving", "2026-11-22T09:00:00.000Z", 0, [new ListenerAnswer("127.0.0.1:8080", false, false)], "/run/a/handoff.sock", null, [new DrainingAnswer(8, null, null)], null);

        Assert.Equal(
            """{"protocol":1,"type":"status","pid":9,"generation":1,"state":"serving","startedAt":"2026-11-22T09:00:00.000Z","listeners":[{"address":"127.0.0.1:8080","inherited":false,"activated":false}],"controlSocket":"/run/a/handoff.sock","openConnections":null,"draining":[{"pid":8,"openConnections":null}],"lastUpgrade":null}""",
            JsonSerializer.Serialize(answer, ControlJson.Wire.StatusAnswer));
    }

    [Fact]
    public void Error_AndUpgrading_AreTheDocumentedLines()
    {
        Assert.Equal("""{"protocol":1,"type":"upgrading"}""", JsonSerializer.Serialize(new UpgradingAnswer(), ControlJson.Wire.UpgradingAnswer));
        Assert.Equal("""{"protocol":1,"type":"error","error":"unknown request 'x'; <no escaping>"}""", JsonSerializer.Serialize(new ErrorAnswer("unknown request 'x'; <no escaping>"), ControlJson.Wire.ErrorAnswer));
    }

    [Fact]
    public void Read_ANewerPeersLine_IgnoresWhatItDoesNotKnow()
    {
        const string Line = """{"protocol":2,"type":"result","outcome":"refused","oldPid":1,"oldGeneration":1,"newPid":0,"generation":2,"timeToReadyMs":0,"oldServing":true,"reason":"r","errorType":"some_new_reason","movedConnections":12}""";

        var envelope = JsonSerializer.Deserialize(Line, ControlJson.Wire.ControlEnvelope)!;
        var result = JsonSerializer.Deserialize(Line, ControlJson.Wire.ResultAnswer)!;

        Assert.Equal((2, "result"), (envelope.Protocol, envelope.Type));
        Assert.Equal(("refused", "r"), (result.Outcome, result.Reason));
        Assert.Equal(UpgradeFailureReason.Unexpected, UpgradeFailureReasons.Parse(result.ErrorType));
    }
}
