#!/usr/bin/env python3
"""The Redis session store's cost, in one run of the benchmark harness (bench/run.py).

Targets, all pin=learn in front of the harness's farm of two bench/backend processes, under the
harness's traffic (wrk -t2 -c64, bench/load.lua: a random session from 100k ids per request, 5%
without a cookie), in alternating order:
  sw_moka        sessionwatch, the default moka store, 100k sessions learned
  sw_redis       sessionwatch, store = "redis" against a local redis-server, the same 100k
                 sessions learned through it before the measured rounds (warm near cache: no
                 lookups; the 5% new sessions are written to Redis before their answers, and
                 last_seen touches go out in pipelined batches)
  sw_redis_cold  a second replica on the same Redis that never saw the sessions it is sent: each
                 round draws from 100k ids a third, unmeasured replica issued just before, so
                 every first request per session is a Redis lookup (--no-cold to leave it out)
  haproxy        HAProxy's stick table, 100k sessions learned

For the Redis targets the run also reports redis-server's own CPU per request (utime + stime
from /proc/PID/stat, before and after the measured run) and the store's counters (lookups,
writes, timeouts, outages) over the run.

Memory: a separate redis-server and sessionwatch (store = "redis"); 100k then 1M sessions
issued through the proxy, each written by its own path (SET key value PX ttl); bytes per
session in Redis = used_memory (INFO memory) after minus before, divided by the sessions.

Every redis-server runs without persistence (--save "" --appendonly no) with the maxmemory
policy BENCHMARKS.md documents. Reports Markdown on stdout and writes bench/results/fleet.json
and fleet.md. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import run as h
from run import BenchError, PROCS, log

TARGETS = ["sw_moka", "sw_redis", "sw_redis_cold", "haproxy"]
LABELS = {
    "sw_moka": "sessionwatch, moka store",
    "sw_redis": "sessionwatch, Redis store, warm near cache",
    "sw_redis_cold": "sessionwatch, Redis store, cold near cache",
    "haproxy": "HAProxy stick table",
}
# The policy BENCHMARKS.md recommends: every key the store writes has a TTL (the session's idle
# time left), so the key with the least TTL left is the session idle longest.
MAXMEMORY = "2gb"
MAXMEMORY_POLICY = "volatile-ttl"
# The cold replica measures the lookup path, not the lookup cap: at ~25k req/s its first-seen
# sessions arrive faster than the default 10,000 lookups a second.
COLD_LOOKUP_CAP = 1_000_000


def cpu_total(run: dict) -> float:
    return run["proxy_cpu_us_per_req"] + (run.get("aux_cpu_us_per_req") or 0)


def cpu_user(run: dict) -> float:
    return run["proxy_cpu_us_per_req"] - run["proxy_sys_us_per_req"]


RATIOS = [
    ("redis_vs_moka_cpu", "sw_redis", "sw_moka", "proxy_cpu_us_per_req",
     "CPU/req of the proxy, Redis store (warm) / moka store"),
    ("redis_vs_moka_user", "sw_redis", "sw_moka", cpu_user,
     "user-space CPU/req of the proxy, Redis store (warm) / moka store"),
    ("redis_total_vs_moka_cpu", "sw_redis", "sw_moka", cpu_total,
     "CPU/req of proxy + redis-server, Redis store (warm) / moka store"),
    ("redis_vs_haproxy_rps", "sw_redis", "haproxy", "rps", "req/s, Redis store (warm) / HAProxy"),
    ("moka_vs_haproxy_rps", "sw_moka", "haproxy", "rps", "req/s, moka store / HAProxy"),
    ("redis_vs_moka_rps", "sw_redis", "sw_moka", "rps", "req/s, Redis store (warm) / moka store"),
    ("cold_vs_moka_cpu", "sw_redis_cold", "sw_moka", "proxy_cpu_us_per_req",
     "CPU/req of the proxy, Redis store (cold) / moka store"),
    ("cold_total_vs_moka_cpu", "sw_redis_cold", "sw_moka", cpu_total,
     "CPU/req of proxy + redis-server, Redis store (cold) / moka store"),
    ("cold_vs_haproxy_rps", "sw_redis_cold", "haproxy", "rps", "req/s, Redis store (cold) / HAProxy"),
]


# ---------------------------------------------------------------------------------------------
# redis-server
# ---------------------------------------------------------------------------------------------


def _reply(f):
    line = f.readline()
    if not line:
        raise BenchError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise BenchError(f"redis: {rest.decode(errors='replace')}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise BenchError(f"redis: unexpected reply {line[:40]!r}")


def redis_call(port: int, *args: str | bytes, timeout: float = 10.0):
    """One command on a connection of its own (RESP2)."""
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(a)}\r\n".encode() + a + b"\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(out))
        with s.makefile("rb") as f:
            return _reply(f)


def redis_info(port: int, section: str) -> dict[str, str]:
    text = redis_call(port, "INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


class Redis:
    def __init__(self, name: str, port: int, proc: subprocess.Popen):
        self.name = name
        self.port = port
        self.proc = proc

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def used_memory(self) -> int:
        return int(redis_info(self.port, "memory")["used_memory"])

    def dbsize(self) -> int:
        return redis_call(self.port, "DBSIZE")


def start_redis(tool: str, work: Path, name: str) -> Redis:
    (port,) = h.free_ports(1)
    log_file = work / f"{name}.log"
    p = PROCS.start(
        [
            tool, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--maxmemory", MAXMEMORY, "--maxmemory-policy", MAXMEMORY_POLICY,
            "--dir", str(work), "--logfile", str(log_file), "--daemonize", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    r = Redis(name, port, p)

    def answers() -> bool:
        try:
            return redis_call(port, "PING", timeout=1) == "PONG"
        except (OSError, BenchError):
            return False

    h.wait_until(f"{name} ready", answers, p, log_file)
    return r


def redis_section(redis: Redis, lookup_cap: int | None, timeout: str | None) -> str:
    lines = ["[redis]", f'url = "{redis.url()}"']
    if timeout is not None:
        lines.append(f'timeout = "{timeout}"')
    if lookup_cap is not None:
        lines.append(f"max_lookups_per_second = {lookup_cap}")
    return "\n".join(lines) + "\n"


def start_redis_sessionwatch(bench: h.Bench, name: str, ports: list[int], redis: Redis,
                             lookup_cap: int | None = None) -> h.Target:
    # The store's own lines at info: each recovery says how many records it wrote back.
    t = h.start_sessionwatch(bench.release, bench.work, name, "learn", ports, "redis",
                             redis_section(redis, lookup_cap, bench.opts.redis_timeout),
                             log_filter="warn,sessionwatch_proxy::fleet=info")
    t.aux_pids = [redis.proc.pid]
    # The store starts degraded and comes up once its keeper has connected.
    h.wait_until(f"{name}'s Redis store up", lambda: store_counters(t).get("sessionwatch_store_up") == 1.0,
                 t.proc, t.log_file, timeout=10)
    return t


def store_log(lines: list[str]) -> dict:
    """What the store's log lines say: outages by reason, recoveries and the records they wrote
    back to Redis."""
    reasons: dict[str, int] = {}
    recovered, rewritten = 0, 0
    for line in lines:
        if "session store degraded" in line:
            m = re.search(r'reason="?(\w+)', line)
            reason = m.group(1) if m else "?"
            reasons[reason] = reasons.get(reason, 0) + 1
        elif "session store recovered" in line:
            recovered += 1
            m = re.search(r"rewritten=(\d+)", line)
            rewritten += int(m.group(1)) if m else 0
    return {"degraded": reasons, "recovered": recovered, "rewritten": rewritten}


def store_counters(t: h.Target) -> dict[str, float]:
    status, body = h.http_get(t.admin_port, "/metrics")
    out = {}
    if status == 200:
        for line in body.splitlines():
            if line.startswith("sessionwatch_store_"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
    return out


def threads_of(pid: int) -> dict[str, list[int]]:
    """Per thread name: [CPU ticks, voluntary context switches, threads], summed over threads."""
    out: dict[str, list[int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        x = out.setdefault(comm, [0, 0, 0])
        x[0] += int(fields[11]) + int(fields[12])
        x[1] += switches
        x[2] += 1
    return out


class FleetBench(h.Bench):
    """The harness's measurement, with the Redis store's counters and the proxy's CPU and
    context switches by thread over each measured run."""

    def measure(self, target, *args, **kw):
        before = store_counters(target) if target.kind == "sessionwatch" else {}
        threads_before = threads_of(target.proc.pid) if target.kind == "sessionwatch" else {}
        r = super().measure(target, *args, **kw)
        if threads_before:
            # After super().measure's own readings; a thread's figures are its ticks and
            # switches over the run, per request.
            threads_after = threads_of(target.proc.pid)
            n = max(r["requests"], 1)
            r["threads"] = {
                name: {
                    "cpu_us_per_req": round((x[0] - threads_before.get(name, [0, 0])[0]) * 1e6 / h.CLK_TCK / n, 2),
                    "switches_per_req": round((x[1] - threads_before.get(name, [0, 0])[1]) / n, 3),
                    "threads": x[2],
                }
                for name, x in threads_after.items()
            }
        if before:
            after = store_counters(target)
            r["store"] = {
                k: round(v - before.get(k, 0.0), 3)
                for k, v in after.items()
                if k != "sessionwatch_store_up" and v - before.get(k, 0.0)
            }
            r["store_up_after"] = after.get("sessionwatch_store_up")
        return r


# ---------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------


def fill_checked(bench: h.Bench, results: dict, name: str, target: h.Target, first: int, count: int) -> dict:
    done = bench.wrk.fill(target.port, first, count)
    done["tracked"] = target.tracked()
    if (done["tracked"] or 0) < count * 0.99:
        results["problems"].append(f"{name} tracks {done['tracked']} sessions after a fill of {count}")
    return done


def settled_dbsize(redis: Redis, at_least: int, timeout: float = 30.0) -> int:
    """DBSIZE once it reaches at_least or stops growing (the writer's batches in flight)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        n = redis.dbsize()
        if n >= at_least or n == last:
            return n
        last = n
        time.sleep(1.0)
    return redis.dbsize()


def memory_step(bench: h.Bench, tools: dict, ports: list[int], small: int, large: int, results: dict) -> dict:
    """Bytes per session in Redis, written by the proxy's own path; stops its processes after."""
    redis = start_redis(tools["redis-server"], bench.work, "redis_mem")
    bench.services.append(redis.proc)
    t = start_redis_sessionwatch(bench, "sw_redis_mem", ports, redis)
    bench.services.append(t.proc)
    try:
        # No session yet: the proxy's connection is open, the keyspace empty.
        time.sleep(0.5)
        used, keys, fills = [redis.used_memory()], [redis.dbsize()], []
        for first, count in ((0, small), (small, large - small)):
            fills.append(bench.wrk.fill(t.port, first, count))
            keys.append(settled_dbsize(redis, first + count))
            used.append(redis.used_memory())
            log(f"  redis_mem: {keys[-1]:,} keys, used_memory {used[-1] / 2**20:.1f} MiB")
        info = redis_info(redis.port, "memory")
        sample = redis_call(redis.port, "RANDOMKEY")
        ttl = redis_call(redis.port, "PTTL", sample) if sample else None
        value = redis_call(redis.port, "GET", sample) if sample else None
        counters = store_counters(t)
        outages = counters.get("sessionwatch_store_outages_total", 0)
        log_summary = store_log(h.log_lines(t.log_file))
        key_len, value_len = len(sample or b""), len(value or b"")
        direct = {}
        for vl in sorted({value_len, 12}):
            direct[f"{key_len}/{vl}"] = round(direct_memory(tools, bench.work, large, key_len, vl, 1_800_000), 1)
            log(f"  {large:,} keys of {key_len} B with {vl}-byte values piped in: {direct[f'{key_len}/{vl}']} B per key")
        if keys[-1] < large * 0.999:
            results["problems"].append(f"redis_mem holds {keys[-1]:,} keys after {large:,} sessions were issued")
        if outages:
            results["problems"].append(f"sw_redis_mem's store was degraded {outages:.0f} time(s) during the fill")
        return {
            "sessions": [0, small, large],
            "keys": keys,
            "used_memory": used,
            "fills": fills,
            "bytes_per_session": (used[2] - used[0]) / large,
            "bytes_per_session_incremental": (used[2] - used[1]) / (large - small),
            "used_memory_rss": int(info["used_memory_rss"]),
            "mem_fragmentation_ratio": float(info["mem_fragmentation_ratio"]),
            "maxmemory": int(info["maxmemory"]),
            "maxmemory_policy": info["maxmemory_policy"].strip(),
            "sample_key_len": len(sample) if sample else None,
            "sample_value_len": len(value) if value else None,
            "sample_pttl_ms": ttl,
            "store_counters": counters,
            "store_log": log_summary,
            "direct_bytes_per_key": direct,
        }
    finally:
        for p in (t.proc, redis.proc):
            bench.services.remove(p)
            PROCS.stop(p)


def direct_memory(tools: dict, work: Path, count: int, key_len: int, value_len: int, ttl_ms: int) -> float:
    """used_memory per key after `count` SETs of key_len-byte keys and value_len-byte values with
    PX ttl_ms, piped straight into a fresh redis-server: the proxy's writes without the proxy, and
    what another value size would cost."""
    redis = start_redis(tools["redis-server"], work, f"redis_direct_{key_len}_{value_len}")
    try:
        before = redis.used_memory()
        value = b"\x01" * value_len
        cli = PROCS.start([tools["redis-cli"], "-p", str(redis.port), "--pipe"],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ttl = str(ttl_ms).encode()
        chunk = []
        for i in range(count):
            # Distinct keys of the fingerprint's shape: a prefix and 16 scattered bytes.
            key = b"sw:"[: max(0, key_len - 16)] + ((i * 0x9E3779B97F4A7C15) % (1 << 128)).to_bytes(16, "big")
            key = key[-key_len:]
            chunk.append(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nPX\r\n$%d\r\n%s\r\n"
                         % (len(key), key, len(value), value, len(ttl), ttl))
            if len(chunk) == 10_000:
                cli.stdin.write(b"".join(chunk))
                chunk = []
        cli.stdin.write(b"".join(chunk))
        cli.stdin.close()
        if cli.wait(timeout=300) != 0:
            raise BenchError("redis-cli --pipe failed")
        PROCS.forget(cli)
        keys = redis.dbsize()
        if keys != count:
            raise BenchError(f"{redis.name} holds {keys} keys after {count} SETs")
        return (redis.used_memory() - before) / count
    finally:
        PROCS.stop(redis.proc)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def markdown(results: dict) -> str:
    m, st, s = results["machine"], results["settings"], results["summary"]
    lines = []
    w = lines.append
    w(f"### Fleet run of {m['date_utc']} (commit {m['commit']})")
    w("")
    w(f"Command: `{st['command']}`.")
    w("")
    w(
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, kernel {m['kernel']}, {m['mem_total_gib']} GiB. "
        f"Load average at start: {' '.join(m['loadavg_at_start'])}."
    )
    v = results["versions"]
    w(f"Tools: {v.get('haproxy')}; {v.get('redis-server')}; {v.get('wrk')}; {v.get('rustc')}.")
    w(
        f"Traffic: wrk -t2 -c{st['connections']}, {st['warmup']} s warm-up then {st['duration']} s per run, "
        f"GET /app with SESSIONID drawn at random from {st['pool']:,} ids, "
        f"{st['no_cookie_per_mille'] / 10:g}% without a cookie; {st['rounds_run']} round(s) in alternating order; "
        f"medians over {s['rounds_used']}. redis-server: --save \"\" --appendonly no --maxmemory {MAXMEMORY} "
        f"--maxmemory-policy {MAXMEMORY_POLICY}. [redis] timeout: {st['redis_timeout']}."
    )
    w("")
    w(
        "| target | req/s | p50 us | p99 us | proxy CPU us/req | of which kernel | redis-server CPU us/req | "
        "proxy + Redis us/req | backends CPU us/req | errors | sessions tracked |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in st["targets"]:
        x = s["medians"][name]
        total = None if x["proxy_cpu_us_per_req"] is None else x["proxy_cpu_us_per_req"] + (x["aux_cpu_us_per_req"] or 0)
        tracked = "-" if x["tracked_sessions"] is None else f"{x['tracked_sessions']:,}"
        w(
            f"| {LABELS[name]} | {x['rps']:,.0f} | {x['p50']:.0f} | {x['p99']:.0f} | {fmt(x['proxy_cpu_us_per_req'])} | "
            f"{fmt(x['proxy_sys_us_per_req'])} | {fmt(x['aux_cpu_us_per_req'])} | {fmt(total)} | "
            f"{x['backend_cpu_us_per_req']:.2f} | {x['errors']} | {tracked} |"
        )
    w("")
    w("Per-round ratios (median of the per-round values):")
    w("")
    w("| ratio | per round | median |")
    w("|---|---|---:|")
    for key, *_ in RATIOS:
        r = s["ratios"][key]
        if r["per_round"]:
            w(f"| {r['description']} | {', '.join(f'{v:.3f}' for v in r['per_round'])} | {fmt(r['median'], '.3f')} |")
    w("")
    w("Raw runs (other load = CPU used by processes outside the benchmark, in cores; flagged above "
      f"{h.OUTSIDE_LOAD_LIMIT}; store = the Redis store's counters over the measured run):")
    w("")
    w("| round | target | req/s | p99 us | proxy CPU us/req | redis-server us/req | other load | flagged | store |")
    w("|---:|---|---:|---:|---:|---:|---:|---|---|")
    for i, rnd in enumerate(results["load_rounds"]):
        for name, r in rnd.items():
            store = ", ".join(
                f"{short(k)} {v:,.0f}" for k, v in sorted(r.get("store", {}).items())
            )
            w(
                f"| {i + 1} | {name} | {r['rps']:,.0f} | {r['latency_us']['p99']} | {fmt(r['proxy_cpu_us_per_req'])} | "
                f"{fmt(r.get('aux_cpu_us_per_req'))} | {r['other_load_cores']:.2f} | {'yes' if r['flagged'] else ''} | {store} |"
            )
    thread_rows = []
    for name in st["targets"]:
        runs = [rnd[name] for rnd in results["load_rounds"] if "threads" in rnd.get(name, {})]
        names = sorted({t for r in runs for t in r["threads"]})
        for thread in names:
            xs = [r["threads"][thread] for r in runs if thread in r["threads"]]
            thread_rows.append(
                f"| {LABELS[name]} | {thread} ({xs[-1]['threads']}) | "
                f"{h.median([x['cpu_us_per_req'] for x in xs]):.2f} | {h.median([x['switches_per_req'] for x in xs]):.3f} |"
            )
    if thread_rows:
        w("")
        w("sessionwatch's threads (name (count)), medians over all rounds: CPU and voluntary context switches per request:")
        w("")
        w("| target | thread | CPU us/req | switches/req |")
        w("|---|---|---:|---:|")
        lines.extend(thread_rows)
    if results.get("store_log"):
        w("")
        w("The Redis store's log over the whole run (fills and warm-ups included): outages by reason, "
          "recoveries, and the near-cache records the recoveries wrote back to Redis:")
        w("")
        w("| target | outages | recoveries | records written back |")
        w("|---|---|---:|---:|")
        for name, x in results["store_log"].items():
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(x["degraded"].items())) or "0"
            w(f"| {name} | {reasons} | {x['recovered']} | {x['rewritten']:,} |")
    mem = results.get("memory")
    if mem:
        w("")
        w(
            f"Redis memory (a fresh redis-server; sessions issued through a sessionwatch with store = \"redis\", "
            f"each written by the proxy: key {mem['sample_key_len']} B, value {mem['sample_value_len']} B, "
            f"PX {mem['sample_pttl_ms']:,} ms left on a sampled key):"
        )
        w("")
        w("| sessions | keys | used_memory |")
        w("|---:|---:|---:|")
        for n, k, u in zip(mem["sessions"], mem["keys"], mem["used_memory"]):
            w(f"| {n:,} | {k:,} | {u:,} B ({u / 2**20:.1f} MiB) |")
        w("")
        large = mem["sessions"][2]
        w(
            f"Bytes per session: (used_memory at {large:,} - at 0) / {large:,} = **{mem['bytes_per_session']:.1f} B**; "
            f"from {mem['sessions'][1]:,} to {large:,}: {mem['bytes_per_session_incremental']:.1f} B. "
            f"used_memory_rss {mem['used_memory_rss'] / 2**20:.1f} MiB, mem_fragmentation_ratio "
            f"{mem['mem_fragmentation_ratio']}; maxmemory {mem['maxmemory']:,} B, policy {mem['maxmemory_policy']}."
        )
        w("")
        w(f"The same number of SETs piped straight into a fresh redis-server (key bytes/value bytes, PX 1800000): "
          + "; ".join(f"{k}: {v} B per key" for k, v in mem["direct_bytes_per_key"].items()) + ".")
    h.write_targets(w, results)
    return "\n".join(lines) + "\n"


def short(metric: str) -> str:
    """sessionwatch_store_lookups_total{result="hit"} -> lookups hit."""
    m = re.match(r"sessionwatch_store_(\w+?)(?:_total)?(?:\{(.*)\})?$", metric)
    if not m:
        return metric
    labels = " ".join(v for v in re.findall(r'="([^"]*)"', m.group(2) or ""))
    return f"{m.group(1)} {labels}".strip()


def targets_check(results: dict) -> list[tuple[str, str, bool | None]]:
    ratios, mem = results["summary"]["ratios"], results.get("memory") or {}
    out = []
    r = ratios["redis_vs_moka_cpu"]["median"]
    out.append(("proxy CPU/request with the Redis store (warm) <= 1.15x the moka store's",
                f"{r:.3f}x" if r else "n/a", r is not None and r <= 1.15))
    r = ratios["redis_total_vs_moka_cpu"]["median"]
    out.append(("the same with redis-server's CPU counted in (not the issue's target)",
                f"{r:.3f}x" if r else "n/a", None))
    r = ratios["redis_vs_haproxy_rps"]["median"]
    out.append(("req/s with the Redis store (warm) > HAProxy's stick table", f"{r:.3f}x" if r else "n/a",
                r is not None and r > 1.0))
    b = mem.get("bytes_per_session")
    if b is None:
        out.append(("<= 150 B per session in Redis (not measured in this run: --no-memory)", "n/a", None))
    else:
        large = mem["sessions"][2]
        out.append((f"<= 150 B per session in Redis at {large:,} sessions", f"{b:.1f} B", b <= 150))
    return out


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, short runs, 300k sessions for memory")
    h.add_round_args(ap)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--pool", type=int, default=100_000, help="session ids the traffic draws from")
    ap.add_argument("--large", type=int, help="sessions written to Redis for its memory (default 1000000; quick 300000)")
    ap.add_argument("--no-cold", action="store_true", help="leave out the replica with a cold near cache")
    ap.add_argument("--redis-timeout", help='[redis] timeout of the Redis targets (e.g. "50ms"); default: the proxy\'s')
    ap.add_argument("--no-memory", action="store_true", help="leave out Redis's memory per session")
    ap.add_argument("--skip-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--out", type=Path, default=h.RESULTS / "fleet.json")
    o = ap.parse_args()
    o.rounds = o.rounds or (1 if o.quick else 4)
    o.max_extra_rounds = o.max_extra_rounds if o.max_extra_rounds is not None else (0 if o.quick else 2)
    o.duration = o.duration or (3 if o.quick else 10)
    o.warmup = o.warmup or (1 if o.quick else 2)
    o.large = o.large or (300_000 if o.quick else 1_000_000)
    if o.large <= o.pool or o.large >= 2_000_000:
        raise SystemExit("--large must be above --pool and below 2000000")
    # The cold replica takes a fresh pool each round: ids up to (rounds + extra + 1) pools.
    if (o.rounds + o.max_extra_rounds + 1) * o.pool >= 2_097_152:
        raise SystemExit("too many rounds for fresh pools of this size")
    return o


def main() -> int:
    opts = parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, h._on_signal)
    work = h.RESULTS / "fleet-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)

    tools = h.ensure_tools({"haproxy": "haproxy", "wrk": "wrk", "taskset": "util-linux",
                            "redis-server": "redis-server", "redis-cli": "redis-tools"})
    release = h.build(opts.skip_build)
    targets = [t for t in TARGETS if not (opts.no_cold and t == "sw_redis_cold")]
    results = {
        "machine": h.machine_info(),
        "versions": h.tool_versions(tools),
        "settings": {
            "command": "bash bench/fleet.sh " + " ".join(sys.argv[1:]),
            "quick": opts.quick,
            "targets": targets,
            "rounds": opts.rounds,
            "connections": opts.connections,
            "wrk_threads": 2,
            "duration": opts.duration,
            "warmup": opts.warmup,
            "pool": opts.pool,
            "no_cookie_per_mille": 50,
            "large": opts.large,
            "cold_lookup_cap": COLD_LOOKUP_CAP,
            "redis_timeout": opts.redis_timeout or "default (5ms)",
            "outside_load_limit_cores": h.OUTSIDE_LOAD_LIMIT,
            "min_clean_rounds": 1 if opts.quick else 2,
        },
        "fills": {},
        "memory": {},
        "load_rounds": [],
        "latency_rounds": [],
        "store_log": {},  # not measured here: bench/run.py's pinned runs cover the request path
        "problems": [],
    }
    bench = FleetBench(opts, tools, release, work)
    try:
        log("starting the farm, redis-server and the proxies")
        a, port_a = h.start_backend(release, work, "a")
        b, port_b = h.start_backend(release, work, "b")
        bench.backends = [a, b]
        ports = [port_a, port_b]

        if not opts.no_memory:
            log(f"memory: {opts.large:,} sessions issued through a proxy into a fresh redis-server")
            results["memory"] = memory_step(bench, tools, ports, opts.pool, opts.large, results)

        redis = start_redis(tools["redis-server"], work, "redis")
        bench.services.append(redis.proc)
        t = bench.targets
        t["sw_moka"] = h.start_sessionwatch(release, work, "sw_moka", "learn", ports, None)
        t["sw_redis"] = start_redis_sessionwatch(bench, "sw_redis", ports, redis)
        t["haproxy"] = h.start_haproxy(tools, work, "haproxy", ports)
        issuer = None
        if "sw_redis_cold" in targets:
            t["sw_redis_cold"] = start_redis_sessionwatch(bench, "sw_redis_cold", ports, redis, COLD_LOOKUP_CAP)
            # Issues the cold replica's sessions; never measured.
            issuer = start_redis_sessionwatch(bench, "sw_redis_issuer", ports, redis)
            bench.services.append(issuer.proc)

        for name in ("sw_moka", "sw_redis", "haproxy"):
            log(f"fill: {opts.pool:,} sessions into {name}")
            results["fills"][name] = fill_checked(bench, results, name, t[name], 0, opts.pool)
        keys = settled_dbsize(redis, opts.pool)
        results["fills"]["redis_keys_after"] = keys
        if keys < opts.pool * 0.99:
            results["problems"].append(f"redis holds {keys:,} keys after {opts.pool:,} sessions were issued through sw_redis")

        def run_one(name: str, i: int) -> dict:
            if name != "sw_redis_cold":
                return bench.run_load(t[name])
            # A pool the cold replica has never seen, issued through another replica just now.
            first = (i + 1) * opts.pool
            log(f"  issuing ids {first:,}..{first + opts.pool:,} through sw_redis_issuer")
            results["fills"][f"cold_round_{i + 1}"] = fill_checked(bench, results, "sw_redis_issuer", issuer,
                                                                   first, opts.pool)
            return bench.run_load(t[name], first=first)

        h.run_rounds(opts, targets, results["load_rounds"], run_one)

        for rnd in results["load_rounds"]:
            for name, r in rnd.items():
                if r["error_count"]:
                    results["problems"].append(f"{name}: wrk saw errors {r['errors']} in one run")
                outages = r.get("store", {}).get("sessionwatch_store_outages_total")
                if outages:
                    results["problems"].append(f"{name}: the Redis store was degraded {outages:.0f} time(s) in one run")
        results["sessionwatch_store"] = {}
        for name in ("sw_moka", "sw_redis", "sw_redis_cold"):
            if name not in t:
                continue
            results["sessionwatch_store"][name] = store_counters(t[name])
            lines = h.log_lines(t[name].log_file)
            bad = [l for l in h.log_warnings(t[name].log_file) if "session store degraded" not in l]
            if bad:
                results["problems"].append(f"{name} logged {len(bad)} warnings or errors, e.g. {bad[0][:200]}")
            if name != "sw_moka":
                results["store_log"][name] = store_log(lines)
        for name, proc in (("backend a", a), ("backend b", b), ("redis-server", redis.proc)):
            if proc.poll() is not None:
                results["problems"].append(f"{name} exited with {proc.returncode}")
        for name, target in t.items():
            if target.proc is not None and target.proc.poll() is not None:
                results["problems"].append(f"{name} exited with {target.proc.returncode}")
    finally:
        PROCS.stop_all()

    results["settings"]["rounds_run"] = len(results["load_rounds"])
    results["summary"] = h.compute(results, targets, RATIOS)
    results["targets"] = targets_check(results)
    h.write_results(results, markdown(results), opts.out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    finally:
        PROCS.stop_all()
