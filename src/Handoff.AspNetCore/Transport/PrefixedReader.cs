using System.Buffers;
using System.IO.Pipelines;

namespace Handoff.AspNetCore;

/// <summary>
/// The input of a connection that moved here with bytes the previous generation had read and
/// not consumed (a pipelined request): those bytes first, then the socket's. While any of them
/// is left, the socket's bytes are copied behind them into a pipe of this reader's own; once
/// the HTTP layer has consumed everything, reads go straight to the socket's pipe.
/// </summary>
internal sealed class PrefixedReader : PipeReader, IDuplexPipe
{
    private readonly IDuplexPipe _inner;
    // Never pauses its writer: the earlier bytes (up to MoveChannel.MaxBytes) go in at once, and
    // the socket's are copied in only when the HTTP layer asks for more.
    private readonly Pipe _merge = new(new PipeOptions(pauseWriterThreshold: 0, resumeWriterThreshold: 0, useSynchronizationContext: false));
    private bool _merging = true;
    private bool _examinedAll;
    private ReadOnlySequence<byte> _last;

    public PrefixedReader(IDuplexPipe inner, ReadOnlySpan<byte> prefix)
    {
        _inner = inner;
        _merge.Writer.Write(prefix);

        // Completes at once: the pipe never pauses its writer.
        var flushed = _merge.Writer.FlushAsync();
        if (!flushed.IsCompletedSuccessfully)
        {
            throw new InvalidOperationException("The moved connection's earlier bytes did not fit in its input pipe.");
        }
    }

    public PipeReader Input => this;

    public PipeWriter Output => _inner.Output;

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) =>
        _merging ? MergedReadAsync(cancellationToken) : _inner.Input.ReadAsync(cancellationToken);

    public override bool TryRead(out ReadResult result)
    {
        if (!_merging)
        {
            return _inner.Input.TryRead(out result);
        }

        if (!_examinedAll && _merge.Reader.TryRead(out result))
        {
            _last = result.Buffer;
            return true;
        }

        result = default;
        return false;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (!_merging)
        {
            _inner.Input.AdvanceTo(consumed, examined);
            return;
        }

        bool consumedAll = _last.End.Equals(consumed);
        _examinedAll = _last.End.Equals(examined);
        _merge.Reader.AdvanceTo(consumed, examined);
        if (consumedAll)
        {
            // Nothing of the earlier bytes is left: from now on, the socket's pipe itself.
            _merging = false;
            _merge.Reader.Complete();
            _merge.Writer.Complete();
        }
    }

    public override void CancelPendingRead()
    {
        if (_merging)
        {
            _merge.Reader.CancelPendingRead();
        }

        _inner.Input.CancelPendingRead();
    }

    public override void Complete(Exception? exception = null)
    {
        if (_merging)
        {
            _merge.Reader.Complete(exception);
            _merge.Writer.Complete(exception);
        }

        _inner.Input.Complete(exception);
    }

    private async ValueTask<ReadResult> MergedReadAsync(CancellationToken cancellationToken)
    {
        if (_examinedAll)
        {
            // The HTTP layer needs more than it has: the socket's next bytes go behind.
            var more = await _inner.Input.ReadAsync(cancellationToken).ConfigureAwait(false);
            foreach (var segment in more.Buffer)
            {
                _merge.Writer.Write(segment.Span);
            }

            _inner.Input.AdvanceTo(more.Buffer.End);
            if (more.IsCompleted)
            {
                await _merge.Writer.CompleteAsync().ConfigureAwait(false);
            }
            else
            {
                await _merge.Writer.FlushAsync(cancellationToken).ConfigureAwait(false);
            }

            if (more.IsCanceled)
            {
                // Passed on, with the buffer the HTTP layer has (its positions are this pipe's).
                _merge.Reader.CancelPendingRead();
            }
        }

        var result = await _merge.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        _last = result.Buffer;
        _examinedAll = false;
        return result;
    }
}
