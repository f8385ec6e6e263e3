using System.Reflection;

namespace Handoff.Testing;

/// <summary>Where the apps that the tests run were built.</summary>
public static class TestAssets
{
    public static string HelloSleepDirectory { get; } = Path.GetFullPath(
        typeof(TestAssets).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "HelloSleepDirectory").Value!);

    public static string HelloSleepAppHost => Path.Combine(HelloSleepDirectory, "HelloSleep");

    /// <summary>A fresh directory under /tmp, removed by the caller (or use
    /// <see cref="TempDirectory"/>).</summary>
    public static string CreateTempDirectory()
    {
        string path = Path.Combine(Path.GetTempPath(), "handoff-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(path);
        return path;
    }
}

/// <summary>A fresh directory under /tmp that is removed, with everything in it, on dispose.</summary>
public sealed class TempDirectory : IDisposable
{
    public string Path { get; } = TestAssets.CreateTempDirectory();

    public void Dispose()
    {
        if (Directory.Exists(Path))
        {
            Directory.Delete(Path, recursive: true);
        }
    }
}
