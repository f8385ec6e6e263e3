namespace Handoff.Tool;

/// <summary>One option of a command, declared once: the parser and the usage text both come
/// from it. <paramref name="Value"/> names the option's value in the usage (<c>PATH</c>), null
/// for a flag; <paramref name="Description"/> may span lines.</summary>
internal sealed record ToolOption(string Name, string? Value, string Description)
{
    /// <summary>The usage's option lines: name and value, then the description in a column.</summary>
    public static string Describe(IReadOnlyList<ToolOption> options)
    {
        int column = options.Max(o => o.Signature.Length) + 3;
        var text = new System.Text.StringBuilder();
        foreach (var option in options)
        {
            string[] lines = option.Description.Split('\n');
            text.Append("  ").Append(option.Signature.PadRight(column)).AppendLine(lines[0]);
            foreach (string line in lines.Skip(1))
            {
                text.Append(' ', column + 2).AppendLine(line);
            }
        }

        return text.ToString().TrimEnd('\n');
    }

    private string Signature => Value is null ? $"--{Name}" : $"--{Name} {Value}";
}

/// <summary>
/// The few options the commands take, parsed by hand: <c>--name value</c>, <c>--name=value</c>
/// and flags. A mistake is a <see cref="UsageException"/> that names the option. Hand-written
/// rather than System.CommandLine's: that adds about 45 ms to every start of the tool
/// (median of 30 runs, docs/control.md), for three commands and a dozen options.
/// </summary>
internal sealed class Arguments
{
    private readonly Dictionary<string, string?> _values = new(StringComparer.Ordinal);

    private Arguments(IReadOnlyList<string> rest) => Rest = rest;

    /// <summary>What follows <c>--</c> (the command of <c>handoff run</c>).</summary>
    public IReadOnlyList<string> Rest { get; }

    /// <summary>Parses <paramref name="args"/> against a command's <paramref name="options"/>.</summary>
    public static Arguments Parse(IReadOnlyList<string> args, IReadOnlyList<ToolOption> options) =>
        Parse(args, [.. options.Where(o => o.Value is not null).Select(o => o.Name)], [.. options.Where(o => o.Value is null).Select(o => o.Name)]);

    /// <summary>Parses <paramref name="args"/>; <paramref name="valued"/> are the options that
    /// take a value, <paramref name="flags"/> those that do not.</summary>
    public static Arguments Parse(IReadOnlyList<string> args, IReadOnlyCollection<string> valued, IReadOnlyCollection<string> flags)
    {
        var parsed = new Arguments(args.SkipWhile(a => a != "--").Skip(1).ToList());
        for (int i = 0; i < args.Count && args[i] != "--"; i++)
        {
            string arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
            {
                throw new UsageException($"unexpected argument '{arg}'");
            }

            int equals = arg.IndexOf('=', StringComparison.Ordinal);
            string name = equals > 0 ? arg[2..equals] : arg[2..];
            if (flags.Contains(name))
            {
                if (equals > 0)
                {
                    throw new UsageException($"--{name} takes no value");
                }

                parsed._values[name] = null;
            }
            else if (valued.Contains(name))
            {
                string? value = equals > 0 ? arg[(equals + 1)..] : i + 1 < args.Count && args[i + 1] != "--" ? args[++i] : null;
                if (string.IsNullOrEmpty(value))
                {
                    throw new UsageException($"--{name} needs a value");
                }

                parsed._values[name] = value;
            }
            else
            {
                throw new UsageException($"unknown option '{arg}'{DidYouMean(name, valued.Concat(flags), "--")}");
            }
        }

        return parsed;
    }

    /// <summary><c> (did you mean '--json'?)</c> when <paramref name="word"/> is close to one of
    /// <paramref name="known"/>, else empty.</summary>
    public static string DidYouMean(string word, IEnumerable<string> known, string prefix = "") =>
        Spelling.Closest(word, known) is { } name ? $" (did you mean '{prefix}{name}'?)" : "";

    public bool Has(string name) => _values.ContainsKey(name);

    public string? Value(string name) => _values.GetValueOrDefault(name);

    public TimeSpan Duration(string name, TimeSpan fallback)
    {
        if (Value(name) is not { } text)
        {
            return fallback;
        }

        if (!Handoff.Duration.TryParse(text, out var value, out string? error) || value <= TimeSpan.Zero)
        {
            throw new UsageException($"--{name} '{text}' {error ?? "must be positive."}");
        }

        return value;
    }

    public int Pid(string name)
    {
        string text = Value(name)!;
        return int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid) && pid > 0
            ? pid
            : throw new UsageException($"--{name} '{text}' is not a process id");
    }
}

/// <summary>A mistake in how the tool was called: printed with the usage, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
