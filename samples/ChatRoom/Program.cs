// A chat room whose members stay connected across upgrades: /chat?room=lobby&name=alice is a
// WebSocket (mapped with MapHandoffWebSocket); each text message goes to every member of the
// room as "alice: <text>", "/who" answers "pid <pid>: lobby: alice, bob" to the sender alone,
// and "/burst N" sends the sender N numbered messages ("burst 7/N pid <pid>", the pid of the
// generation that sent it). At an upgrade each member moves to the new generation between two
// messages, with its room, its name, the messages still queued for it and where its burst is,
// and re-joins its room there: no close, no reconnect, no message lost or sent twice.
//
//   dotnet build samples/ChatRoom
//   samples/ChatRoom/bin/Debug/net10.0/ChatRoom --urls http://127.0.0.1:8080 &
//   python3 -m websockets 'ws://127.0.0.1:8080/chat?room=lobby&name=alice'   # type messages, /who
//   kill -USR2 <pid>                                                          # then /who again
//
// The room lives in the process (as a single-instance chat would): while the members move, for
// the milliseconds the upgrade's move takes, the room exists in both generations, and a message
// posted then reaches the members on the same side. A service that runs on several machines
// relays rooms through a backplane (Redis, say), which covers this too.
using System.Net.WebSockets;
using System.Text;
using ChatRoom;
using Handoff;

var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.WebHost.UseHandoff();
builder.Services.AddSingleton<Rooms>();

var app = builder.Build();
app.UseWebSockets();
var rooms = app.Services.GetRequiredService<Rooms>();
app.MapHandoffWebSocket("/chat", session => Chat.RunAsync(session, rooms));
app.Run();

namespace ChatRoom
{
    /// <summary>One member's session, in the generation that accepted it and in each one it moves to.</summary>
    internal static class Chat
    {
        private const int MaxMessage = 16 * 1024;

        public static async Task RunAsync(HandoffWebSocket session, Rooms rooms)
        {
            // New: the room and name from the request. Moved here: from the state the previous
            // generation saved, with the messages it had not sent yet.
            using var member = session.IsResumed
                ? Member.Restore(session.State.Span)
                : new Member(Query(session, "room", "lobby"), Query(session, "name", $"guest-{Random.Shared.Next(1000, 10000)}"), []);
            var room = rooms.Join(member, announce: !session.IsResumed);

            // Runs between two messages with the WebSocket held: leave the room here (nothing is
            // queued for this member here after it) and save what is still queued.
            session.SaveState = () =>
            {
                room.Leave(member, announce: false);
                return member.Save(session.MessagesSent);
            };

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(session.Aborted);
            var writing = member.WriteAsync(session.WebSocket, stop.Token);
            try
            {
                await ReadAsync(session, member, room);
                member.Complete();
                await writing;
                await session.WebSocket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, session.Aborted);
            }
            catch (OperationCanceledException) when (session.Moved)
            {
                // The new generation carries on with this member.
            }
            catch (Exception e) when (e is WebSocketException or OperationCanceledException)
            {
                // The client went away.
            }
            finally
            {
                if (!session.Moved)
                {
                    room.Leave(member, announce: true);
                }

                await stop.CancelAsync();
                await writing.ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }

        private static string Query(HandoffWebSocket session, string key, string fallback) =>
            session.HttpContext!.Request.Query[key].ToString() is { Length: > 0 and <= 64 } value ? value : fallback;

        // Until the client closes: each text message to the room, or a command.
        private static async Task ReadAsync(HandoffWebSocket session, Member member, Room room)
        {
            var buffer = new byte[MaxMessage];
            while (true)
            {
                int length = 0;
                ValueWebSocketReceiveResult received;
                do
                {
                    if (length == buffer.Length)
                    {
                        throw new WebSocketException(WebSocketError.Faulted, $"a message longer than {MaxMessage} bytes");
                    }

                    received = await session.WebSocket.ReceiveAsync(buffer.AsMemory(length), session.Aborted);
                    if (received.MessageType == WebSocketMessageType.Close)
                    {
                        return;
                    }

                    length += received.Count;
                }
                while (!received.EndOfMessage);

                string text = Encoding.UTF8.GetString(buffer, 0, length);
                if (text == "/who")
                {
                    member.Post($"pid {Environment.ProcessId}: {room.Name}: {string.Join(", ", room.Names())}");
                }
                else if (text.StartsWith("/burst ", StringComparison.Ordinal) && int.TryParse(text.AsSpan(7), out int count) && count is > 0 and <= 10_000_000)
                {
                    // Sent one by one: an upgrade in the middle moves the rest.
                    member.Burst(count);
                }
                else
                {
                    room.Broadcast($"{member.Name}: {text}");
                }
            }
        }
    }

    /// <summary>A member of a room: its name, the messages queued for it and the burst it asked
    /// for, sent in order by one writer.</summary>
    internal sealed class Member(string roomName, string name, IEnumerable<string> queued, int burstNext = 0, int burstCount = 0) : IDisposable
    {
        private readonly Lock _lock = new();
        private readonly Queue<string> _outbox = new(queued);
        private readonly SemaphoreSlim _ready = new(0);
        private int _burstNext = burstNext;
        private int _burstCount = burstCount;
        private long _sent;
        private bool _sendingBurst;
        private bool _complete;

