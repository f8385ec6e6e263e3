using System.Diagnostics;
using System.Globalization;

namespace Handoff;

/// <summary>
/// Each generation runs from its own private copy of the application directory, as ASP.NET
/// Core Module's shadow copying does on IIS, so that a deploy that overwrites the files in
/// place (<c>cp -r new/* /srv/app/</c>, same inodes) cannot change the pages a serving process
/// has mapped: measured, that crashes it with SIGSEGV (docs/deploying.md). <c>handoff run
/// --shadow-copy</c> makes the first copy; each upgrade copies the source directory again, as
/// it is by then, and starts the new generation there.
/// </summary>
/// <remarks>
/// The variable <c>HANDOFF_SHADOW_COPY=v1;source=DIR;copy=DIR</c> tells a generation where its
/// copy came from. Copies are made as <c>ROOT/gN-XXXX.partial</c> and renamed when complete; a
/// file <c>ROOT/gN-XXXX.owner</c> names the process that runs from it (pid and start time), so
/// that the next copy can delete the copies of generations that are gone.
/// </remarks>
internal sealed record ShadowCopy(string Source, string Copy)
{
    public const string VariableName = "HANDOFF_SHADOW_COPY";
    private const string Version = "v1";
    private const string OwnerSuffix = ".owner";
    private const string PartialSuffix = ".partial";

    /// <summary>The directory that holds every copy of this service.</summary>
    public string Root => Path.GetDirectoryName(Copy)!;

    public string Format() => $"{Version};source={Source};copy={Copy}";

