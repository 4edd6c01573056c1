#!/usr/bin/env python3
"""A/B of two sessionwatch set-ups under the benchmark's load, in one run.

    python3 bench/ab.py [--a BINARY] [--b BINARY] [--fill-a N] [--fill-b N] [--rounds R]
                        [--duration S] [--pin learn|off] [--extra 'store = "compact"']

Two proxies run side by side in front of the same two bench backends: A and B, each a binary
(default target/release/sessionwatch for both) taught a number of sessions (default 100,000 for
both). Each round runs `wrk -t2 -c64` with bench/load.lua (the benchmark's traffic: random
session from 100,000 ids, 5% without a cookie) against A then B, the order reversed every other
round. It prints, per run, req/s and the proxy's user and kernel CPU per request (/proc), and at
the end the medians of the per-round ratios B/A. Use it for one change at a time (two binaries)
or one variable at a time (the same binary with --fill-b 1000000): both sides see the same
machine noise, which on a shared 2-core machine is larger than most single changes.

Standard library only; needs wrk and a release build (`cargo build --release -p sessionwatch
-p sessionwatch-bench-backend`). Everything it starts is stopped when it ends.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RELEASE = ROOT / "target" / "release"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} is not listening on {port}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = str(RELEASE / "sessionwatch")
    ap.add_argument("--a", default=default, help="binary A")
    ap.add_argument("--b", default=default, help="binary B")
    ap.add_argument("--fill-a", type=int, default=100_000, help="sessions A learns")
    ap.add_argument("--fill-b", type=int, default=100_000, help="sessions B learns")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=int, default=6, help="seconds per run")
    ap.add_argument("--pin", default="learn", choices=["learn", "off"])
    ap.add_argument("--extra", default="", help="a line added to [session], e.g. 'store = \"compact\"'")
    o = ap.parse_args()
    if min(o.fill_a, o.fill_b) < 100_000:
        raise SystemExit("both sides must learn at least the 100,000 sessions the traffic draws from")

    procs: list[subprocess.Popen] = []

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        backends = []
        for _ in range(2):
            port = free_port()
            p = subprocess.Popen([str(RELEASE / "sessionwatch-bench-backend"), str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(port, p, "bench backend")
            backends.append(port)
        template = (BENCH / "sessionwatch.toml.in").read_text()
        sides = {}
        for name, binary, fill in (("A", o.a, o.fill_a), ("B", o.b, o.fill_b)):
            port, admin = free_port(), free_port()
            config = Path(f"/tmp/sessionwatch-ab-{os.getpid()}-{name}.toml")
            config.write_text(
                template.replace("@PORT@", str(port)).replace("@ADMIN_PORT@", str(admin))
                .replace("@BACKEND_A@", str(backends[0])).replace("@BACKEND_B@", str(backends[1]))
                .replace("@PIN@", o.pin).replace("@SESSION_EXTRA@", o.extra)
                .replace("@SECTIONS@", ""))
            p = subprocess.Popen([binary, "serve", "--config", str(config)],
                                 env=dict(os.environ, RUST_LOG="warn"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(port, p, f"sessionwatch {name}")
            sides[name] = (p, port)
            print(f"{name}: {binary}, learning {fill:,} sessions", file=sys.stderr, flush=True)
            fill_proc = subprocess.Popen(
                ["wrk", "-t1", "-c16", "-d3600s", "-s", str(BENCH / "fill.lua"),
                 f"http://127.0.0.1:{port}/", "--", "0", str(fill)],
                stdout=subprocess.PIPE, text=True)
            procs.append(fill_proc)
            for line in fill_proc.stdout:
                if "FILL_DONE" in line:
                    if "failed=0" not in line:
                        raise SystemExit(f"fill of {name} failed: {line.strip()}")
                    break
            fill_proc.kill()
            fill_proc.wait()

        results = {"A": [], "B": []}
        order = []
        for r in range(o.rounds):
            order += ["A", "B"] if r % 2 == 0 else ["B", "A"]
        for name in order:
            p, port = sides[name]
            u0, s0 = cpu_ticks(p.pid)
            out = subprocess.run(
                ["wrk", "-t2", "-c64", f"-d{o.duration}s", "-s", str(BENCH / "load.lua"),
                 f"http://127.0.0.1:{port}/", "--", "100000", "0", "50"],
                capture_output=True, text=True).stdout
            u1, s1 = cpu_ticks(p.pid)
            n = int(re.search(r"(\d+) requests in", out).group(1))
            if re.search(r"Non-2xx|Socket errors", out):
                raise SystemExit(f"errors in a run of {name}:\n{out}")
            hz = os.sysconf("SC_CLK_TCK")
            user, kernel = (u1 - u0) * 1e6 / hz / n, (s1 - s0) * 1e6 / hz / n
            results[name].append((n / o.duration, user, kernel))
            print(f"{name} {n / o.duration:8.0f} req/s  user {user:6.2f} us  kernel {kernel:6.2f} us  "
                  f"total {user + kernel:6.2f} us/req", flush=True)

        def ratio(i):
            return statistics.median(b[i] / a[i] for a, b in zip(results["A"], results["B"]))

        total = statistics.median(
            (b[1] + b[2]) / (a[1] + a[2]) for a, b in zip(results["A"], results["B"]))
        print(f"B/A, medians of {o.rounds} per-round ratios: req/s {ratio(0):.3f}  "
              f"CPU/req {total:.3f}  user {ratio(1):.3f}  kernel {ratio(2):.3f}")
        for name in "AB":
            rs = results[name]
            print(f"{name} medians: {statistics.median(r[0] for r in rs):.0f} req/s, user "
                  f"{statistics.median(r[1] for r in rs):.2f} us, kernel "
                  f"{statistics.median(r[2] for r in rs):.2f} us per request")
    finally:
        stop()


if __name__ == "__main__":
    main()
