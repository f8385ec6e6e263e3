namespace Handoff.AspNetCore;

/// <summary>
/// The open connections of this generation, in an array of slots: adding and removing take a
/// short lock and allocate nothing per connection (a dictionary would add a node object to every
/// connection); a walk takes no lock and copies nothing, as the drain's ticks need.
/// </summary>
/// <remarks>
/// A walk sees every connection that was in the table when it began and is still there when the
/// walk reaches its slot, and may or may not see one added or removed meanwhile: the same as a
/// concurrent dictionary's enumerator, and what the drain is written for (a connection it acts on
/// may have closed a moment before; asking a closed connection to close does nothing).
/// </remarks>
internal sealed class ConnectionTable
{
    private readonly Lock _lock = new();
    private DrainableConnection?[] _slots = new DrainableConnection?[16];
    private int[] _free = new int[16];
    private int _freeCount;
    private int _used;
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public bool IsEmpty => Count == 0;

    public void Add(DrainableConnection connection)
    {
        lock (_lock)
        {
            int slot;
            if (_freeCount > 0)
            {
                slot = _free[--_freeCount];
            }
            else
            {
                if (_used == _slots.Length)
                {
                    // A walk that holds the old array goes on over it: it misses what is added
                    // from here, as it may anyway.
                    var grown = new DrainableConnection?[_slots.Length * 2];
                    Array.Copy(_slots, grown, _used);
                    Volatile.Write(ref _slots, grown);
                }

                slot = _used++;
            }

            connection.Slot = slot;
            Volatile.Write(ref _slots[slot], connection);
            _count++;
        }
    }

    /// <summary>Removes the connection; false when it was not in the table (removed already).</summary>
    public bool Remove(DrainableConnection connection)
    {
        lock (_lock)
        {
            int slot = connection.Slot;
            if (slot < 0 || !ReferenceEquals(_slots[slot], connection))
            {
                return false;
            }

            Volatile.Write(ref _slots[slot], null);
            connection.Slot = -1;
            if (_freeCount == _free.Length)
            {
                Array.Resize(ref _free, _free.Length * 2);
            }

            _free[_freeCount++] = slot;
            _count--;
            return true;
        }
    }

    public Enumerator GetEnumerator() => new(Volatile.Read(ref _slots));

    /// <summary>Walks the slots of the array as it was when the walk began, skipping empty ones.</summary>
    public struct Enumerator(DrainableConnection?[] slots)
    {
        private int _index = -1;

        public DrainableConnection Current { get; private set; } = null!;

        public bool MoveNext()
        {
            while (++_index < slots.Length)
            {
                if (Volatile.Read(ref slots[_index]) is { } connection)
                {
                    Current = connection;
                    return true;
                }
            }

            return false;
        }
    }
}
