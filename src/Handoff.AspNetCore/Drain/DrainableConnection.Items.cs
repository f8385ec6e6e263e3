using System.Collections;
using System.Diagnostics.CodeAnalysis;

namespace Handoff.AspNetCore;

/// <summary>The connection's items (<c>ConnectionContext.Items</c>),
/// which Kestrel's features give every request on the connection: the connection itself, so that
/// the request pipeline finds the drain's record with a type test. What anybody else stores goes
/// into a dictionary made on the first store.</summary>
internal sealed partial class DrainableConnection : IDictionary<object, object?>
{
    private IDictionary<object, object?>? _items;

    // What a replacement of the items replaced: `saved = Items; Items = other; Items = saved`
    // must give back what was stored, and `saved` is the connection itself.
    private IDictionary<object, object?>? _replaced;

    public override IDictionary<object, object?> Items
    {
        get => this;
        set
        {
            if (ReferenceEquals(value, this))
            {
                if (_replaced is not null)
                {
                    (_items, _replaced) = (_replaced, null);
                }

                return;
            }

            _replaced ??= _items ?? new Dictionary<object, object?>();
            _items = value;
        }
    }

    private IDictionary<object, object?> Store => _items ??= new Dictionary<object, object?>();

    int ICollection<KeyValuePair<object, object?>>.Count => _items?.Count ?? 0;

    bool ICollection<KeyValuePair<object, object?>>.IsReadOnly => false;

    ICollection<object> IDictionary<object, object?>.Keys => Store.Keys;

    ICollection<object?> IDictionary<object, object?>.Values => Store.Values;

    object? IDictionary<object, object?>.this[object key]
    {
        get => Store[key];
        set => Store[key] = value;
    }

    void IDictionary<object, object?>.Add(object key, object? value) => Store.Add(key, value);

    void ICollection<KeyValuePair<object, object?>>.Add(KeyValuePair<object, object?> item) => Store.Add(item);

    void ICollection<KeyValuePair<object, object?>>.Clear() => _items?.Clear();

    bool ICollection<KeyValuePair<object, object?>>.Contains(KeyValuePair<object, object?> item) => _items?.Contains(item) == true;

    bool IDictionary<object, object?>.ContainsKey(object key) => _items?.ContainsKey(key) == true;

    void ICollection<KeyValuePair<object, object?>>.CopyTo(KeyValuePair<object, object?>[] array, int arrayIndex) => _items?.CopyTo(array, arrayIndex);

    bool IDictionary<object, object?>.Remove(object key) => _items?.Remove(key) == true;

    bool ICollection<KeyValuePair<object, object?>>.Remove(KeyValuePair<object, object?> item) => _items?.Remove(item) == true;

    bool IDictionary<object, object?>.TryGetValue(object key, [MaybeNullWhen(false)] out object? value)
    {
        if (_items is { } items)
        {
            return items.TryGetValue(key, out value);
        }

        value = null;
        return false;
    }

    IEnumerator<KeyValuePair<object, object?>> IEnumerable<KeyValuePair<object, object?>>.GetEnumerator() => Store.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => Store.GetEnumerator();
}
