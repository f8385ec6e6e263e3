#!/usr/bin/env python3
# Sparse keep-alive clients across upgrades: README's Limits case. Each of N clients keeps one
# HTTP/1.1 connection to samples/HelloSleep and sends a request on it, then pauses 2 to 6 s (at
# random) and sends the next. Like any pooling client, it opens a new connection when it has
# seen the old one closed (a response with "Connection: close", or the end of the connection
# during the pause): a reconnect. A request written on a connection that the server closed
# under it, or not answered completely, counts as failed (never retried; the client then opens
# a new connection for its next request). The server is upgraded (SIGUSR2) at the given seconds.
#
#   dotnet build -c Release samples/HelloSleep
#   python3 bench/sparse-keepalive.py                      (3,000 clients, upgrades at 6 and 12 s, 20 s)
#   python3 bench/sparse-keepalive.py --move false         (the same with Handoff:MoveConnections=false)
#   python3 bench/sparse-keepalive.py --connections 1000 --upgrades 4,8,12 --duration 16
#
# Prints the requests, the failed ones, the reconnects and which pids answered. Loopback only;
# every generation it started is stopped at the end, also on failure.
import argparse
import asyncio
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "samples", "HelloSleep", "bin", "Release", "net10.0", "HelloSleep")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Counts:
    def __init__(self):
        self.requests = 0
        self.failed = 0
        self.reconnects = 0
        self.failures = {}
        self.pids = {}


async def client(port, stop_at, pause, counts, rng):
    reader = writer = None
    try:
        while time.monotonic() < stop_at:
            if writer is not None and reader.at_eof():
                # Closed by the server during the pause, and seen: as any pooling client, a new
                # connection for the next request (a reconnect, not a failure).
                writer.close()
                reader = writer = None
                counts.reconnects += 1
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            counts.requests += 1
            closing = failed = False
            try:
                writer.write(b"GET /?sleep=0 HTTP/1.1\r\nHost: bench\r\n\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                lines = head.decode("latin-1").split("\r\n")
                if not lines[0].startswith("HTTP/1.1 200"):
                    raise IOError(lines[0])
                headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
                body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
                pid = body.decode().split("\n")[0]
                counts.pids[pid] = counts.pids.get(pid, 0) + 1
                closing = headers.get("connection", "").lower() == "close"
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError, KeyError, ValueError) as e:
                counts.failed += 1
                kind = type(e).__name__
                counts.failures[kind] = counts.failures.get(kind, 0) + 1
                closing = failed = True
            if closing:
                writer.close()
                reader = writer = None
                if not failed:
                    counts.reconnects += 1
            await asyncio.sleep(rng.uniform(*pause))
    finally:
        if writer is not None:
            writer.close()


async def run(args):
    port = free_port()
    work = tempfile.mkdtemp(prefix="sparse-")
    print(f"server log: {work}/server.log", flush=True)
    pid_file = os.path.join(work, "hello.pid")
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [APP, "--urls", f"http://127.0.0.1:{port}", f"--Handoff:PidFile={pid_file}",
         f"--Handoff:MoveConnections={args.move}", "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:Handoff=Information"],
        stdout=log, stderr=subprocess.STDOUT)
    generations = [server.pid]
    try:
        deadline = time.monotonic() + 30
        while read_pid(pid_file) != server.pid:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start; see {log.name}")
            await asyncio.sleep(0.1)

        counts = Counts()
        rng = random.Random(1)
        start = time.monotonic()
        stop_at = start + args.duration
        tasks = [asyncio.ensure_future(client(port, stop_at, args.pause, counts, random.Random(rng.random())))
                 for _ in range(args.connections)]
        for at in args.upgrades:
            await asyncio.sleep(max(0, start + at - time.monotonic()))
            current = read_pid(pid_file)
            os.kill(current, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while read_pid(pid_file) in (current, None):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no new generation after pid {current}; see {log.name}")
                await asyncio.sleep(0.05)
            generations.append(read_pid(pid_file))
            print(f"{time.monotonic() - start:5.1f} s: upgraded pid {current} -> {generations[-1]}", flush=True)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        print(f"clients {args.connections}, pause {args.pause[0]:g}-{args.pause[1]:g} s, upgrades at {','.join(f'{u:g}' for u in args.upgrades)} s, "
              f"MoveConnections={args.move}")
        print(f"requests {counts.requests}, failed {counts.failed} {counts.failures or ''}, reconnects {counts.reconnects}, "
              f"clients that could not connect {len(errors)}")
        print("answered by: " + ", ".join(f"{p} {n}" for p, n in counts.pids.items()))
        return 0 if counts.failed == 0 and not errors else 1
    finally:
        for pid in set(generations + [read_pid(pid_file) or 0]) - {0}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.wait()
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--pause", default="2-6", help="seconds between a client's requests, MIN-MAX")
    parser.add_argument("--upgrades", default="6,12", help="seconds after the start, comma-separated")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--move", default="true", choices=["true", "false"])
    args = parser.parse_args()
    args.pause = tuple(float(x) for x in args.pause.split("-"))
    args.upgrades = [float(x) for x in args.upgrades.split(",") if x]
    if not os.path.exists(APP):
        raise SystemExit(f"{APP} is missing: dotnet build -c Release samples/HelloSleep")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * args.connections + 1024)), hard))
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
