using System.Globalization;
using System.Text;

namespace Handoff.Bench;

/// <summary>Draws failed requests per action by system and load: one small panel per load, a
/// bar per system on a logarithmic scale (0 has no bar and says "0"), so that 0.01 and 64 fit
/// in one picture; a restart's label adds its downtime.</summary>
internal static class FailureChart
{
    private const int PanelWidth = 360;
    private const int BarHeight = 14;
    private const int LabelWidth = 95;
    private const int Columns = 3;

    public static string Svg(IReadOnlyList<RunResult> runs)
    {
        var loads = LoadGenerator.Descriptions.Keys.Where(l => runs.Any(r => r.Scenario.Load == l && r.Actions.Count > 0)).ToList();
        var systems = Scenario.Systems.Where(s => runs.Any(r => r.Scenario.Server == s.Server && r.Scenario.Action == s.Action)).ToList();
        int panelHeight = 30 + (systems.Count * (BarHeight + 4));
        int rows = (loads.Count + Columns - 1) / Columns;
        int width = Columns * PanelWidth + 20;
        int height = 50 + (rows * panelHeight);
        double maxValue = Math.Max(10, runs.GroupBy(r => r.Scenario).Where(g => g.Sum(r => r.Actions.Count) > 0).Select(g => Failed(g.ToList())).DefaultIfEmpty(0).Max());
        double decades = Math.Ceiling(Math.Log10(maxValue)) + 2; // from 0.01
        var svg = new StringBuilder();
        svg.AppendLine(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>");
        svg.AppendLine("<text x=\"10\" y=\"18\" font-weight=\"bold\" font-size=\"13\">Failed requests per upgrade or restart (log scale; restarts: requests lost)</text>");
        for (int i = 0; i < loads.Count; i++)
        {
            int left = 10 + ((i % Columns) * PanelWidth);
            int top = 40 + ((i / Columns) * panelHeight);
            svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{left}\" y=\"{top + 10}\" font-weight=\"bold\">{loads[i]}</text>");
            int barWidth = PanelWidth - LabelWidth - 130; // room for the longest label after the bar
            for (int j = 0; j < systems.Count; j++)
            {
                int y = top + 18 + (j * (BarHeight + 4));
                var g = runs.Where(r => r.Scenario == new Scenario(systems[j].Server, loads[i], systems[j].Action)).ToList();
                string name = systems[j].Server;
                svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{left}\" y=\"{y + 11}\">{name}</text>");
                string label;
                if (g.Sum(r => r.Actions.Count) == 0)
                {
                    label = "not measured";
                }
                else
                {
                    // A restart's downtime beside its lost requests; a collapse said, its failures kept.
                    double value = Failed(g);
                    label = value == 0 ? "0" : value.ToString(value >= 10 ? "0" : "0.##", CultureInfo.InvariantCulture);
                    if (systems[j].Action == "restart")
                    {
                        label += string.Create(CultureInfo.InvariantCulture, $" lost, {Report.Median(g.SelectMany(r => r.Actions).Select(a => a.ToReadyMs)):0} ms down");
                    }

                    if (g.Sum(r => r.Load.UnansweredAtClose) is > 0 and var unanswered)
                    {
                        label += string.Create(CultureInfo.InvariantCulture, $" ({(double)unanswered / g.Sum(r => r.Actions.Count):0} unanswered at close)");
                    }

                    if (g.Any(r => r.LoadCollapsed == true))
                    {
                        label += " (load collapsed)";
                    }

                    if (value > 0)
                    {
                        double length = Math.Max(2, (Math.Log10(Math.Max(value, 0.01)) + 2) / decades * barWidth);
                        const string color = "#c44";
                        svg.AppendLine(CultureInfo.InvariantCulture, $"<rect x=\"{left + LabelWidth}\" y=\"{y}\" width=\"{length:0.0}\" height=\"{BarHeight}\" fill=\"{color}\"/>");
                        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{left + LabelWidth + length + 3:0.0}\" y=\"{y + 11}\">{label}</text>");
                        continue;
                    }
                }

                bool zero = label.StartsWith('0');
                svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{left + LabelWidth}\" y=\"{y + 11}\" fill=\"{(zero ? "#2a6" : "#888")}\" font-weight=\"{(zero ? "bold" : "normal")}\">{label}</text>");
            }
        }

        svg.AppendLine("</svg>");
        return svg.ToString();
    }

    /// <summary>Failed requests per action; for a restart the requests lost (as the headline).</summary>
    private static double Failed(IReadOnlyList<RunResult> g)
    {
        int actions = g.Sum(r => r.Actions.Count);
        long failed = g.All(r => r.Scenario.Action == "restart")
            ? g.Sum(r => r.Load.Failed - r.Load.ConnectErrors - r.Load.WriteErrors)
            : g.Sum(r => r.Load.Failed);
        return actions == 0 ? 0 : (double)failed / actions;
    }
}
