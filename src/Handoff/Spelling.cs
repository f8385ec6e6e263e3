namespace Handoff;

/// <summary>"Did you mean ...?" for the names Handoff's configuration and the <c>handoff</c>
/// tool accept: a misspelt option should be answered with the option, not only with the list.</summary>
internal static class Spelling
{
    // Two edits catch a dropped, doubled, swapped or wrong letter or two; more would suggest
    // unrelated names among options this short.
    private const int MaxEdits = 2;

    // Below this a prefix or suffix says too little ("on" ends more than one option).
    private const int MinAffixLength = 4;

    /// <summary>The name in <paramref name="known"/> that <paramref name="word"/> most likely
    /// misspells, ignoring case: the nearest within two edits (a letter inserted, deleted,
    /// replaced, or two neighbours swapped; at most one for words under four letters), else the
    /// only name that begins or ends with the word or that the word begins or ends with; null
    /// when there is none.</summary>
    public static string? Closest(string word, IEnumerable<string> known)
    {
        ArgumentNullException.ThrowIfNull(word);
        ArgumentNullException.ThrowIfNull(known);
        var names = known.ToList();
        int allowed = Math.Min(MaxEdits, word.Length / 2);
        string? nearest = null;
        int nearestDistance = int.MaxValue;
        foreach (string name in names)
        {
            int distance = Distance(word, name);
            if (distance <= allowed && distance < nearestDistance)
            {
                nearest = name;
                nearestDistance = distance;
            }
        }

        if (nearest is not null || word.Length < MinAffixLength)
        {
            return nearest;
        }

        var affixes = names.Where(n => n.Length >= MinAffixLength && (
            n.StartsWith(word, StringComparison.OrdinalIgnoreCase) || n.EndsWith(word, StringComparison.OrdinalIgnoreCase) ||
            word.StartsWith(n, StringComparison.OrdinalIgnoreCase) || word.EndsWith(n, StringComparison.OrdinalIgnoreCase))).Take(2).ToList();
        return affixes.Count == 1 ? affixes[0] : null;
    }

    /// <summary>The optimal string alignment distance (Damerau-Levenshtein without editing a
    /// substring twice), ignoring case.</summary>
    internal static int Distance(string a, string b)
    {
        // Three rows suffice: a swap looks back two rows.
        var before = new int[b.Length + 1];
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (int i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = Same(a[i - 1], b[j - 1]) ? 0 : 1;
                current[j] = Math.Min(Math.Min(previous[j] + 1, current[j - 1] + 1), previous[j - 1] + cost);
                if (i > 1 && j > 1 && Same(a[i - 1], b[j - 2]) && Same(a[i - 2], b[j - 1]))
                {
                    current[j] = Math.Min(current[j], before[j - 2] + 1);
                }
            }

            (before, previous, current) = (previous, current, before);
        }

        return previous[b.Length];
    }

    private static bool Same(char x, char y) => char.ToUpperInvariant(x) == char.ToUpperInvariant(y);
}
