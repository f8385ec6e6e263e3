namespace Handoff.Tests;

public sealed class PidFileTests : IDisposable
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"handoff-pid-{Guid.NewGuid():N}.pid");

    [Fact]
    public void Write_ThenRead_GivesThePidAndLeavesNoTemporaryFile()
    {
        PidFile.Write(_path, 4242);

        Assert.Equal("4242\n", File.ReadAllText(_path));
        Assert.Equal(4242, PidFile.Read(_path));
        Assert.DoesNotContain(Directory.GetFiles(Path.GetDirectoryName(_path)!), f => f.StartsWith(_path + ".", StringComparison.Ordinal));
    }

    [Fact]
    public void RemoveIfOwner_OtherPid_LeavesTheFile()
    {
        PidFile.Write(_path, 100);

        Assert.False(PidFile.RemoveIfOwner(_path, 99));
        Assert.True(File.Exists(_path));
        Assert.True(PidFile.RemoveIfOwner(_path, 100));
        Assert.False(File.Exists(_path));
    }

    [Fact]
    public void Read_MissingOrGarbage_IsNull()
    {
        Assert.Null(PidFile.Read(_path));
        File.WriteAllText(_path, "not a pid");
        Assert.Null(PidFile.Read(_path));
    }

    public void Dispose() => File.Delete(_path);
}
