namespace Handoff.Bench;

/// <summary>One run of one scenario, with what is reported of it.</summary>
internal sealed record RunResult
{
    public required Scenario Scenario { get; init; }

    public int Repeat { get; init; }

    public required LoadResult Load { get; init; }

    public IReadOnlyList<ActionTiming> Actions { get; init; } = [];

    /// <summary>True when the load's rate in its last 2 s fell below half its rate before the
    /// first action: the load generator stopped loading (h2load did, after GOAWAY or a closed connection), and the run's
    /// figures describe an almost empty load. Null without a per-request log.</summary>
    public bool? LoadCollapsed { get; init; }

    /// <summary>p99 of the requests started within 1 s after an action (per-request logs only).</summary>
    public double? P99AfterActionMs { get; init; }

    /// <summary>p99 of the requests started outside those windows (per-request logs only).</summary>
    public double? P99SteadyMs { get; init; }

    /// <summary>Idle load: for each action, from the signal to the last idle connection the
    /// server closed before the next action.</summary>
    public IReadOnlyList<double> LastCloseAfterActionMs { get; init; } = [];

    /// <summary>Requests that took 1 s or more (per-request logs): at a reconnect, a SYN dropped
    /// by a full accept queue is sent again after 1 s.</summary>
    public int SlowRequests { get; init; }

    /// <summary>The server's CPU time (user and system) per request, in µs (steady runs).</summary>
    public double? ServerCpuMicrosecondsPerRequest { get; init; }

    /// <summary>The cpus the serving process at the end of the run was allowed (its affinity),
    /// to show the pinning held.</summary>
    public string? ServerCpus { get; init; }

    public double RssPeakStartMiB { get; init; }

    public double RssPeakEndMiB { get; init; }

    public int FdsStart { get; init; }

    public int FdsEnd { get; init; }

    /// <summary>Bytes the server allocated per keep-alive request, measured after a run without
    /// actions (.NET servers only).</summary>
    public double? AllocatedBytesPerRequest { get; init; }

    /// <summary>When the first logged request started: the zero of <see cref="Timeline"/>.</summary>
    public DateTime? TimelineOrigin { get; init; }

    /// <summary>Requests per 100 ms and their p99, for the picture (per-request logs only).</summary>
    public IReadOnlyList<TimelineBin> Timeline { get; init; } = [];
}

/// <summary>One 100 ms slice of a run: offset from the start, requests started, their p99.</summary>
internal sealed record TimelineBin(double OffsetSeconds, int Requests, double P99Ms);
