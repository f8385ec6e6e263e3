using System.Globalization;
using System.Security.Cryptography;

namespace Handoff;

/// <summary>
/// The file naming the generation that accepts connections, as nginx's and systemd's
/// <c>PIDFile=</c> expect: the pid and a newline, replaced atomically so a reader never sees a
/// partial or empty file.
/// </summary>
/// <remarks>
/// The temporary file has a random name and is created with O_CREAT|O_EXCL, which never opens
/// an existing file and never follows a symlink: whoever can write the directory cannot make a
/// server running as root overwrite some other file by planting a link where the temporary
/// file will be. It is flushed to disk before the rename, so a crash leaves the old file or the
/// new one, never an empty one.
/// </remarks>
internal static class PidFile
{
    public static void Write(string path, int pid)
    {
        string full = Path.GetFullPath(path);
        string temporary = Path.Combine(Path.GetDirectoryName(full) ?? "/", $".{Path.GetFileName(full)}.{RandomNumberGenerator.GetHexString(16, lowercase: true)}.tmp");
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
        };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        }

        try
        {
            using (var stream = new FileStream(temporary, options))
            {
                stream.Write(System.Text.Encoding.ASCII.GetBytes(pid.ToString(CultureInfo.InvariantCulture) + "\n"));
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, full, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    /// <summary>Checks at start, before anything binds, that the pid file can be written where
    /// it is configured; returns what is wrong, naming the option, or null.</summary>
    public static string? CheckWritable(string path)
    {
        string full = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(full) ?? "/";
        if (!Directory.Exists(directory))
        {
            return $"{HandoffOptions.SectionName}:{nameof(HandoffOptions.PidFile)} '{path}': the directory '{directory}' does not exist. Create it (systemd: RuntimeDirectory=) or choose another path.";
        }

        if (Directory.Exists(full))
        {
            return $"{HandoffOptions.SectionName}:{nameof(HandoffOptions.PidFile)} '{path}' is a directory; give a file path such as {Path.Combine(full, "app.pid")}.";
        }

        string probe = Path.Combine(directory, $".{Path.GetFileName(full)}.{RandomNumberGenerator.GetHexString(16, lowercase: true)}.check");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write))
            {
            }

            File.Delete(probe);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"{HandoffOptions.SectionName}:{nameof(HandoffOptions.PidFile)} '{path}': cannot create files in '{directory}' ({e.Message}). Make the directory writable for this user or choose another path.";
        }
    }

    public static int? Read(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? pid : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Removes the file only when it names one of <paramref name="pids"/>: a newer
    /// generation's file is left alone.</summary>
    public static bool RemoveIfOwner(string path, IReadOnlyCollection<int> pids)
    {
        if (Read(path) is not { } named || named <= 0 || !pids.Contains(named))
        {
            return false;
        }

        File.Delete(path);
        return true;
    }
}
