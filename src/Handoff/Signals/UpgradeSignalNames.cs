using System.Globalization;
using System.Runtime.InteropServices;

namespace Handoff;

/// <summary>Parses <see cref="HandoffOptions.UpgradeSignals"/>.</summary>
internal static class UpgradeSignalNames
{
    // Linux x86-64 and arm64 numbers. PosixSignal names only the portable signals; raw numbers
    // are accepted by PosixSignalRegistration for the rest (SIGUSR1, SIGUSR2).
    private static readonly Dictionary<string, int> Allowed = new(StringComparer.OrdinalIgnoreCase)
    {
        ["HUP"] = 1,
        ["USR1"] = 10,
        ["USR2"] = 12,
    };

    public static bool TryParse(string? value, out IReadOnlyList<PosixSignal> signals, out string? error)
    {
        var result = new List<PosixSignal>();
        signals = result;
        error = null;
        foreach (string token in (value ?? "").Split([',', ' ', ';'], StringSplitOptions.RemoveEmptyEntries))
        {
            string name = token.StartsWith("SIG", StringComparison.OrdinalIgnoreCase) ? token[3..] : token;
            int number;
            if (Allowed.TryGetValue(name, out int known))
            {
                number = known;
            }
            else if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out int raw) && Allowed.ContainsValue(raw))
            {
                number = raw;
            }
            else
            {
                error = $"contains '{token}'; allowed are SIGUSR2 (12), SIGUSR1 (10) and SIGHUP (1). SIGTERM, SIGINT and SIGQUIT mean shut down and cannot start an upgrade.";
                return false;
            }

            var signal = ToPosixSignal(number);
            if (!result.Contains(signal))
            {
                result.Add(signal);
            }
        }

        return true;
    }

    // SIGHUP is the one PosixSignal knows by name, and the registration requires its portable
    // (negative) value; the others are passed as raw numbers.
    public static PosixSignal ToPosixSignal(int number) => number == Interop.Libc.SIGHUP ? PosixSignal.SIGHUP : (PosixSignal)number;

    public static int ToNumber(PosixSignal signal) => signal == PosixSignal.SIGHUP ? Interop.Libc.SIGHUP : (int)signal;

    public static string Format(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGHUP => "SIGHUP",
        (PosixSignal)10 => "SIGUSR1",
        (PosixSignal)12 => "SIGUSR2",
        _ => signal.ToString(),
    };
}
