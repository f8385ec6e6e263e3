using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;

namespace Handoff.Testing;

/// <summary>
/// The HTTP/2 load of node/http2-load.js: Node.js's <c>http2</c> module, which is nghttp2 (the
/// library under curl, h2load and nghttpx), run as a child process. It reconnects after a
/// GOAWAY and never retries; a stream nghttp2 refuses, on the wire or because it had queued the
/// request when a GOAWAY arrived, is a failure.
/// </summary>
public sealed class NodeHttp2Load : ILoad, IAsyncDisposable
{
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(40);

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly TaskCompletionSource<JsonElement> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _reading;
    private long _succeeded;

    private NodeHttp2Load(Process process)
    {
        _process = process;
        _reading = Task.Run(ReadAsync);
    }

    /// <summary>Requests answered with a complete 200 so far.</summary>
    public long Succeeded => Interlocked.Read(ref _succeeded);

    /// <summary>GOAWAY frames received, known once stopped.</summary>
    public long GoAways { get; private set; }

    /// <summary>Connections opened, known once stopped.</summary>
    public long Connections { get; private set; }

    /// <summary>Where Node.js is, or null when it is not installed (.ci/run installs it).</summary>
    public static string? NodePath { get; } = new[] { "/usr/bin/node", "/usr/local/bin/node" }.FirstOrDefault(File.Exists);

    /// <summary>Starts the load against <paramref name="endPoint"/>.</summary>
    public static NodeHttp2Load Start(IPEndPoint endPoint, int connections, bool tls, int inFlight = 1, string path = "/")
    {
        string node = NodePath ?? throw new InvalidOperationException("Node.js is not installed (apt-get install nodejs); the HTTP/2 tests run its http2 client.");
        var info = new ProcessStartInfo(node)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(Path.Combine(TestAssets.RepositoryRoot, "testassets", "Handoff.Testing", "node", "http2-load.js"));
        info.ArgumentList.Add("--port");
        info.ArgumentList.Add(endPoint.Port.ToString(CultureInfo.InvariantCulture));
        info.ArgumentList.Add("--connections");
        info.ArgumentList.Add(connections.ToString(CultureInfo.InvariantCulture));
        info.ArgumentList.Add("--in-flight");
        info.ArgumentList.Add(inFlight.ToString(CultureInfo.InvariantCulture));
        info.ArgumentList.Add("--path");
        info.ArgumentList.Add(path);
        if (tls)
        {
            info.ArgumentList.Add("--tls");
        }

        // Node refuses a self-signed certificate unless told not to check it; the script says so
        // per connection, this silences the warning about it.
        info.Environment["NODE_NO_WARNINGS"] = "1";
        var process = Process.Start(info) ?? throw new InvalidOperationException("Process.Start returned null");
        return new NodeHttp2Load(process);
    }

    /// <inheritdoc/>
    public async Task WaitForProgressAsync(long count, TimeSpan timeout)
    {
        long target = Succeeded + count;
        var deadline = DateTime.UtcNow + timeout;
        while (Succeeded < target)
        {
            if (_process.HasExited || _done.Task.IsCompleted)
            {
                throw new InvalidOperationException($"the Node.js HTTP/2 load ended early (exit {(_process.HasExited ? _process.ExitCode : -1)}): {Succeeded} succeeded; {string.Join("; ", _failures.Take(5))}");
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the Node.js HTTP/2 load made no progress: {Succeeded} succeeded, {_failures.Count} failed");
            }

            await Task.Delay(10);
        }
    }

    /// <inheritdoc/>
    public async Task<LoadReport> StopAsync()
    {
        try
        {
            await _process.StandardInput.WriteLineAsync("stop");
            await _process.StandardInput.FlushAsync();
        }
        catch (IOException)
        {
            // It has exited; the report says what it printed.
        }

        JsonElement done;
        try
        {
            done = await _done.Task.WaitAsync(StopTimeout);
        }
        catch (TimeoutException)
        {
            Kill();
            throw new TimeoutException($"the Node.js HTTP/2 load did not report within {StopTimeout.TotalSeconds} s of stop");
        }

        await _process.WaitForExitAsync().WaitAsync(StopTimeout);
        GoAways = done.GetProperty("goaways").GetInt64();
        Connections = done.GetProperty("sessions").GetInt64();
        var pids = done.GetProperty("pids").EnumerateArray().Select(p => p.GetInt32()).ToArray();
        return new LoadReport(done.GetProperty("ok").GetInt64(), [.. _failures], pids);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        Kill();
        await _reading.ConfigureAwait(false);
        _process.Dispose();
    }

    private void Kill()
    {
        try
        {
            _process.Kill();
        }
        catch (InvalidOperationException)
        {
            // Exited already.
        }
    }

    private async Task ReadAsync()
    {
        var errors = _process.StandardError.ReadToEndAsync();
        while (await _process.StandardOutput.ReadLineAsync() is { } line)
        {
            if (line.StartsWith("progress ", StringComparison.Ordinal))
            {
                Interlocked.Exchange(ref _succeeded, long.Parse(line.Split(' ')[1], CultureInfo.InvariantCulture));
            }
            else if (line.StartsWith("failure ", StringComparison.Ordinal))
            {
                _failures.Enqueue(line["failure ".Length..]);
            }
            else if (line.StartsWith("done ", StringComparison.Ordinal))
            {
                _done.TrySetResult(JsonDocument.Parse(line["done ".Length..]).RootElement.Clone());
            }
        }

        string stderr = await errors;
        _done.TrySetException(new InvalidOperationException($"the Node.js HTTP/2 load exited without a report: {stderr}"));
    }
}
