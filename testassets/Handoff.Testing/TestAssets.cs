using System.Reflection;

namespace Handoff.Testing;

/// <summary>Where the apps that the tests run were built.</summary>
public static class TestAssets
{
    public static string TestServerDirectory { get; } = Path.GetFullPath(
        typeof(TestAssets).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "TestServerDirectory").Value!);

    /// <summary>The test server's apphost (testassets/TestServer): HelloSleep with the tests'
    /// switches.</summary>
    public static string TestServerAppHost => Path.Combine(TestServerDirectory, "TestServer");

    /// <summary>The build of the sample a user reads (samples/HelloSleep).</summary>
    public static string HelloSleepDirectory { get; } = Path.GetFullPath(
        typeof(TestAssets).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "HelloSleepDirectory").Value!);

    /// <summary>The sample's apphost.</summary>
    public static string HelloSleepAppHost => Path.Combine(HelloSleepDirectory, "HelloSleep");

    /// <summary>The repository's root directory.</summary>
    public static string RepositoryRoot { get; } = Path.GetFullPath(
        typeof(TestAssets).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "RepositoryRoot").Value!);

    /// <summary>The build of the <c>handoff</c> tool (src/Handoff.Tool).</summary>
    public static string HandoffToolDirectory { get; } = Path.GetFullPath(
        typeof(TestAssets).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "HandoffToolDirectory").Value!);

    /// <summary>The tool's apphost: what <c>dotnet tool install</c> puts on the PATH as
    /// <c>handoff</c>.</summary>
    public static string HandoffTool => Path.Combine(HandoffToolDirectory, "Handoff.Tool");

    /// <summary>The unit files of samples/systemd, which the systemd tests install.</summary>
    public static string SystemdSamplesDirectory { get; } = Path.GetFullPath(
        typeof(TestAssets).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "SystemdSamplesDirectory").Value!);

    /// <summary>Copies the test server's build into <paramref name="directory"/>: a deployable
    /// release that a test can replace or point a symlink at.</summary>
    public static void CopyTestServerTo(string directory) => CopyDirectory(TestServerDirectory, directory);

    /// <summary>TestServer.dll's bytes with its build marker ("testserver-build-0000", which
    /// GET / answers as "build:...") replaced by <paramref name="marker"/> of the same length: "a
    /// new build" that is still a valid assembly.</summary>
    public static byte[] WithBuildMarker(byte[] dll, string marker)
    {
        byte[] from = System.Text.Encoding.Unicode.GetBytes("testserver-build-0000");
        byte[] to = System.Text.Encoding.Unicode.GetBytes(marker);
        int at = dll.AsSpan().IndexOf(from);
        if (at < 0 || to.Length != from.Length)
        {
            throw new InvalidOperationException($"cannot put the build marker '{marker}' in TestServer.dll");
        }

        byte[] patched = (byte[])dll.Clone();
        to.CopyTo(patched, at);
        return patched;
    }

    /// <summary>Copies samples/HelloSleep's build into <paramref name="directory"/> (a release
    /// a test can replace with a broken one); returns the path of its apphost there.</summary>
    public static string CopyHelloSleepTo(string directory)
    {
        CopyDirectory(HelloSleepDirectory, directory);
        return Path.Combine(directory, "HelloSleep");
    }

    /// <summary>Copies the tool's build into <paramref name="directory"/>, for a process that
    /// cannot see the build directory (another user, a namespace with a private /tmp or
    /// /var/tmp, where a checkout may live); returns the path of its apphost there.</summary>
    public static string CopyHandoffToolTo(string directory)
    {
        CopyDirectory(HandoffToolDirectory, directory);
        return Path.Combine(directory, "Handoff.Tool");
    }

    /// <summary>A fresh directory under /tmp, removed by the caller (or use
    /// <see cref="TempDirectory"/>).</summary>
    public static string CreateTempDirectory()
    {
        string path = Path.Combine(Path.GetTempPath(), "handoff-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(path);
        return path;
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }

        foreach (string directory in Directory.GetDirectories(from))
        {
            CopyDirectory(directory, Path.Combine(to, Path.GetFileName(directory)));
        }
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
