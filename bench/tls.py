#!/usr/bin/env python3
"""TLS termination's cost, in one run of the benchmark harness (bench/run.py).

Six targets in front of the harness's farm of two bench/backend processes, each proxy with the
affinity it has in bench/run.sh (sessionwatch pin=learn, HAProxy's stick table, NGINX's cookie
hash), once on plain HTTP and once terminating TLS with the same ECDSA P-256 certificate (made
here with `openssl req`), in alternating order:
  sw_plain, sw_tls            sessionwatch, [listen.tls] with resumption on (tickets and a
                              session cache: the proxy's defaults)
  haproxy_plain, haproxy_tls  `bind ... ssl crt ... alpn h2,http/1.1`, its default session cache
                              and tickets, nbthread 2
  nginx_plain, nginx_tls      `listen ... ssl http2`, ssl_session_cache shared:SSL:10m, tickets
                              on, 2 workers

Keep-alive: wrk -t1 -c32 (bench/load.lua: a random session from the filled pool per request, 5%
without a cookie) over http:// or https://; req/s and the proxy's CPU per request (utime + stime
from /proc, before and after each run).

New connections: `openssl s_time` clients, each opening a connection per request (a TLS
handshake, then `GET /app HTTP/1.0`, answered and closed), full handshakes (-new) and resumed
ones (-reuse, TLS 1.3 tickets); the server's CPU per connection (on 2 cores the clients' own
crypto caps the rate, so the server's CPU is the figure, not the rate).

Reports Markdown on stdout and writes bench/results/tls.json and tls.md. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import run as h
from run import BENCH, CLK_TCK, OUTSIDE_LOAD_LIMIT, PROCS, RESULTS, BenchError, Target, log

PROXIES = ["sw", "haproxy", "nginx"]
TARGETS = [f"{p}_{k}" for p in PROXIES for k in ("plain", "tls")]
TLS_TARGETS = [f"{p}_tls" for p in PROXIES]
LABELS = {"sw": "sessionwatch (pin=learn)", "haproxy": "HAProxy (stick table)", "nginx": "NGINX (cookie hash)"}
TOOLS = dict(h.DEFAULT_TOOLS, openssl="openssl")


def make_certificate(work: Path) -> tuple[Path, Path, Path]:
    """An ECDSA P-256 certificate for localhost and 127.0.0.1: cert, key, and both in one file
    (HAProxy's `crt`)."""
    cert, key, both = work / "tls.crt", work / "tls.key", work / "tls.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    both.write_text(cert.read_text() + key.read_text())
    return cert, key, both


def https_get(port: int, path: str, timeout: float = 2.0) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=timeout, context=ctx) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def sw_tls_section(cert: Path, key: Path) -> str:
    return f'[listen.tls]\n[[listen.tls.certificates]]\ncert = "{cert}"\nkey = "{key}"\n'


def haproxy_tls_template(work: Path, both: Path) -> Path:
    """bench/haproxy.cfg.in terminating TLS, as HAProxy's configuration manual shows it."""
    text = (BENCH / "haproxy.cfg.in").read_text()
    bind = "    bind 127.0.0.1:@PORT@\n"
    if bind not in text:
        raise BenchError("haproxy.cfg.in: no bind line to put TLS on")
    text = text.replace(bind, f"    bind 127.0.0.1:@PORT@ ssl crt {both} alpn h2,http/1.1\n")
    text = text.replace("X-Forwarded-Proto http", "X-Forwarded-Proto https")
    out = work / "haproxy-tls.cfg.in"
    out.write_text(text)
    return out


def nginx_tls_template(work: Path, cert: Path, key: Path) -> Path:
    """bench/nginx.conf.in terminating TLS, as NGINX's "Configuring HTTPS servers" advises:
    a shared session cache, tickets, keep-alive."""
    text = (BENCH / "nginx.conf.in").read_text()
    listen = "        listen 127.0.0.1:@PORT@;\n"
    if listen not in text:
        raise BenchError("nginx.conf.in: no listen line to put TLS on")
    text = text.replace(
        listen,
        "        listen 127.0.0.1:@PORT@ ssl http2;\n"
        f"        ssl_certificate {cert};\n"
        f"        ssl_certificate_key {key};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        "        ssl_session_cache shared:SSL:10m;\n"
        "        ssl_session_timeout 1h;\n"
        "        ssl_session_tickets on;\n",
    )
    out = work / "nginx-tls.conf.in"
    out.write_text(text)
    return out


