# A WebSocket load on the test server's /ws-move with the "websockets" library (Debian's
# python3-websockets), a client nobody here wrote: CLIENTS connections, each sending IN_FLIGHT
# messages of SIZE bytes at a time and checking every answer "pid:<pid> #<n> <message>" (n must
# go on from connection to connection's end, the text must match). It never reconnects.
# Prints "client <i> pid <pid>" when a client's answers start coming from another process, and
# "failure client <i>: ..." when a client fails, and on "stop" (a line on stdin) closes every
# connection normally and prints "done <clients> <answered> <failures>".
# With PING=1, each client also pings after each round of messages and waits for the pong.
# Usage: ws-echo-load.py URL CLIENTS IN_FLIGHT SIZE [PING]
import asyncio
import re
import sys

import websockets

url, clients, in_flight, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ping = len(sys.argv) > 5 and sys.argv[5] == "1"
answer = re.compile(r"^pid:(\d+) #(\d+) (.*)$", re.S)
answered = 0
failures = []


async def client(index, stop):
    global answered
    pid = None
    try:
        async with websockets.connect(url, max_size=None, ping_interval=None) as socket:
            n = 0
            while not stop.is_set():
                sent = []
                for _ in range(in_flight):
                    n += 1
                    text = f"c{index} m{n} ".ljust(size, "x")
                    sent.append((n, text))
                    await socket.send(text)
                for number, text in sent:
                    got = await socket.recv()
                    match = answer.match(got)
                    if not match or match.group(3) != text or int(match.group(2)) != number:
                        raise RuntimeError(f"message {number}: unexpected answer {got[:80]!r}")
                    answered += 1
                    if match.group(1) != pid:
                        pid = match.group(1)
                        print(f"client {index} pid {pid}", flush=True)
                if ping:
                    await asyncio.wait_for(await socket.ping(), 10)
            await socket.close()
    except Exception as e:  # the test's finding: any close, error or wrong answer
        failures.append(f"failure client {index}: {type(e).__name__}: {e}")
        print(failures[-1], flush=True)


async def main():
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client(i, stop)) for i in range(clients)]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    stop.set()
    await asyncio.gather(*tasks)
    print(f"done {clients} {answered} {len(failures)}", flush=True)


asyncio.run(main())
