#!/usr/bin/env python3
# NativeAOT: an upgrade against the same app's cold start, under the benchmark's keep-alive load.
# samples/HelloAot (published by bench/run to bench/.aot) serves wrk -t2 -c64 (cpu 0) while,
# ROUNDS times: a second copy starts cold on another port, on the server's cpu (1), and is timed
# from exec to its first 200; then the served one gets SIGUSR2 and is timed from the signal to the
# first 200 naming the new pid (a new connection per probe). Prints both series and their medians.
#
#   bench/run --only handoff-aot/keepalive/upgrade --repeats 1 --duration 12   (publishes bench/.aot)
#   python3 bench/aot-coldstart.py [ROUNDS]          (default 9; about 30 s)
#
# Loopback only; every process it starts (and every generation named in the pid file) is stopped
# at the end, also on failure.
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".aot", "HelloAot")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 9


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_pid(port):
    """The pid in a 200 answer to a new connection, or None (refused, reset, other status)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"HTTP/1.1 200") or b"pid:" not in data:
        return None
    return int(data.split(b"pid:")[1].split(b"\n")[0])


def wait_for(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (value := condition()) is not None:
            return value
    raise TimeoutError("no answer within %d s" % seconds)


def read_pid(path):
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


def main():
    if not os.access(APP, os.X_OK):
        sys.exit(f"{APP} not found: publish it first (see the top of this file)")
    work = tempfile.mkdtemp(prefix="handoff-aot-coldstart-")
    pid_file = os.path.join(work, "served.pid")
    port = free_port()
    started = []

    def start(on_port, pids):
        process = subprocess.Popen(["taskset", "-c", "1", APP, "--urls", f"http://127.0.0.1:{on_port}", f"--Handoff:PidFile={pids}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    wrk = None
    cold, upgrade = [], []
    try:
        start(port, pid_file)
        wait_for(lambda: served_pid(port))
        wrk = subprocess.Popen(["taskset", "-c", "0", "wrk", "-t2", "-c64", "-d120s", f"http://127.0.0.1:{port}/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        for round_ in range(ROUNDS):
            other = free_port()
            t0 = time.monotonic()
            copy = start(other, os.path.join(work, f"cold{round_}.pid"))
            wait_for(lambda: served_pid(other))
            cold.append((time.monotonic() - t0) * 1000)
            copy.terminate()
            copy.wait(10)
            time.sleep(0.5)

            old = read_pid(pid_file)
            t0 = time.monotonic()
            os.kill(old, signal.SIGUSR2)
            wait_for(lambda: (lambda pid: pid if pid not in (None, old) else None)(served_pid(port)))
            upgrade.append((time.monotonic() - t0) * 1000)
            time.sleep(2.5)  # past the rollback window (2 s): the old generation drains and exits
    finally:
        if wrk is not None:
            wrk.kill()
            wrk.wait()
        # A generation stopped inside its rollback window hands the service back to the one
        # before it, which then names itself in the pid file again: stop until none is left.
        pids = {p.pid for p in started}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (pid := read_pid(pid_file)) is not None and os.path.exists(f"/proc/{pid}") and "State:\tZ" not in open(f"/proc/{pid}/status").read():
            pids.add(pid)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            time.sleep(0.2)
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") and "State:\tZ" not in open(f"/proc/{pid}/status").read() for pid in pids):
            time.sleep(0.05)

    print(f"machine: {os.cpu_count()} cpus; wrk -t2 -c64 keep-alive on cpu 0, servers on cpu 1; {ROUNDS} rounds")
    print("cold start to first response, ms:", [round(x) for x in cold], "median %.1f" % statistics.median(cold))
    print("SIGUSR2 to first response from the new pid, ms:", [round(x) for x in upgrade], "median %.1f" % statistics.median(upgrade))
    print("difference of the medians: %+.1f ms" % (statistics.median(upgrade) - statistics.median(cold)))


if __name__ == "__main__":
    main()