def start_haproxy_tls(tools, work: Path, template: Path, backends: list[int]) -> Target:
    (port,) = h.free_ports(1)
    sock = work / "haproxy_tls.sock"
    cfg = h.render(str(template), work / "haproxy_tls.cfg",
                   {"PORT": port, "BACKEND_A": backends[0], "BACKEND_B": backends[1], "STATS_SOCKET": sock})
    check = subprocess.run([tools["haproxy"], "-c", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"{cfg}: {check.stdout}{check.stderr}")
    log_file = work / "haproxy_tls.log"
    p = PROCS.start([tools["haproxy"], "-db", "-f", str(cfg)], stdout=open(log_file, "w"), stderr=subprocess.STDOUT)
    t = Target("haproxy_tls", port, p, "haproxy")
    t.scheme = "https"
    t.stats_socket = sock
    t.log_file = log_file
    h.wait_until("haproxy_tls ready", lambda: sock.exists() and https_get(port, "/health") == 200, p, log_file)
    return t


def start_nginx_tls(tools, work: Path, template: Path, backends: list[int]) -> Target:
    (port,) = h.free_ports(1)
    prefix = work / "nginx_tls"
    prefix.mkdir(exist_ok=True)
    cfg = h.render(str(template), prefix / "nginx.conf",
                   {"PORT": port, "BACKEND_A": backends[0], "BACKEND_B": backends[1], "PREFIX": prefix})
    check = subprocess.run([tools["nginx"], "-t", "-p", str(prefix), "-c", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"{cfg}: {check.stderr}")
    log_file = work / "nginx_tls.log"
    p = PROCS.start([tools["nginx"], "-p", str(prefix), "-c", str(cfg)], stdout=open(log_file, "w"),
                    stderr=subprocess.STDOUT)
    t = Target("nginx_tls", port, p, "nginx")
    t.scheme = "https"
    t.log_file = prefix / "error.log"
    h.wait_until("nginx_tls ready", lambda: len(h.children_of(p.pid)) >= 2 and https_get(port, "/health") == 200,
                 p, t.log_file)
    return t


def run_keepalive(bench: h.Bench, target: Target) -> dict:
    o = bench.opts
    bench.wrk.load(target.port, o.warmup, o.connections, o.threads, o.pool, scheme=target.scheme)
    r = bench.measure(target, o.duration, o.connections, o.threads)
    log(
        f"  {target.name:14} {r['rps']:>9.0f} req/s  proxy {r['proxy_cpu_us_per_req']} us/req "
        f"(user {r['proxy_cpu_us_per_req'] - r['proxy_sys_us_per_req']:.2f})  "
        f"other load {r['other_load_cores']:.2f} cores{'  FLAGGED' if r['flagged'] else ''}"
        f"{'  ERRORS ' + str(r['errors']) if r['error_count'] else ''}"
    )
    return r


S_TIME_DONE = re.compile(r"(\d+) connections in ([\d.]+)s")


def run_handshakes(bench: h.Bench, target: Target, mode: str) -> dict:
    """`clients` openssl s_time processes for `seconds`, each a connection per request; the
    server's CPU per connection."""
    o = bench.opts
    pids = target.pids()
    ours = bench.our_pids()
    before = {pid: h.proc_ticks(pid) for pid in ours}
    before_sys = {pid: h.proc_sys_ticks(pid) for pid in pids}
    before_busy, _ = h.cpu_totals()
    before_self = h.self_ticks()
    t0 = time.monotonic()
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{target.port}", f"-{mode}",
            "-time", str(int(o.handshake_seconds)), "-www", "/app"]
    procs = [PROCS.start(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(o.handshake_clients)]
    outputs, client_ticks = [], 0.0
    for p in procs:
        killer = threading.Timer(o.handshake_seconds + 30, p.kill)
        killer.start()
        outputs.append(p.stdout.read())
        killer.cancel()
        client_ticks += bench.wrk._finish(p)
    wall = time.monotonic() - t0
    connections = 0
    for out in outputs:
        found = S_TIME_DONE.findall(out)
        if not found:
            raise BenchError(f"s_time against {target.name} reported no count:\n{out[-2000:]}")
        # With -reuse, s_time prints only the timed (reusing) pass.
        connections += int(found[-1][0])
    after = {pid: h.proc_ticks(pid) for pid in ours}
    proxy_ticks = sum(after[p] - before[p] for p in pids if p in before)
    proxy_sys = sum(h.proc_sys_ticks(p) - before_sys[p] for p in pids)
    after_busy, _ = h.cpu_totals()
    ours_ticks = sum(after[p] - before[p] for p in ours) + client_ticks + (h.self_ticks() - before_self)
    other = (after_busy - before_busy - ours_ticks) / CLK_TCK / wall
    to_us = 1e6 / CLK_TCK / max(connections, 1)
    r = {
        "target": target.name,
        "mode": mode,
        "connections": connections,
        "per_second": round(connections / wall, 1),
        "server_cpu_us_per_conn": round(proxy_ticks * to_us, 1),
        "server_user_us_per_conn": round((proxy_ticks - proxy_sys) * to_us, 1),
        "client_cpu_us_per_conn": round(client_ticks * to_us, 1),
        "other_load_cores": round(other, 3),
        # The clients' own children and the kernel's TLS-free work are not counted apart here,
        # so the flag is looser than the keep-alive runs'.
        "flagged": other > 2 * OUTSIDE_LOAD_LIMIT,
    }
    log(
        f"  {target.name:14} {mode:6} {r['per_second']:>7.0f} conn/s  server {r['server_cpu_us_per_conn']} us/conn "
        f"(user {r['server_user_us_per_conn']})  other load {other:.2f}{'  FLAGGED' if r['flagged'] else ''}"
    )
    return r


def per_round_ratio(rounds: list[dict], a: str, b: str, key: str) -> float | None:
    values = [r[a][key] / r[b][key] for r in rounds if a in r and b in r and r[b][key]]
    return h.median(values)


def summarise(results: dict) -> dict:
    ka = results["keepalive_rounds"]
    hs = results["handshake_rounds"]
    s: dict = {"keepalive": {}, "handshakes": {}, "ratios": {}}
    for t in TARGETS:
        runs = [r[t] for r in ka if t in r]
        s["keepalive"][t] = {
            "rps": h.median([x["rps"] for x in runs]),
            "cpu_us_per_req": h.median([x["proxy_cpu_us_per_req"] for x in runs]),
            "user_us_per_req": h.median([x["proxy_cpu_us_per_req"] - x["proxy_sys_us_per_req"] for x in runs]),
        }
    for t in TLS_TARGETS:
        for mode in ("new", "reuse"):
            runs = [r[f"{t}/{mode}"] for r in hs if f"{t}/{mode}" in r]
            s["handshakes"][f"{t}/{mode}"] = {
                "server_cpu_us_per_conn": h.median([x["server_cpu_us_per_conn"] for x in runs]),
                "server_user_us_per_conn": h.median([x["server_user_us_per_conn"] for x in runs]),
                "per_second": h.median([x["per_second"] for x in runs]),
            }
    ratios = s["ratios"]
    for p in PROXIES:
        ratios[f"{p}_tls_vs_plain_rps"] = per_round_ratio(ka, f"{p}_tls", f"{p}_plain", "rps")
        ratios[f"{p}_tls_vs_plain_cpu"] = per_round_ratio(ka, f"{p}_tls", f"{p}_plain", "proxy_cpu_us_per_req")
    ratios["sw_vs_haproxy_tls_rps"] = per_round_ratio(ka, "sw_tls", "haproxy_tls", "rps")
    ratios["sw_vs_nginx_tls_rps"] = per_round_ratio(ka, "sw_tls", "nginx_tls", "rps")
    ratios["sw_vs_haproxy_tls_cpu"] = per_round_ratio(ka, "sw_tls", "haproxy_tls", "proxy_cpu_us_per_req")

    def hs_ratio(a: str, b: str) -> float | None:
        values = []
        for r in hs:
            if a in r and b in r and r[b]["server_cpu_us_per_conn"]:
                values.append(r[a]["server_cpu_us_per_conn"] / r[b]["server_cpu_us_per_conn"])
        return h.median(values)

    for mode in ("new", "reuse"):
        ratios[f"sw_vs_haproxy_{mode}_cpu"] = hs_ratio(f"sw_tls/{mode}", f"haproxy_tls/{mode}")
        ratios[f"sw_vs_nginx_{mode}_cpu"] = hs_ratio(f"sw_tls/{mode}", f"nginx_tls/{mode}")
    return s


def targets_check(s: dict) -> list[tuple[str, str, bool | None]]:
    r = s["ratios"]

    def ok(v, cond):
        return None if v is None else cond(v)

    sw_share, nginx_share = r["sw_tls_vs_plain_rps"], r["nginx_tls_vs_plain_rps"]
    full_h, full_n = r["sw_vs_haproxy_new_cpu"], r["sw_vs_nginx_new_cpu"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    return [
        ("keep-alive TLS req/s ahead of HAProxy", f"sessionwatch / HAProxy = {fmt(r['sw_vs_haproxy_tls_rps'])}",
         ok(r["sw_vs_haproxy_tls_rps"], lambda v: v > 1.0)),
        ("TLS/plain req/s of sessionwatch at least NGINX's",
         f"sessionwatch {fmt(sw_share)}, NGINX {fmt(nginx_share)}",
         None if sw_share is None or nginx_share is None else sw_share >= nginx_share),
        ("server CPU per full handshake at most min(HAProxy, NGINX)",
         f"sessionwatch / HAProxy = {fmt(full_h)}, / NGINX = {fmt(full_n)}",
         None if full_h is None or full_n is None else max(full_h, full_n) <= 1.0),
    ]


def markdown(results: dict) -> str:
    s = results["summary"]
    o = results["settings"]
    out = [
        "# TLS termination: sessionwatch, HAProxy, NGINX",
        "",
        f"One run: {o['rounds_run']} keep-alive rounds (wrk -t{o['wrk_threads']} -c{o['connections']}, "
        f"{o['duration']} s each, alternating order), {o['handshake_rounds']} rounds of new connections "
        f"({o['handshake_clients']} openssl s_time clients, {o['handshake_seconds']} s each); medians of "
        "per-round figures. Same ECDSA P-256 certificate everywhere.",
        "",
        "## Keep-alive",
        "",
        "| target | req/s | CPU us/req | user us/req |",
        "| --- | ---: | ---: | ---: |",
    ]
    for t in TARGETS:
        k = s["keepalive"][t]
        out.append(f"| {t} | {k['rps'] or 0:.0f} | {k['cpu_us_per_req'] or 0:.2f} | {k['user_us_per_req'] or 0:.2f} |")
    out += ["", "| ratio (median of rounds) | value |", "| --- | ---: |"]
    for key, value in s["ratios"].items():
        out.append(f"| {key} | {'n/a' if value is None else f'{value:.3f}'} |")
    out += [
        "",
        "## New connections (server CPU per connection: handshake + one proxied HTTP/1.0 request)",
        "",
        "| target | mode | server CPU us/conn | user us/conn | conn/s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for key, v in s["handshakes"].items():
        t, mode = key.split("/")
        label = "full" if mode == "new" else "resumed"
        out.append(
            f"| {t} | {label} | {v['server_cpu_us_per_conn'] or 0:.1f} | {v['server_user_us_per_conn'] or 0:.1f} "
            f"| {v['per_second'] or 0:.0f} |"
        )
    out += ["", "## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    for name, measured, met in results["targets"]:
        out.append(f"| {name} | {measured} | {'n/a' if met is None else ('yes' if met else 'NO')} |")
    if results["problems"]:
        out += ["", "## Problems", ""] + [f"- {p}" for p in results["problems"]]
    return "\n".join(out) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of each, short runs")
    h.add_round_args(ap)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--pool", type=int, default=100_000, help="session ids the traffic draws from")
    ap.add_argument("--handshake-rounds", type=int, help="rounds of new-connection runs (default 3; quick 1)")
    ap.add_argument("--handshake-seconds", type=float, help="seconds per s_time run (default 5; quick 2)")
    ap.add_argument("--handshake-clients", type=int, default=2, help="s_time processes at once")
    ap.add_argument("--skip-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--out", type=Path, default=RESULTS / "tls.json")
    o = ap.parse_args()
    o.rounds = o.rounds or (1 if o.quick else 4)
    o.max_extra_rounds = o.max_extra_rounds if o.max_extra_rounds is not None else (0 if o.quick else 1)
    o.duration = o.duration or (3 if o.quick else 5)
    o.warmup = o.warmup or (1 if o.quick else 2)
    o.handshake_rounds = o.handshake_rounds or (1 if o.quick else 3)
    o.handshake_seconds = o.handshake_seconds or (2 if o.quick else 5)
    return o


def main() -> int:
    opts = parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, h._on_signal)
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work-tls"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)

    tools = h.ensure_tools(TOOLS)
    release = h.build(opts.skip_build)
    results = {
        "machine": h.machine_info(),
        "versions": dict(h.tool_versions(tools), openssl=subprocess.run(
            ["openssl", "version"], capture_output=True, text=True).stdout.strip()),
        "settings": {
            "quick": opts.quick,
            "rounds": opts.rounds,
            "connections": opts.connections,
            "wrk_threads": opts.threads,
            "duration": opts.duration,
            "warmup": opts.warmup,
            "pool": opts.pool,
            "handshake_rounds": opts.handshake_rounds,
            "handshake_seconds": opts.handshake_seconds,
            "handshake_clients": opts.handshake_clients,
        },
        "fills": {},
        "keepalive_rounds": [],
        "handshake_rounds": [],
        "problems": [],
    }
    bench = h.Bench(opts, tools, release, work)
    try:
        cert, key, both = make_certificate(work)
        log("starting the farm and the proxies")
        a, port_a = h.start_backend(release, work, "a")
        b, port_b = h.start_backend(release, work, "b")
        bench.backends = [a, b]
        ports = [port_a, port_b]
        t = bench.targets
        t["sw_plain"] = h.start_sessionwatch(release, work, "sw_plain", "learn", ports, None)
        t["sw_tls"] = h.start_sessionwatch(release, work, "sw_tls", "learn", ports, None,
                                           sections=sw_tls_section(cert, key))
        t["sw_tls"].scheme = "https"
        t["haproxy_plain"] = h.start_haproxy(tools, work, "haproxy_plain", ports)
        t["haproxy_tls"] = start_haproxy_tls(tools, work, haproxy_tls_template(work, both), ports)
        t["nginx_plain"] = h.start_nginx(tools, work, ports)
        t["nginx_plain"].name = "nginx_plain"
        t["nginx_tls"] = start_nginx_tls(tools, work, nginx_tls_template(work, cert, key), ports)

        for name in ("sw_plain", "sw_tls", "haproxy_plain", "haproxy_tls"):
            log(f"fill: {opts.pool:,} sessions into {name}")
            results["fills"][name] = bench.wrk.fill(t[name].port, 0, opts.pool, scheme=t[name].scheme)

        h.run_rounds(opts, TARGETS, results["keepalive_rounds"], lambda name, _i: run_keepalive(bench, t[name]))

        log(f"new connections: {opts.handshake_rounds} rounds, full (-new) and resumed (-reuse)")
        for i in range(opts.handshake_rounds):
            order = TLS_TARGETS if i % 2 == 0 else list(reversed(TLS_TARGETS))
            rnd = {}
            for name in order:
                for mode in ("new", "reuse"):
                    rnd[f"{name}/{mode}"] = run_handshakes(bench, t[name], mode)
            results["handshake_rounds"].append(rnd)

        for rnd in results["keepalive_rounds"]:
            for name, r in rnd.items():
                if r["error_count"]:
                    results["problems"].append(f"{name}: wrk saw errors {r['errors']} in one run")
        for name in ("sw_plain", "sw_tls"):
            bad = h.log_warnings(t[name].log_file)
            if bad:
                results["problems"].append(f"{name} logged {len(bad)} warnings or errors, e.g. {bad[0][:200]}")
            status, body = h.http_get(t[name].admin_port, "/metrics")
            found = re.findall(r'^sessionwatch_tls_handshakes_total\{result="(\w+)"\} (\S+)$', body, re.M)
            results.setdefault("sw_tls_handshakes", {})[name] = {k: float(v) for k, v in found}
            m = re.search(r"^sessionwatch_plain_path_requests_total (\S+)$", body, re.M)
            results.setdefault("sw_plain_path_requests", {})[name] = float(m.group(1)) if m else None
        for name, target in t.items():
            if target.proc is not None and target.proc.poll() is not None:
                results["problems"].append(f"{name} exited with {target.proc.returncode}")
    finally:
        PROCS.stop_all()

    results["settings"]["rounds_run"] = len(results["keepalive_rounds"])
    results["summary"] = summarise(results)
    results["targets"] = targets_check(results["summary"])
    h.write_results(results, markdown(results), opts.out)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as e:
        log(f"error: {e}")
        raise SystemExit(1)
    finally:
        PROCS.stop_all()
