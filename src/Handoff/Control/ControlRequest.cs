using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Handoff;

/// <summary>
/// The generation's own client of the control socket: a superseded generation asks its
/// successor, which accepts on the same socket now, for the upgrade that was asked of it
/// during the handover, and reports the outcome to whoever asked.
/// </summary>
internal static class ControlRequest
{
    /// <summary>Asks for an upgrade at <paramref name="path"/> and waits for its outcome;
    /// never throws. <c>Asked</c> is false when the socket could not be reached at all (its
    /// path removed, nobody listening): the request was not made, and may go another way.</summary>
    /// <param name="path">The control socket.</param>
    /// <param name="generation">The generation the upgrade would create, for results that do not say.</param>
    /// <param name="timeout">How long to wait for the outcome.</param>
    public static async Task<(UpgradeResult Result, bool Asked)> UpgradeAsync(string path, int generation, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), deadline.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException)
        {
            string why = File.Exists(path) ? e.Message : "the path no longer exists";
            return (UpgradeResult.Refusal(generation, UpgradeFailureReason.NotPassedOn, $"the successor could not be reached over the control socket {path}: {why}"), false);
        }

        return (await AskAsync(socket, path, generation, timeout, deadline.Token).ConfigureAwait(false), true);
    }

    private static async Task<UpgradeResult> AskAsync(Socket socket, string path, int generation, TimeSpan timeout, CancellationToken deadline)
    {
        try
        {
            await socket.SendAsync(Encoding.ASCII.GetBytes(ControlProtocol.Upgrade + "\n"), SocketFlags.None, deadline).ConfigureAwait(false);
            using var stream = new NetworkStream(socket, ownsSocket: false);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            while (await reader.ReadLineAsync(deadline).ConfigureAwait(false) is { } line)
            {
                switch (JsonSerializer.Deserialize(line, ControlJson.Wire.ControlEnvelope)?.Type)
                {
                    case ControlProtocol.ResultType:
                        return Parse(JsonSerializer.Deserialize(line, ControlJson.Wire.ResultAnswer)!, generation);
                    case ControlProtocol.ErrorType:
                        return UpgradeResult.Refusal(generation, UpgradeFailureReason.NotPassedOn, $"the successor refused the request: {JsonSerializer.Deserialize(line, ControlJson.Wire.ErrorAnswer)?.Error}");
                    default:
                        break; // "upgrading": the outcome follows.
                }
            }

            return UpgradeResult.Failure(0, generation, UpgradeFailureReason.NoOutcome, $"the successor closed the control socket {path} without saying how the upgrade ended (see its log)");
        }
        catch (OperationCanceledException)
        {
            return UpgradeResult.Failure(0, generation, UpgradeFailureReason.NoOutcome, $"no outcome from the successor within {timeout.TotalSeconds:0.#} s; the upgrade may still finish (see its log)");
        }
        catch (Exception e) when (e is SocketException or IOException or JsonException or InvalidOperationException)
        {
            return UpgradeResult.Refusal(generation, UpgradeFailureReason.NotPassedOn, $"the successor could not be asked over the control socket {path}: {e.Message}");
        }
    }

    private static UpgradeResult Parse(ResultAnswer result, int generation)
    {
        int resultGeneration = result.Generation > 0 ? result.Generation : generation;
        string reason = result.Reason ?? "no reason given";
        var why = UpgradeFailureReasons.Parse(result.ErrorType);
        return result.Outcome switch
        {
            ControlProtocol.Upgraded => UpgradeResult.Success(result.NewPid, resultGeneration, TimeSpan.FromMilliseconds(result.TimeToReadyMs)),
            ControlProtocol.Refused => UpgradeResult.Refusal(resultGeneration, why, reason),
            _ => UpgradeResult.Failure(result.NewPid, resultGeneration, why, reason),
        };
    }
}
