namespace Handoff.Tool;

/// <summary>
/// The few options the commands take, parsed by hand: <c>--name value</c>, <c>--name=value</c>
/// and flags. A mistake is a <see cref="UsageException"/> that names the option.
/// </summary>
internal sealed class Arguments
{
    private readonly Dictionary<string, string?> _values = new(StringComparer.Ordinal);

    private Arguments(IReadOnlyList<string> rest) => Rest = rest;

    /// <summary>What follows <c>--</c> (the command of <c>handoff run</c>).</summary>
    public IReadOnlyList<string> Rest { get; }

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
