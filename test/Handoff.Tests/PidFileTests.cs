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
        Assert.Equal([_path], Directory.GetFiles(Path.GetDirectoryName(_path)!, "*" + Path.GetFileName(_path) + "*"));
    }

    [Fact]
    public void RemoveIfOwner_OtherPid_LeavesTheFile()
    {
        PidFile.Write(_path, 100);

        Assert.False(PidFile.RemoveIfOwner(_path, [99, 98]));
        Assert.True(File.Exists(_path));
        Assert.True(PidFile.RemoveIfOwner(_path, [99, 100]));
        Assert.False(File.Exists(_path));
    }

    [Fact]
    public void Write_SymlinksPlantedAtEveryPredictableName_AreNeverFollowed()
    {
        // The temporary names earlier versions used, and the pid file itself, all point at a
        // file the server must never write.
        string victim = _path + ".victim";
        File.WriteAllText(victim, "precious");
        File.CreateSymbolicLink($"{_path}.{Environment.ProcessId}.tmp", victim);
        File.CreateSymbolicLink(_path, victim);
        try
        {
            PidFile.Write(_path, 4242);

            Assert.Equal("precious", File.ReadAllText(victim));
            Assert.Equal("4242\n", File.ReadAllText(_path));
            Assert.Null(new FileInfo(_path).LinkTarget);
        }
        finally
        {
            File.Delete(victim);
            File.Delete($"{_path}.{Environment.ProcessId}.tmp");
        }
    }

    [Fact]
    public void CheckWritable_MissingDirectoryOrDirectoryPath_NamesTheOption()
    {
        string missing = Path.Combine(Path.GetTempPath(), "handoff-missing-" + Guid.NewGuid().ToString("N"), "app.pid");

        Assert.Contains("Handoff:PidFile", PidFile.CheckWritable(missing), StringComparison.Ordinal);
        Assert.Contains("does not exist", PidFile.CheckWritable(missing), StringComparison.Ordinal);
        Assert.Contains("is a directory", PidFile.CheckWritable(Path.GetTempPath()), StringComparison.Ordinal);
        Assert.Null(PidFile.CheckWritable(_path));
        Assert.Empty(Directory.GetFiles(Path.GetTempPath(), "*" + Path.GetFileName(_path) + "*"));
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
