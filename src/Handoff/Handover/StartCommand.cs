using System.Collections;

namespace Handoff;

/// <summary>
/// How this process was started: its argv, working directory and environment, captured once
/// at start-up so every new generation starts the same way. The executable is looked up again
/// at each upgrade, so a replaced binary, a replaced <c>app.dll</c> under <c>dotnet app.dll</c>,
/// or a re-pointed <c>current</c> symlink is what the new generation runs.
/// </summary>
internal sealed record StartCommand(IReadOnlyList<string> Arguments, string WorkingDirectory, IReadOnlyList<KeyValuePair<string, string>> Environment)
{
    /// <summary>Reads <c>/proc/self/cmdline</c> (argv exactly as exec'd, unlike
    /// <see cref="System.Environment.GetCommandLineArgs"/>, which hides the <c>dotnet</c> host),
    /// the working directory and the environment without Handoff's own variable.</summary>
    /// <param name="workingDirectory">The configured working directory
    /// (<see cref="HandoffOptions.WorkingDirectory"/>), or null for the logical current
    /// directory.</param>
    public static StartCommand Capture(string? workingDirectory = null)
    {
        string[] argv = ProcFs.SelfCommandLine();
        var environment = System.Environment.GetEnvironmentVariables()
            .Cast<DictionaryEntry>()
            .Select(e => KeyValuePair.Create((string)e.Key, (string?)e.Value ?? ""))
            .Where(e => e.Key != HandoverEnvironment.VariableName)
            .OrderBy(e => e.Key, StringComparer.Ordinal)
            .ToList();
        return new StartCommand(argv, workingDirectory ?? LogicalCurrentDirectory(System.Environment.GetEnvironmentVariable("PWD")), environment);
    }

    /// <summary>
    /// The current directory as the user named it, as <c>pwd -L</c> shows it: <c>$PWD</c> when
    /// it is absolute and leads to the same directory as <c>getcwd()</c>, which resolves
    /// symlinks. Started in <c>/srv/app/current</c> (a link to <c>releases/v1</c>), a new
    /// generation then starts in <c>current</c> again, wherever it points by then.
    /// </summary>
    internal static string LogicalCurrentDirectory(string? pwd)
    {
        string physical = Directory.GetCurrentDirectory();
        return pwd is { Length: > 0 } && Path.IsPathFullyQualified(pwd) && !pwd.Split('/').Any(p => p is "." or "..") && Interop.Libc.RealPath(pwd) == physical
            ? pwd
            : physical;
    }

    /// <summary>Checks that the working directory still exists, before a new generation is
    /// spawned there.</summary>
    /// <exception cref="DirectoryNotFoundException">It does not; the message names it.</exception>
    /// <summary>Checks <see cref="HandoffOptions.WorkingDirectory"/> at start, rather than at
    /// the first upgrade, which would fail with it. Returns what is wrong, or null.</summary>
    public static string? CheckWorkingDirectoryOption(string? directory) =>
        directory is not null && Path.IsPathFullyQualified(directory) && !Directory.Exists(directory)
            ? $"{HandoffOptions.SectionName}:{nameof(HandoffOptions.WorkingDirectory)} '{directory}' does not exist or is not a directory: every new generation starts there. Create it, or set it to the directory the service starts in (its logical path, e.g. /srv/app/current)."
            : null;

    public void CheckWorkingDirectory()
    {
        if (!Directory.Exists(WorkingDirectory))
        {
            throw new DirectoryNotFoundException($"The working directory '{WorkingDirectory}' for the new generation does not exist any more (set it with Handoff:WorkingDirectory).");
        }
    }

    /// <summary>
    /// Finds the executable named by argv[0] now: relative to the start-up directory when it
    /// contains a slash (symlinks are not resolved, so a re-pointed link is followed), else on
    /// the start-up PATH, as a shell would.
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing executable is there any more.</exception>
    public string ResolveExecutable()
    {
        string name = Arguments.Count > 0 ? Arguments[0] : "";
        if (name.Length == 0)
        {
            throw new FileNotFoundException("This process's argv[0] is empty, so the executable for the new generation cannot be found.");
        }

        if (name.Contains('/', StringComparison.Ordinal))
        {
            string path = Path.GetFullPath(name, WorkingDirectory);
            return IsExecutable(path)
                ? path
                : throw new FileNotFoundException($"The executable '{path}' (argv[0] '{name}') does not exist or is not executable any more.", path);
        }

        string searchPath = Environment.FirstOrDefault(e => e.Key == "PATH").Value ?? "/usr/local/bin:/usr/bin:/bin";
        foreach (string directory in searchPath.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.GetFullPath(Path.Combine(directory, name), WorkingDirectory);
            if (IsExecutable(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException($"The executable '{name}' (argv[0]) is not found on PATH '{searchPath}' any more.", name);
    }

    private static bool IsExecutable(string path)
    {
        if (OperatingSystem.IsWindows() || !File.Exists(path))
        {
            return false;
        }

        const UnixFileMode AnyExecute = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        return (File.GetUnixFileMode(path) & AnyExecute) != 0;
    }
}
