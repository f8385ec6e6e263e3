using System.Globalization;

namespace Handoff;

/// <summary>
/// The file naming the generation that accepts connections, as nginx's and systemd's
/// <c>PIDFile=</c> expect: the pid and a newline, replaced atomically so a reader never sees a
/// partial or empty file.
/// </summary>
internal static class PidFile
{
    public static void Write(string path, int pid)
    {
        string full = Path.GetFullPath(path);
        string temporary = $"{full}.{Environment.ProcessId}.tmp";
        File.WriteAllText(temporary, pid.ToString(CultureInfo.InvariantCulture) + "\n");
        File.Move(temporary, full, overwrite: true);
    }

    public static int? Read(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Removes the file only when it still names <paramref name="pid"/>: a newer
    /// generation's file is left alone.</summary>
    public static bool RemoveIfOwner(string path, int pid)
    {
        if (Read(path) != pid)
        {
            return false;
        }

        File.Delete(path);
        return true;
    }
}
