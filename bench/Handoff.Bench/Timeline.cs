using System.Globalization;
using System.Text;

namespace Handoff.Bench;

/// <summary>Draws the timeline picture: for each chosen run, requests/s (from 100 ms bins) and
/// the p99 latency of each bin over time, with the actions marked as vertical lines.</summary>
internal static class Timeline
{
    private const int Width = 900;

    /// <summary>The runs the picture shows: loads with a per-request log, Handoff and whom it
    /// replaces (the first run of each).</summary>
    public static IReadOnlyList<Scenario> Pictured { get; } =
    [
        new("handoff", "h1log", "upgrade"), new("nginx", "h1log", "upgrade"), new("grace", "h1log", "upgrade"),
        new("kestrel-socket", "h1log", "restart"), new("kestrel", "h1log", "restart"),
        new("handoff", "h2tls", "upgrade"), new("handoff", "ws", "upgrade"), new("handoff", "idle", "upgrade"),
    ];
    private const int PanelHeight = 170;
    private const int Left = 60;
    private const int Right = 90;

    public static string Svg(IReadOnlyList<RunResult> panels)
    {
        int height = (PanelHeight + 40) * panels.Count + 20;
        var svg = new StringBuilder();
        svg.AppendLine(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<rect width=\"{Width}\" height=\"{height}\" fill=\"white\"/>");
        for (int i = 0; i < panels.Count; i++)
        {
            Panel(svg, panels[i], 20 + (i * (PanelHeight + 40)));
        }

        svg.AppendLine("</svg>");
        return svg.ToString();
    }

    /// <summary>Why the requests stop before the run's end, or null when they do not.</summary>
    internal static string? EndsEarly(RunResult run)
    {
        var bins = run.Timeline;
        if (!run.LoadCollapsed.HasValue && run.Scenario.Load == "idle")
        {
            return null; // idle connections send only when they reconnect: quiet is their normal
        }

        double last = bins.Count == 0 ? 0 : bins[^1].OffsetSeconds; // the last slice with requests
        if (run.Load.DurationSeconds - last < 1.5)
        {
            return run.LoadCollapsed == true ? "the load collapsed: its rate fell below half its rate before the first action" : null;
        }

        return run.LoadCollapsed == true
            ? string.Create(CultureInfo.InvariantCulture, $"requests stop at {last:0.0} s: the load generator stopped loading (load collapsed)")
            : string.Create(CultureInfo.InvariantCulture, $"requests stop at {last:0.0} s of {run.Load.DurationSeconds:0} s: no request started later completed");
    }

    private static void Panel(StringBuilder svg, RunResult run, int top)
    {
        var bins = run.Timeline;
        // The axis spans the whole run, also when the load generator stopped early.
        double lastAction = run.TimelineOrigin is { } start && run.Actions.Count > 0 ? (run.Actions[^1].At - start).TotalSeconds + 2 : 0;
        double seconds = Math.Max(Math.Max(Math.Max(1, lastAction), run.Load.DurationSeconds), bins.Count == 0 ? 1 : bins[^1].OffsetSeconds + 0.1);
        double maxRate = Math.Max(1, bins.Count == 0 ? 1 : bins.Max(b => b.Requests * 10.0));
        double maxP99 = Math.Max(1, bins.Where(b => !double.IsNaN(b.P99Ms)).Select(b => b.P99Ms).DefaultIfEmpty(1).Max());
        int plotWidth = Width - Left - Right;
        string X(double t) => (Left + (t / seconds * plotWidth)).ToString("0.0", CultureInfo.InvariantCulture);
        string Y(double v, double max) => (top + PanelHeight - (v / max * PanelHeight)).ToString("0.0", CultureInfo.InvariantCulture);
        string F(double v) => v.ToString("0", CultureInfo.InvariantCulture);

        long failed = run.Load.Failed;
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{Left}\" y=\"{top - 6}\" font-weight=\"bold\">{run.Scenario.Server} / {run.Scenario.Load} / {run.Scenario.Action}: {run.Actions.Count} actions, {failed} failed requests</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<rect x=\"{Left}\" y=\"{top}\" width=\"{plotWidth}\" height=\"{PanelHeight}\" fill=\"none\" stroke=\"#999\"/>");
        if (run.TimelineOrigin is { } origin)
        {
            foreach (var action in run.Actions)
            {
                double t = (action.At - origin).TotalSeconds;
                svg.AppendLine(CultureInfo.InvariantCulture, $"<line x1=\"{X(t)}\" x2=\"{X(t)}\" y1=\"{top}\" y2=\"{top + PanelHeight}\" stroke=\"#d33\" stroke-dasharray=\"3,3\"/>");
            }
        }

        string rate = string.Join(" ", bins.Select(b => $"{X(b.OffsetSeconds)},{Y(b.Requests * 10.0, maxRate)}"));
        // p99 is drawn only where a slice had requests: a gap breaks the line.
        var segments = new List<List<TimelineBin>> { new() };
        foreach (var bin in bins)
        {
            if (double.IsNaN(bin.P99Ms))
            {
                if (segments[^1].Count > 0)
                {
                    segments.Add([]);
                }
            }
            else
            {
                segments[^1].Add(bin);
            }
        }
        svg.AppendLine(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"#2a6\" stroke-width=\"1.2\" points=\"{rate}\"/>");
        foreach (var segment in segments.Where(g => g.Count > 0))
        {
            string p99 = string.Join(" ", segment.Select(b => $"{X(b.OffsetSeconds)},{Y(b.P99Ms, maxP99)}"));
            svg.AppendLine(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1\" points=\"{p99}\"/>");
        }
        // A curve that ends before the run did says why, instead of leaving the reader to guess.
        if (EndsEarly(run) is { } why)
        {
            double end = bins.Count == 0 ? 0 : bins[^1].OffsetSeconds;
            svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{X(end)}\" y=\"{top + (PanelHeight / 2)}\" fill=\"#d33\" text-anchor=\"{(end > seconds / 2 ? "end" : "start")}\">{why}</text>");
        }

        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"4\" y=\"{top + 10}\" fill=\"#2a6\">{F(maxRate)} req/s</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"4\" y=\"{top + PanelHeight}\" fill=\"#2a6\">0</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{Width - Right + 4}\" y=\"{top + 10}\" fill=\"#36c\">p99 {maxP99.ToString("0.0", CultureInfo.InvariantCulture)} ms</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{Width - Right + 4}\" y=\"{top + PanelHeight}\" fill=\"#36c\">0</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{Left}\" y=\"{top + PanelHeight + 14}\">0 s</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{Width - Right - 30}\" y=\"{top + PanelHeight + 14}\">{seconds.ToString("0", CultureInfo.InvariantCulture)} s</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{Left + 60}\" y=\"{top + PanelHeight + 14}\"><tspan fill=\"#2a6\">requests/s (100 ms bins)</tspan>  <tspan fill=\"#36c\">p99 latency per bin</tspan>  <tspan fill=\"#d33\">action (signal sent)</tspan></text>");
    }
}
