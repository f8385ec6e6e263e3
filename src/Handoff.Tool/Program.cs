// The handoff command: upgrade, status and run (see docs/control.md and docs/supervisor.md).
using Handoff.Tool;

return await HandoffTool.RunAsync(args).ConfigureAwait(false);