    /// <summary>Reads the variable; null when absent. A value that is not a shadow copy's (a
    /// relative path, an unknown version) is refused with the reason.</summary>
    public static ShadowCopy? Parse(string? value, out string? error)
    {
        error = null;
        if (value is null)
        {
            return null;
        }

        var fields = value.Split(';');
        var named = fields.Skip(1).Select(f => f.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        if (fields[0] != Version || !named.TryGetValue("source", out string? source) || !named.TryGetValue("copy", out string? copy) ||
            !Path.IsPathFullyQualified(source) || !Path.IsPathFullyQualified(copy))
        {
            error = $"{VariableName}='{value}' is not '{Version};source=DIR;copy=DIR' with absolute paths; new generations run from the source directory, without a shadow copy.";
            return null;
        }

        return new ShadowCopy(source, copy);
    }

    /// <summary>
    /// Copies <paramref name="source"/> (following a <c>current</c> symlink as it points now)
    /// to a new directory under <paramref name="root"/> for generation
    /// <paramref name="generation"/>, after deleting the copies of generations that are gone.
    /// Returns the copy's path.
    /// </summary>
    /// <exception cref="IOException">The copy failed (a full disk, say); nothing is left of it.</exception>
    public static string CreateCopy(string source, string root, int generation, CancellationToken cancellationToken = default)
    {
        if (!Directory.Exists(root))
        {
            // Deleted meanwhile: made again, private to this user as the supervisor made it.
            Directory.CreateDirectory(root);
            Interop.Libc.Chmod(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        Prune(root);
        string name = string.Create(CultureInfo.InvariantCulture, $"g{generation}-{Guid.NewGuid().ToString("N")[..8]}");
        string copy = Path.Combine(root, name);
        string partial = copy + PartialSuffix;
        try
        {
            if (!Directory.Exists(source))
            {
                throw new DirectoryNotFoundException($"the application directory '{source}' does not exist");
            }

            CopyTree(source, partial, cancellationToken);
            Directory.Move(partial, copy);
            return copy;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or OperationCanceledException)
        {
            TryDelete(partial);
            string why = e is OperationCanceledException ? "it took too long, or this generation began stopping" : e.Message;
            throw new IOException($"cannot make the shadow copy of '{source}' in '{root}': {why}", e);
        }
    }

    /// <summary>The command as it runs from <paramref name="to"/> instead of
    /// <see cref="Copy"/>: every argument that is or lies under this copy's path, and the
    /// working directory, moved to the new copy; the variable names the new copy.</summary>
    public StartCommand MoveTo(StartCommand command, string to) => Rewrite(command, Copy, to, this with { Copy = to });

    /// <summary><paramref name="command"/> with <paramref name="from"/> replaced by
    /// <paramref name="to"/> at the start of every argument and of the working directory, and
    /// the variable set to <paramref name="shadow"/>.</summary>
    public static StartCommand Rewrite(StartCommand command, string from, string to, ShadowCopy shadow) =>
        new(
            [.. command.Arguments.Select(a => Move(a, from, to))],
            Move(command.WorkingDirectory, from, to),
            [.. command.Environment.Where(e => e.Key != VariableName), KeyValuePair.Create(VariableName, shadow.Format())]);

    /// <summary>Records that <paramref name="pid"/> runs from <paramref name="copy"/>.</summary>
    public static void SetOwner(string copy, int pid)
    {
        if (GenerationProcess.Current(pid) is { } owner)
        {
            File.WriteAllText(copy + OwnerSuffix, owner.ToString());
        }
    }

    /// <summary>Deletes the copies whose owner has exited. A copy without an owner file is being
    /// made, or its generation failed before it was recorded: the latter goes with the root.</summary>
    public static void Prune(string root)
    {
        if (!Directory.Exists(root))
        {
            return;
        }

        foreach (string ownerFile in Directory.GetFiles(root, "*" + OwnerSuffix))
        {
            string text;
            try
            {
                text = File.ReadAllText(ownerFile);
            }
            catch (IOException)
            {
                continue;
            }

            if (GenerationProcess.TryParse(text.Trim()) is not { } owner || !owner.IsAlive())
            {
                TryDelete(ownerFile[..^OwnerSuffix.Length]);
                File.Delete(ownerFile);
            }
        }
    }

    /// <summary>The directory of the application a command runs: the assembly after
    /// <c>dotnet</c>, or the executable itself (an apphost).</summary>
    /// <returns>The directory, or null with the reason.</returns>
    public static string? ApplicationDirectory(IReadOnlyList<string> argv, string workingDirectory, Func<string, string?> resolveExecutable, out string? error)
    {
        error = null;
        string? executable = argv.Count > 0 ? resolveExecutable(argv[0]) : null;
        string? application = executable is not null && Path.GetFileName(executable) == "dotnet"
            ? argv.Skip(1).FirstOrDefault(a => !a.StartsWith('-') && a.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            : executable;
        if (application is null)
        {
            error = $"cannot tell which directory to copy from '{string.Join(' ', argv)}': run the application as 'dotnet /path/App.dll' or '/path/App'";
            return null;
        }

        string path = Path.GetFullPath(application, workingDirectory);
        if (!File.Exists(path))
        {
            error = $"'{path}' does not exist";
            return null;
        }

        return Path.GetDirectoryName(path);
    }

    private static string Move(string value, string from, string to) =>
        value == from ? to : value.StartsWith(from + "/", StringComparison.Ordinal) ? to + value[from.Length..] : value;

    /// <summary>Copies regular files (bytes and mode), directories, and symbolic links as
    /// links (never followed: a link to a directory cannot loop or pull in a tree from
    /// elsewhere). Sockets, FIFOs and devices are not application files and are left out: a
    /// FIFO would block the copy forever. Checks <paramref name="cancellationToken"/> between
    /// files.</summary>
    private static void CopyTree(string from, string to, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(to);
        foreach (var entry in new DirectoryInfo(from).EnumerateFileSystemInfos())
        {
            cancellationToken.ThrowIfCancellationRequested();
            string target = Path.Combine(to, entry.Name);
            if (entry.LinkTarget is { } link)
            {
                File.CreateSymbolicLink(target, link);
            }
            else if (entry is DirectoryInfo)
            {
                CopyTree(entry.FullName, target, cancellationToken);
            }
            else if (Interop.Libc.FileType(entry.FullName) == Interop.Libc.S_IFREG)
            {
                File.Copy(entry.FullName, target);
            }
        }
    }

    /// <summary>Deletes a copy that no generation runs from.</summary>
    public static void Delete(string copy)
    {
        TryDelete(copy);
        try
        {
            File.Delete(copy + OwnerSuffix);
        }
        catch (IOException)
        {
            // Deleted with the root at the end.
        }
    }

    private static void TryDelete(string directory)
    {
        try
        {
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Trace.WriteLine($"Handoff: could not delete the shadow copy '{directory}': {e.Message}");
        }
    }
}
