using System.IO.Compression;
using Handoff.Testing;

namespace Handoff.IntegrationTests;

/// <summary>The packages as a user gets them: <c>dotnet pack</c>, then <c>dotnet tool
/// install</c> of the <c>handoff</c> command into a directory, and running it.</summary>
public sealed class PackageTests
{
    [Fact]
    public async Task Pack_ProducesTheThreePackagesWithReadmeLicenseDocsAndSource_AndTheToolInstallsAndRuns()
    {
        using var dir = new TempDirectory();
        string artifacts = Path.Combine(dir.Path, "artifacts");
        foreach (string project in (string[])["src/Handoff", "src/Handoff.AspNetCore", "src/Handoff.Tool"])
        {
            var pack = await RunAsync("dotnet", ["pack", Path.Combine(TestAssets.RepositoryRoot, project), "-o", artifacts, "--nologo"], TestAssets.RepositoryRoot);
            Assert.True(pack.ExitCode == 0, pack.ToString());
        }

        foreach (string id in (string[])["Handoff", "Handoff.AspNetCore", "Handoff.Tool"])
        {
            // Handoff.*.nupkg also matches Handoff.Tool.*: the version follows the id.
            string package = Assert.Single(Directory.GetFiles(artifacts, "*.nupkg"), p => System.Text.RegularExpressions.Regex.IsMatch(Path.GetFileName(p), $@"^{System.Text.RegularExpressions.Regex.Escape(id)}\.\d"));
            Assert.Single(Directory.GetFiles(artifacts, $"{Path.GetFileNameWithoutExtension(package)}.snupkg"));
            using var zip = ZipFile.OpenRead(package);
            var entries = zip.Entries.Select(e => e.FullName).ToList();
            Assert.Contains("README.md", entries);
            Assert.Contains("LICENSE", entries);
            string folder = id == "Handoff.Tool" ? "tools/net10.0/any/" : "lib/net10.0/";
            Assert.Contains($"{folder}{id}.xml", entries);
            string nuspec = new StreamReader(zip.GetEntry($"{id}.nuspec")!.Open()).ReadToEnd();
            Assert.Contains("<license type=\"expression\">MIT</license>", nuspec, StringComparison.Ordinal);
            Assert.Contains("<repository type=\"git\"", nuspec, StringComparison.Ordinal);
        }

        string tools = Path.Combine(dir.Path, "tools");
        var install = await RunAsync("dotnet", ["tool", "install", "--tool-path", tools, "--add-source", artifacts, "Handoff.Tool"], dir.Path);
        Assert.True(install.ExitCode == 0, install.ToString());

        string handoff = Path.Combine(tools, "handoff");
        var help = await RunAsync(handoff, ["--help"], dir.Path);
        Assert.True(help.ExitCode == 0, help.ToString());
        Assert.Contains("usage: handoff <command>", help.Output, StringComparison.Ordinal);
        var noServer = await RunAsync(handoff, ["status", "--control", Path.Combine(dir.Path, "none.sock")], dir.Path);
        Assert.True(noServer.ExitCode == 2, noServer.ToString());
    }

    private static Task<ToolRun> RunAsync(string program, string[] arguments, string directory) =>
        ToolRun.RunProcessAsync(program, arguments, directory, TimeSpan.FromMinutes(5));
}