        public string RoomName => roomName;

        public string Name => name;

        public void Post(string text)
        {
            lock (_lock)
            {
                _outbox.Enqueue(text);
            }

            _ready.Release();
        }

        /// <summary>Sends messages 1 to <paramref name="count"/> after what is queued, each made
        /// when it is sent (with the pid of the generation that sends it): a feed with a cursor,
        /// which moves as two numbers however long it is.</summary>
        public void Burst(int count)
        {
            lock (_lock)
            {
                (_burstNext, _burstCount) = (1, count);
            }

            _ready.Release();
        }

        /// <summary>No more messages: the writer ends once the queue is empty.</summary>
        public void Complete()
        {
            lock (_lock)
            {
                _complete = true;
            }

            _ready.Release();
        }

        /// <summary>Sends the queue, then the burst, in order; a message leaves the queue (or
        /// the burst's cursor moves) once its send returned.</summary>
        public async Task WriteAsync(WebSocket socket, CancellationToken cancellationToken)
        {
            // What moved here is there already: a turn for each queued message and the burst.
            lock (_lock)
            {
                _ready.Release(_outbox.Count + 1);
            }

            while (true)
            {
                await _ready.WaitAsync(cancellationToken);
                string? next;
                lock (_lock)
                {
                    _sendingBurst = !_outbox.TryPeek(out next) && _burstNext is > 0 && _burstNext <= _burstCount;
                    if (_sendingBurst)
                    {
                        next = $"burst {_burstNext}/{_burstCount} pid {Environment.ProcessId}";
                    }
                    else if (next is null)
                    {
                        if (_complete)
                        {
                            return;
                        }

                        continue;
                    }
                }

                await socket.SendAsync(Encoding.UTF8.GetBytes(next), WebSocketMessageType.Text, endOfMessage: true, cancellationToken);
                lock (_lock)
                {
                    _sent++;
                    if (!_sendingBurst)
                    {
                        _outbox.Dequeue();
                        continue;
                    }

                    _burstNext++;
                }

                // The burst's turn comes again.
                _ready.Release();
            }
        }

        /// <summary>
        /// The state that moves: room, name, the messages not sent yet and the burst's cursor.
        /// The WebSocket has written <paramref name="messagesSent"/> messages here: one more than
        /// the sends that returned means the last one went while its send was returning, and is
        /// not saved again.
        /// </summary>
        public byte[] Save(long messagesSent)
        {
            using var buffer = new MemoryStream();
            using (var writer = new BinaryWriter(buffer, Encoding.UTF8))
            {
                lock (_lock)
                {
                    var unsent = _outbox.ToList();
                    int burstNext = _burstNext;
                    if (messagesSent > _sent)
                    {
                        if (_sendingBurst)
                        {
                            burstNext++;
                        }
                        else
                        {
                            unsent.RemoveAt(0);
                        }
                    }

                    writer.Write(roomName);
                    writer.Write(name);
                    writer.Write(unsent.Count);
                    unsent.ForEach(writer.Write);
                    writer.Write(burstNext);
                    writer.Write(_burstCount);
                }
            }

            return buffer.ToArray();
        }

        public void Dispose() => _ready.Dispose();

        public static Member Restore(ReadOnlySpan<byte> state)
        {
            using var reader = new BinaryReader(new MemoryStream(state.ToArray()), Encoding.UTF8);
            string room = reader.ReadString();
            string name = reader.ReadString();
            var queued = Enumerable.Range(0, reader.ReadInt32()).Select(_ => reader.ReadString()).ToList();
            return new Member(room, name, queued, reader.ReadInt32(), reader.ReadInt32());
        }
    }

    /// <summary>A room: its members, and the order in which they all receive its messages.</summary>
    internal sealed class Room(string name)
    {
        private readonly Lock _lock = new();
        private readonly List<Member> _members = [];

        public string Name => name;

        public void Add(Member member, bool announce)
        {
            lock (_lock)
            {
                _members.Add(member);
                if (announce)
                {
                    Broadcast($"* {member.Name} joined");
                }
            }
        }

        public void Leave(Member member, bool announce)
        {
            lock (_lock)
            {
                if (_members.Remove(member) && announce)
                {
                    Broadcast($"* {member.Name} left");
                }
            }
        }

        /// <summary>Queues a message for every member; under the lock, so all see the same order.</summary>
        public void Broadcast(string text)
        {
            lock (_lock)
            {
                foreach (var member in _members)
                {
                    member.Post(text);
                }
            }
        }

        public List<string> Names()
        {
            lock (_lock)
            {
                return [.. _members.Select(m => m.Name)];
            }
        }
    }

    /// <summary>The rooms of this process, made when first joined.</summary>
    internal sealed class Rooms
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Room> _rooms = new(StringComparer.Ordinal);

        public Room Join(Member member, bool announce)
        {
            var room = _rooms.GetOrAdd(member.RoomName, n => new Room(n));
            room.Add(member, announce);
            return room;
        }
    }
}
