using Handoff.Tool;

namespace Handoff.Tests.Tool;

public sealed class UpgradeCommandTests
{
    [Fact]
    public void Timeline_FromTheServersAnswer_HandoffsShareFirst()
    {
        const string Json = """
            {"protocol":1,"type":"result","outcome":"upgraded","oldPid":4120,"oldGeneration":1,"newPid":4187,"generation":2,"timeToReadyMs":231,"oldServing":false,
             "timeline":{"spawnedMs":2.1,"runtimeStartedMs":8.9,"adoptedMs":9.4,"readyMs":36.8,"reportReadMs":37.0,"committedMs":2041.1,
             "handoffMs":6.8,"runtimeMs":6.8,"applicationMs":27.4,"rollbackWindowMs":2000}}
            """;
        var result = ControlClient.Read(Json.ReplaceLineEndings(""), ControlJson.Wire.ResultAnswer);

        Assert.Equal(
            "timeline: Handoff 6.8 ms, runtime start 6.8 ms, application start 27.4 ms, rollback window 2000 ms; stopped accepting 37.0 ms and committed 2041.1 ms after the request",
            UpgradeCommand.Timeline(result.Timeline!));
    }

    [Fact]
    public void Timeline_FromANewBuildThatDidNotTimeItsStart_SaysSo()
    {
        const string Json = """
            {"protocol":1,"type":"result","outcome":"upgraded","oldPid":4120,"oldGeneration":1,"newPid":4187,"generation":2,"timeToReadyMs":231,"oldServing":false,
             "timeline":{"spawnedMs":2.1,"reportReadMs":231.0,"committedMs":233.0,"handoffMs":4.1,"rollbackWindowMs":0}}
            """;
        var result = ControlClient.Read(Json.ReplaceLineEndings(""), ControlJson.Wire.ResultAnswer);

        Assert.StartsWith("timeline: Handoff 4.1 ms, the new build did not time its start, rollback window 0 ms;", UpgradeCommand.Timeline(result.Timeline!), StringComparison.Ordinal);
    }

    [Fact]
    public void Result_FromAnOlderServer_HasNoTimeline()
    {
        const string Json = """{"protocol":1,"type":"result","outcome":"upgraded","oldPid":4120,"oldGeneration":1,"newPid":4187,"generation":2,"timeToReadyMs":231,"oldServing":false}""";

        Assert.Null(ControlClient.Read(Json, ControlJson.Wire.ResultAnswer).Timeline);
    }
}
