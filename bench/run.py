#!/usr/bin/env python3
"""The sessionwatch benchmark: one run, one load generator, the same traffic for every target.

Targets, all in front of the same farm of two bench/backend processes on 127.0.0.1:
  direct        wrk straight to backend a (the floor)
  sw_learn      sessionwatch, detection on, pin=learn, 100k sessions tracked
  sw_off        sessionwatch, detection on, pin=off
  haproxy       HAProxy, stick table learning SESSIONID from responses, 100k sessions
  nginx         NGINX, hash $cookie_SESSIONID consistent
  sw_learn_1m   sessionwatch pin=learn with 1M sessions tracked (CPU per request vs table size)
  haproxy_1m    HAProxy with 1M sessions in its stick table

Phases: build, start, fill (every target that learns sessions is taught the pool through
/issue?sid=ID), memory (RSS of sessionwatch and HAProxy after 1, 100k and 1M sessions), load
rounds in alternating order (64 keep-alive connections, random session per request), and a
latency run (1 connection, client, proxy and backends pinned to CPU 0).

Reports a Markdown summary on stdout (progress goes to stderr) and writes
bench/results/latest.json and bench/results/latest.md. Standard library only.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OUTSIDE_LOAD_LIMIT = 0.15  # cores used by others during a run before it is flagged

# Targets of the load rounds, in the order of even rounds (odd rounds run them reversed).
LOAD_TARGETS = ["direct", "sw_learn", "sw_off", "haproxy", "nginx", "sw_learn_1m", "haproxy_1m"]
LATENCY_TARGETS = ["direct", "sw_learn", "sw_off", "haproxy", "nginx"]
LABELS = {
    "direct": "direct to one backend",
    "sw_learn": "sessionwatch pin=learn",
    "sw_off": "sessionwatch pin=off",
    "haproxy": "HAProxy stick table",
    "nginx": "NGINX cookie hash",
    "sw_learn_1m": "sessionwatch pin=learn, 1M sessions",
    "haproxy_1m": "HAProxy stick table, 1M sessions",
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that ends the run with a message."""


# ---------------------------------------------------------------------------------------------
# Processes: every one started here is recorded and stopped when the run ends, however it ends.
# ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Children get SIGTERM if this process dies without cleaning up (even by SIGKILL).
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def start(self, args: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(args, preexec_fn=_die_with_parent, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    def forget(self, p: subprocess.Popen) -> None:
        with self.lock:
            if p in self.procs:
                self.procs.remove(p)

    def stop(self, p: subprocess.Popen) -> None:
        """Stop one process before the run ends (SIGTERM, SIGKILL after 5 s)."""
        self.forget(p)
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=2)

    def stop_all(self) -> None:
        with self.lock:
            procs = list(reversed(self.procs))
            self.procs.clear()
        for p in procs:
            if p.poll() is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    log(f"process {p.pid} did not stop")


PROCS = Processes()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------------------------


def proc_stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # Fields after "(comm)": state is field 3, so index i here is field i + 3.
    return data[data.rindex(")") + 2 :].split()


def proc_ticks(pid: int) -> int:
    fields = proc_stat_fields(pid)
    if fields is None:
        return 0
    return int(fields[11]) + int(fields[12])  # utime (14) + stime (15)


def proc_sys_ticks(pid: int) -> int:
    """The kernel part of proc_ticks: stime (15)."""
    fields = proc_stat_fields(pid)
    if fields is None:
        return 0
    return int(fields[12])


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat_fields(int(entry))
            if fields and int(fields[1]) == pid:
                out.append(int(entry))
    return out


def kernel_softirq_threads() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("ksoftirqd"):
                        out.append(int(entry))
            except OSError:
                pass
    return out


def cpu_totals() -> tuple[int, int]:
    """(busy, steal) clock ticks of all CPUs since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    v = [int(x) for x in parts[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    # Tick-based accounting charges softirq ticks to the running task too, so they belong in
    # "busy" to be subtracted along with the tasks'.
    return user + nice + system + irq + softirq, steal


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def set_affinity(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def self_ticks() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * CLK_TCK


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


DEFAULT_TOOLS = {"haproxy": "haproxy", "nginx": "nginx", "wrk": "wrk", "taskset": "util-linux"}


def ensure_tools(wanted: dict[str, str] = DEFAULT_TOOLS) -> dict[str, str]:
    """Path of every tool in `wanted` (tool -> Debian package), installing what is missing."""
    missing = [pkg for tool, pkg in wanted.items() if find_tool(tool) is None]
    if missing:
        if os.geteuid() != 0:
            raise BenchError(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
        log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=sys.stderr,
        )
    tools = {}
    for tool in wanted:
        path = find_tool(tool)
        if path is None:
            raise BenchError(f"{tool} is still missing after the install")
        tools[tool] = path
    return tools


def tool_versions(tools: dict[str, str]) -> dict[str, str]:
    def first_line(args):
        r = subprocess.run(args, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else ""

    flags = {"haproxy": "-v", "nginx": "-v", "wrk": "-v", "redis-server": "--version"}
    out = {tool: first_line([tools[tool], flag]) for tool, flag in flags.items() if tool in tools}
    out["rustc"] = first_line(["rustc", "--version"])
    return out


def build(skip: bool) -> Path:
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    target_dir = Path(json.loads(meta.stdout)["target_directory"])
    if not skip:
        log("cargo build --release -p sessionwatch -p sessionwatch-bench-backend (minutes on 2 cores)")
        subprocess.run(
            ["cargo", "build", "--release", "-p", "sessionwatch", "-p", "sessionwatch-bench-backend"],
            cwd=REPO,
            check=True,
            stdout=sys.stderr,
        )
    release = target_dir / "release"
    for binary in ("sessionwatch", "sessionwatch-bench-backend"):
        if not (release / binary).exists():
            raise BenchError(f"{release / binary} is missing: build without --skip-build")
    return release


def machine_info() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else ""),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def render(template: str, out: Path, values: dict[str, object]) -> Path:
    text = (BENCH / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError(f"{template}: unfilled {left}")
    out.write_text(text)
    return out


def log_lines(path: Path) -> list[str]:
    """A sessionwatch log's lines, without the colours tracing writes even to a file."""
    text = path.read_text(errors="replace")
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.splitlines()]


def log_warnings(path: Path) -> list[str]:
    return [l for l in log_lines(path) if " WARN " in l or " ERROR " in l]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def wait_until(what: str, check, proc: subprocess.Popen | None = None, log_file: Path | None = None,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file and log_file.exists() else ""
            raise BenchError(f"{what}: the process exited with {proc.returncode}\n{tail}")
        if check():
            return
        time.sleep(0.1)
    raise BenchError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# The farm and the proxies
# ---------------------------------------------------------------------------------------------


class Target:
    def __init__(self, name: str, port: int, proc: subprocess.Popen | None, kind: str):
        self.name = name
        self.port = port
        self.proc = proc
        self.kind = kind
        # How wrk reaches it: "https" for a target that terminates TLS (bench/tls.py).
        self.scheme = "http"
        self.admin_port: int | None = None
        self.stats_socket: Path | None = None
        self.log_file: Path | None = None
        # Processes the target depends on whose CPU is reported apart from the proxy's (the
        # redis-server of a sessionwatch with store = "redis").
        self.aux_pids: list[int] = []

    def pids(self) -> list[int]:
        """The proxy's processes: for NGINX the master and every worker."""
        if self.proc is None:
            return []
        return [self.proc.pid, *children_of(self.proc.pid)]

    def tracked(self) -> int | None:
        """Sessions the proxy says it tracks."""
        if self.kind == "sessionwatch":
            status, body = http_get(self.admin_port, "/metrics")
            m = re.search(r"^sessionwatch_sessions_tracked (\S+)$", body, re.M) if status == 200 else None
            return int(float(m.group(1))) if m else None
        if self.kind == "haproxy":
            out = haproxy_command(self.stats_socket, "show table farm")
            m = re.search(r"used:(\d+)", out)
            return int(m.group(1)) if m else None
        return None


def haproxy_command(path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def start_backend(release: Path, work: Path, name: str) -> tuple[subprocess.Popen, int]:
    err = open(work / f"backend-{name}.log", "w")
    p = PROCS.start(
        [str(release / "sessionwatch-bench-backend"), "0"],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    line = p.stdout.readline()
    m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        raise BenchError(f"backend {name} did not start: {line!r}")
    return p, int(m.group(1))


def start_sessionwatch(
    release: Path, work: Path, name: str, pin: str, backends: list[int], store: str | None,
    sections: str = "", log_filter: str = "warn",
) -> Target:
    """A sessionwatch from bench/sessionwatch.toml.in; `sections` are TOML tables added at the end
    (e.g. the [redis] section of store = "redis"), `log_filter` its RUST_LOG."""
    port, admin = free_ports(2)
    cfg = render(
        "sessionwatch.toml.in",
        work / f"{name}.toml",
        {
            "PORT": port,
            "ADMIN_PORT": admin,
            "BACKEND_A": backends[0],
            "BACKEND_B": backends[1],
            "PIN": pin,
            # The session store: the proxy's default unless --store names one.
            "SESSION_EXTRA": f'store = "{store}"' if store else "",
            "SECTIONS": sections,
        },
    )
    check = subprocess.run([str(release / "sessionwatch"), "check-config", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"{cfg}: {check.stderr.strip()}")
    log_file = work / f"{name}.log"
    p = PROCS.start(
        [str(release / "sessionwatch"), "serve", "--config", str(cfg)],
        stdout=open(log_file, "w"),
        stderr=subprocess.STDOUT,
        # The peers log nothing per request; sessionwatch logs only warnings and errors.
        env=dict(os.environ, RUST_LOG=log_filter),
    )
    t = Target(name, port, p, "sessionwatch")
    t.admin_port = admin
    t.log_file = log_file
    wait_until(f"{name} ready", lambda: http_get(admin, "/readyz")[0] == 200, p, log_file)
    return t


def start_haproxy(tools, work: Path, name: str, backends: list[int]) -> Target:
    (port,) = free_ports(1)
    sock = work / f"{name}.sock"
    cfg = render(
        "haproxy.cfg.in",
        work / f"{name}.cfg",
        {"PORT": port, "BACKEND_A": backends[0], "BACKEND_B": backends[1], "STATS_SOCKET": sock},
    )
    check = subprocess.run([tools["haproxy"], "-c", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"{cfg}: {check.stdout}{check.stderr}")
    log_file = work / f"{name}.log"
    p = PROCS.start([tools["haproxy"], "-db", "-f", str(cfg)], stdout=open(log_file, "w"), stderr=subprocess.STDOUT)
    t = Target(name, port, p, "haproxy")
    t.stats_socket = sock
    t.log_file = log_file
    wait_until(f"{name} ready", lambda: sock.exists() and http_get(port, "/health")[0] == 200, p, log_file)
    return t


def start_nginx(tools, work: Path, backends: list[int]) -> Target:
    (port,) = free_ports(1)
    prefix = work / "nginx"
    prefix.mkdir(exist_ok=True)
    cfg = render(
        "nginx.conf.in",
        prefix / "nginx.conf",
        {"PORT": port, "BACKEND_A": backends[0], "BACKEND_B": backends[1], "PREFIX": prefix},
    )
    check = subprocess.run([tools["nginx"], "-t", "-p", str(prefix), "-c", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"{cfg}: {check.stderr}")
    log_file = work / "nginx.log"
    p = PROCS.start([tools["nginx"], "-p", str(prefix), "-c", str(cfg)], stdout=open(log_file, "w"), stderr=subprocess.STDOUT)
    t = Target("nginx", port, p, "nginx")
    t.log_file = prefix / "error.log"
    wait_until(
        "nginx ready",
        lambda: len(children_of(p.pid)) >= 2 and http_get(port, "/health")[0] == 200,
        p,
        t.log_file,
    )
    return t


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------


class Wrk:
    def __init__(self, tools):
        self.wrk = tools["wrk"]
        self.taskset = tools["taskset"]

    def _reader(self, p: subprocess.Popen, lines: queue.Queue) -> None:
        for line in p.stdout:
            lines.put(line)
        lines.put(None)

    def _finish(self, p: subprocess.Popen) -> float:
        """Reap wrk and return the CPU ticks it used (its own rusage)."""
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        PROCS.forget(p)
        return (ru.ru_utime + ru.ru_stime) * CLK_TCK

    def load(
        self,
        port: int,
        seconds: float,
        connections: int,
        threads: int,
        pool: int,
        first: int = 0,
        no_cookie_per_mille: int = 50,
        pin_cpu0: bool = False,
        scheme: str = "http",
    ) -> tuple[dict, float]:
        """One measured wrk run: (result of load.lua's done(), wrk CPU ticks)."""
        args = [
            self.wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "--latency",
            "-s",
            str(BENCH / "load.lua"),
            f"{scheme}://127.0.0.1:{port}/app",
            "--",
            str(pool),
            str(first),
            str(no_cookie_per_mille),
        ]
        if pin_cpu0:
            args = [self.taskset, "-c", "0", *args]
        p = PROCS.start(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killer = threading.Timer(seconds + 60, p.kill)
        killer.start()
        out = p.stdout.read()
        killer.cancel()
        ticks = self._finish(p)
        m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
        if p.returncode != 0 or not m:
            raise BenchError(f"wrk failed (exit {p.returncode}):\n{out}")
        return json.loads(m.group(1)), ticks

    def fill(self, port: int, first: int, count: int, connections: int = 16, scheme: str = "http") -> dict:
        """Teach the proxy sessions first..first+count through /issue; returns counts and rate."""
        args = [
            self.wrk,
            "-t1",
            f"-c{connections}",
            "-d3600s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "fill.lua"),
            f"{scheme}://127.0.0.1:{port}/",
            "--",
            str(first),
            str(count),
        ]
        started = time.monotonic()
        p = PROCS.start(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._reader, args=(p, lines), daemon=True).start()
        deadline = started + 60 + count / 1000  # far beyond any plausible rate
        done = None
        output = []
        while done is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                p.kill()
                self._finish(p)
                raise BenchError(f"fill of {count} sessions on port {port} timed out:\n{''.join(output)}")
            if line is None:
                self._finish(p)
                raise BenchError(f"wrk ended during a fill:\n{''.join(output)}")
            output.append(line)
            m = re.match(r"FILL_DONE issued=(\d+) failed=(\d+)", line)
            if m:
                done = {"issued": int(m.group(1)), "failed": int(m.group(2))}
        elapsed = time.monotonic() - started
        p.send_signal(signal.SIGINT)
        while lines.get() is not None:
            pass
        self._finish(p)
        done["seconds"] = round(elapsed, 1)
        done["per_second"] = round(count / elapsed)
        if done["failed"]:
            raise BenchError(f"fill on port {port}: {done['failed']} of {count} /issue requests failed")
        return done


# ---------------------------------------------------------------------------------------------
# Measuring one run
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, opts, tools, release: Path, work: Path):
        self.opts = opts
        self.tools = tools
        self.release = release
        self.work = work
        self.wrk = Wrk(tools)
        self.targets: dict[str, Target] = {}
        self.backends: list[subprocess.Popen] = []
        # Other processes of the benchmark (a redis-server, a proxy that is not measured): their
        # CPU is not outside load.
        self.services: list[subprocess.Popen] = []

    def our_pids(self) -> list[int]:
        pids = [b.pid for b in self.backends] + [s.pid for s in self.services]
        for t in self.targets.values():
            pids.extend(t.pids())
        return list(dict.fromkeys(pids))

    def measure(self, target: Target, seconds: float, connections: int, threads: int, pin_cpu0=False,
                first: int = 0) -> dict:
        pids = target.pids()
        ours = list(dict.fromkeys(self.our_pids() + target.aux_pids))
        softirq = kernel_softirq_threads()
        before_busy, before_steal = cpu_totals()
        before = {pid: proc_ticks(pid) for pid in ours}
        before_sys = {pid: proc_sys_ticks(pid) for pid in pids}
        before_softirq = sum(proc_ticks(p) for p in softirq)
        before_self = self_ticks()
        t0 = time.monotonic()
        result, wrk_ticks = self.wrk.load(
            target.port, seconds, connections, threads, self.opts.pool, first=first, pin_cpu0=pin_cpu0,
            scheme=target.scheme,
        )
        wall = time.monotonic() - t0
        after = {pid: proc_ticks(pid) for pid in ours}
        proxy_sys_ticks = sum(proc_sys_ticks(pid) - before_sys[pid] for pid in pids)
        after_busy, after_steal = cpu_totals()
        softirq_ticks = sum(proc_ticks(p) for p in softirq) - before_softirq
        delta = {pid: after[pid] - before[pid] for pid in ours}
        proxy_ticks = sum(delta[p] for p in pids if p in delta)
        backend_ticks = sum(delta[b.pid] for b in self.backends)
        aux_ticks = sum(delta[p] for p in target.aux_pids if p in delta)
        ours_ticks = sum(delta.values()) + wrk_ticks + (self_ticks() - before_self) + softirq_ticks
        other_cores = (after_busy - before_busy - ours_ticks) / CLK_TCK / wall
        requests = result["requests"]
        errors = sum(result["errors"].values())
        to_us = 1e6 / CLK_TCK / max(requests, 1)
        return {
            "target": target.name,
            "requests": requests,
            "rps": round(requests / (result["duration_us"] / 1e6), 1),
            "latency_us": result["latency_us"],
            "errors": result["errors"],
            "error_count": errors,
            "proxy_cpu_us_per_req": round(proxy_ticks * to_us, 2) if pids else None,
            "proxy_sys_us_per_req": round(proxy_sys_ticks * to_us, 2) if pids else None,
            # utime alone: the part of the proxy's cost that is its own code, not the kernel's.
            "proxy_user_us_per_req": round((proxy_ticks - proxy_sys_ticks) * to_us, 2) if pids else None,
            "backend_cpu_us_per_req": round(backend_ticks * to_us, 2),
            "aux_cpu_us_per_req": round(aux_ticks * to_us, 2) if target.aux_pids else None,
            "wrk_cpu_us_per_req": round(wrk_ticks * to_us, 2),
            "proxy_cores": round(proxy_ticks / CLK_TCK / wall, 2),
            "other_load_cores": round(other_cores, 3),
            "steal_cores": round((after_steal - before_steal) / CLK_TCK / wall, 3),
            "flagged": other_cores > OUTSIDE_LOAD_LIMIT,
            "tracked_sessions": target.tracked(),
        }

    def run_load(self, target: Target, first: int = 0) -> dict:
        """One warm-up and one measured run; the measured traffic draws from ids first..first+pool
        (the warm-up always from the first pool)."""
        o = self.opts
        self.wrk.load(target.port, o.warmup, o.connections, 2, o.pool)
        r = self.measure(target, o.duration, o.connections, 2, first=first)
        aux = "" if r["aux_cpu_us_per_req"] is None else f"  aux {r['aux_cpu_us_per_req']} us/req"
        log(
            f"  {target.name:12} {r['rps']:>9.0f} req/s  p50 {r['latency_us']['p50']:>6} us  "
            f"p99 {r['latency_us']['p99']:>6} us  proxy {r['proxy_cpu_us_per_req']} us/req{aux}  "
            f"other load {r['other_load_cores']:.2f} cores{'  FLAGGED' if r['flagged'] else ''}"
            f"{'  ERRORS ' + str(r['errors']) if r['error_count'] else ''}"
        )
        return r

    def run_latency(self, target: Target) -> dict:
        o = self.opts
        pinned = [b.pid for b in self.backends] + target.pids()
        set_affinity(pinned, {0})
        try:
            self.wrk.load(target.port, 1, 1, 1, o.pool, pin_cpu0=True)
            r = self.measure(target, o.latency_duration, 1, 1, pin_cpu0=True)
        finally:
            set_affinity(pinned, set(range(os.cpu_count() or 1)))
        log(
            f"  {target.name:12} 1 conn: p50 {r['latency_us']['p50']} us  p99 {r['latency_us']['p99']} us  "
            f"other load {r['other_load_cores']:.2f}{'  FLAGGED' if r['flagged'] else ''}"
        )
        return r


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise_rounds(rounds: list[dict[str, dict]], targets: list[str], min_clean: int) -> tuple[list[int], str]:
    clean = [i for i, r in enumerate(rounds) if not any(run["flagged"] for run in r.values())]
    if len(clean) >= min_clean:
        return clean, f"the {len(clean)} clean round(s) of {len(rounds)}"
    return list(range(len(rounds))), (
        f"all {len(rounds)} round(s), flagged ones included ({len(clean)} clean: too few)"
    )


def user_us(run: dict):
    """User-space CPU per request (utime), also for runs recorded before it had a field."""
    if run.get("proxy_user_us_per_req") is not None:
        return run["proxy_user_us_per_req"]
    if run.get("proxy_cpu_us_per_req") is None or run.get("proxy_sys_us_per_req") is None:
        return None
    return round(run["proxy_cpu_us_per_req"] - run["proxy_sys_us_per_req"], 2)


RATIOS = [
    # name, numerator target, denominator target, field, description
    ("learn_vs_haproxy_rps", "sw_learn", "haproxy", "rps", "req/s, sessionwatch pin=learn / HAProxy"),
    ("off_vs_nginx_rps", "sw_off", "nginx", "rps", "req/s, sessionwatch pin=off / NGINX"),
    ("learn_vs_haproxy_cpu", "sw_learn", "haproxy", "proxy_cpu_us_per_req", "CPU/req, sessionwatch pin=learn / HAProxy"),
    ("off_vs_nginx_cpu", "sw_off", "nginx", "proxy_cpu_us_per_req", "CPU/req, sessionwatch pin=off / NGINX"),
    ("learn_vs_haproxy_user", "sw_learn", "haproxy", user_us, "user CPU/req, sessionwatch pin=learn / HAProxy"),
    ("off_vs_nginx_user", "sw_off", "nginx", user_us, "user CPU/req, sessionwatch pin=off / NGINX"),
    ("learn_vs_haproxy_p99", "sw_learn", "haproxy", "p99", "p99, sessionwatch pin=learn / HAProxy"),
    ("off_vs_nginx_p99", "sw_off", "nginx", "p99", "p99, sessionwatch pin=off / NGINX"),
    ("sw_cpu_1m_vs_100k", "sw_learn_1m", "sw_learn", "proxy_cpu_us_per_req", "CPU/req, sessionwatch 1M / 100k sessions"),
    ("haproxy_cpu_1m_vs_100k", "haproxy_1m", "haproxy", "proxy_cpu_us_per_req", "CPU/req, HAProxy 1M / 100k sessions"),
]


def field(run: dict, name: str):
    if callable(name):
        return name(run)
    if name in ("p50", "p99", "p999"):
        return run["latency_us"][name]
    return run[name]


def compute(results: dict, targets: list[str] = LOAD_TARGETS, ratios_wanted=RATIOS) -> dict:
    rounds = results["load_rounds"]
    used, note = summarise_rounds(rounds, targets, results["settings"]["min_clean_rounds"])
    medians = {}
    for name in targets:
        runs = [rounds[i][name] for i in used if name in rounds[i]]
        medians[name] = {
            "rps": median([r["rps"] for r in runs]),
            "p50": median([r["latency_us"]["p50"] for r in runs]),
            "p99": median([r["latency_us"]["p99"] for r in runs]),
            "p999": median([r["latency_us"]["p999"] for r in runs]),
            "proxy_cpu_us_per_req": median([r["proxy_cpu_us_per_req"] for r in runs]),
            "proxy_sys_us_per_req": median([r.get("proxy_sys_us_per_req") for r in runs]),
            "proxy_user_us_per_req": median([user_us(r) for r in runs]),
            "backend_cpu_us_per_req": median([r["backend_cpu_us_per_req"] for r in runs]),
            "aux_cpu_us_per_req": median([r.get("aux_cpu_us_per_req") for r in runs]),
            "errors": sum(r["error_count"] for r in runs),
            "tracked_sessions": runs[-1]["tracked_sessions"] if runs else None,
        }
    ratios = {}
    for key, num, den, fld, desc in ratios_wanted:
        per_round = []
        for i in used:
            a, b = rounds[i].get(num), rounds[i].get(den)
            if a and b and field(a, fld) and field(b, fld):
                per_round.append(round(field(a, fld) / field(b, fld), 3))
        ratios[key] = {"description": desc, "per_round": per_round, "median": median(per_round)}

    latency = {}
    lat_rounds = results["latency_rounds"]
    if lat_rounds:
        lat_used, lat_note = summarise_rounds(lat_rounds, LATENCY_TARGETS, results["settings"]["min_clean_rounds"])
        for name in LATENCY_TARGETS:
            added = [
                lat_rounds[i][name]["latency_us"]["p50"] - lat_rounds[i]["direct"]["latency_us"]["p50"]
                for i in lat_used
            ]
            latency[name] = {
                "p50": median([lat_rounds[i][name]["latency_us"]["p50"] for i in lat_used]),
                "p99": median([lat_rounds[i][name]["latency_us"]["p99"] for i in lat_used]),
                "added_p50_per_round": added,
                "added_p50": median(added),
                "proxy_cpu_us_per_req": median([lat_rounds[i][name]["proxy_cpu_us_per_req"] for i in lat_used]),
            }
        latency["rounds_used"] = lat_note
    return {"rounds_used": note, "medians": medians, "ratios": ratios, "latency": latency}


def targets_check(results: dict) -> list[tuple[str, str, bool | None]]:
    s = results["summary"]
    med, ratios, lat, mem = s["medians"], s["ratios"], s["latency"], results["memory"]
    out = []

    def add(goal, figure, ok):
        out.append((goal, figure, ok))

    r = ratios["learn_vs_haproxy_rps"]["median"]
    add("pin=learn req/s >= 1.3x HAProxy stick table", f"{r:.2f}x" if r else "n/a", r is not None and r >= 1.3)
    r = ratios["off_vs_nginx_rps"]["median"]
    add("pin=off req/s >= 0.9x NGINX cookie hash", f"{r:.2f}x" if r else "n/a", r is not None and r >= 0.9)
    cpu = med["sw_learn"]["proxy_cpu_us_per_req"]
    add("proxy CPU <= 15 us/request with tracking on (pin=learn)", f"{cpu:.1f} us" if cpu else "n/a", cpu is not None and cpu <= 15)
    # The request path against NGINX: user-space CPU (utime) per request, and req/s.
    r = ratios["off_vs_nginx_user"]["median"]
    add("user CPU/request, pin=off, <= 1.25x NGINX's", f"{r:.2f}x" if r else "n/a", r is not None and r <= 1.25)
    r = ratios["off_vs_nginx_rps"]["median"]
    add("pin=off (detection on) req/s >= 0.95x NGINX's", f"{r:.2f}x" if r else "n/a", r is not None and r >= 0.95)
    r = ratios["learn_vs_haproxy_rps"]["median"]
    add("pin=learn req/s >= 1.25x HAProxy's stick table", f"{r:.2f}x" if r else "n/a", r is not None and r >= 1.25)
    r = ratios["learn_vs_haproxy_p99"]["median"]
    add(
        "p99 at 64 connections no worse than HAProxy's",
        f"{med['sw_learn']['p99']:.0f} vs {med['haproxy']['p99']:.0f} us ({r:.2f}x)" if r else "n/a",
        r is not None and r <= 1.0,
    )
    if lat:
        a, h = lat["sw_learn"]["added_p50"], lat["haproxy"]["added_p50"]
        add("added p50 on one pinned connection <= HAProxy's", f"{a:.0f} vs {h:.0f} us", a <= h)
    else:
        add("added p50 on one pinned connection <= HAProxy's", "not measured", None)
    b = mem.get("sessionwatch", {}).get("bytes_per_session")
    add(f"<= 200 B per tracked session at {mem.get('large', 0):,} sessions", f"{b:.0f} B" if b else "n/a", b is not None and b <= 200)
    r = ratios["sw_cpu_1m_vs_100k"]["median"]
    add("CPU/request grows <= 10% from 100k to 1M sessions", f"{(r - 1) * 100:+.1f}%" if r else "n/a", r is not None and r <= 1.10)
    return out


def markdown(results: dict) -> str:
    m, st, s = results["machine"], results["settings"], results["summary"]
    lines = []
    w = lines.append
    w(f"### Run of {m['date_utc']} (commit {m['commit']})")
    w("")
    w(
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, kernel {m['kernel']}, {m['mem_total_gib']} GiB. "
        f"Load average at start: {' '.join(m['loadavg_at_start'])}."
    )
    w(
        f"Tools: {results['versions']['haproxy']}; {results['versions']['nginx']}; "
        f"{results['versions']['wrk']}; {results['versions']['rustc']}. "
        f"sessionwatch session store: {st['sessionwatch_store']}."
    )
    w(
        f"Traffic: wrk -t2 -c{st['connections']}, {st['warmup']} s warm-up then {st['duration']} s per run, "
        f"GET /app with SESSIONID drawn at random from {st['pool']:,} ids, {st['no_cookie_per_mille'] / 10:g}% without a cookie; "
        f"{st['rounds_run']} round(s) in alternating order; medians over {s['rounds_used']}."
    )
    w("")
    w(
        "| target | req/s | p50 us | p99 us | p99.9 us | proxy CPU us/req | of which kernel | "
        "of which user | backends CPU us/req | errors | sessions tracked |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in LOAD_TARGETS:
        x = s["medians"][name]
        cpu = "-" if x["proxy_cpu_us_per_req"] is None else f"{x['proxy_cpu_us_per_req']:.2f}"
        sys_cpu = "-" if x.get("proxy_sys_us_per_req") is None else f"{x['proxy_sys_us_per_req']:.2f}"
        user_cpu = "-" if x.get("proxy_user_us_per_req") is None else f"{x['proxy_user_us_per_req']:.2f}"
        tracked = "-" if x["tracked_sessions"] is None else f"{x['tracked_sessions']:,}"
        w(
            f"| {LABELS[name]} | {x['rps']:,.0f} | {x['p50']:.0f} | {x['p99']:.0f} | {x['p999']:.0f} | {cpu} | "
            f"{sys_cpu} | {user_cpu} | {x['backend_cpu_us_per_req']:.2f} | {x['errors']} | {tracked} |"
        )
    w("")
    w("Per-round ratios (median of the per-round values):")
    w("")
    w("| ratio | per round | median |")
    w("|---|---|---:|")
    for key, *_ in RATIOS:
        r = s["ratios"][key]
        med = "-" if r["median"] is None else f"{r['median']:.3f}"
        w(f"| {r['description']} | {', '.join(f'{v:.3f}' for v in r['per_round'])} | {med} |")
    w("")
    w("Raw runs (other load = CPU used by processes outside the benchmark, in cores; flagged above "
      f"{OUTSIDE_LOAD_LIMIT}):")
    w("")
    w("| round | target | req/s | p50 us | p99 us | p99.9 us | proxy CPU us/req | other load | flagged |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for i, rnd in enumerate(results["load_rounds"]):
        for name, r in rnd.items():
            cpu = "-" if r["proxy_cpu_us_per_req"] is None else f"{r['proxy_cpu_us_per_req']:.2f}"
            lu = r["latency_us"]
            w(
                f"| {i + 1} | {name} | {r['rps']:,.0f} | {lu['p50']} | {lu['p99']} | {lu['p999']} | {cpu} | "
                f"{r['other_load_cores']:.2f} | {'yes' if r['flagged'] else ''} |"
            )
    mem = results["memory"]
    if mem:
        w("")
        w(f"Memory (RSS after a warm-up with 1 session, then after filling {mem['small']:,} and {mem['large']:,} "
          "distinct sessions; bytes per session = (RSS_large - RSS_small) / (large - small)):")
        w("")
        w(f"| proxy | RSS, 1 session | RSS, {mem['small']:,} | RSS, {mem['large']:,} | tracked at {mem['large']:,} | bytes/session |")
        w("|---|---:|---:|---:|---:|---:|")
        for proxy in ("sessionwatch", "haproxy"):
            x = mem.get(proxy)
            if x:
                w(
                    f"| {proxy} | {x['rss_kib'][0] / 1024:.1f} MiB | {x['rss_kib'][1] / 1024:.1f} MiB | "
                    f"{x['rss_kib'][2] / 1024:.1f} MiB | {x['tracked'][2] or 0:,} | {x['bytes_per_session']:.0f} |"
                )
    lat = s["latency"]
    if lat:
        w("")
        w(f"Latency on one connection, wrk, proxy and backends pinned to CPU 0 ({st['latency_duration']} s per run, "
          f"{lat['rounds_used']}):")
        w("")
        w("| target | p50 us | p99 us | added p50 over direct, us | per round |")
        w("|---|---:|---:|---:|---|")
        for name in LATENCY_TARGETS:
            x = lat[name]
            w(
                f"| {LABELS[name]} | {x['p50']:.0f} | {x['p99']:.0f} | {x['added_p50']:.0f} | "
                f"{', '.join(str(v) for v in x['added_p50_per_round'])} |"
            )
    write_targets(w, results)
    return "\n".join(lines) + "\n"


def write_targets(w, results: dict) -> None:
    """The report's last part, alike in every harness: each target met or not, then the problems."""
    w("")
    w("Targets:")
    w("")
    w("| goal | measured | met |")
    w("|---|---|---|")
    for goal, figure, ok in results["targets"]:
        w(f"| {goal} | {figure} | {'yes' if ok else ('n/a' if ok is None else 'no')} |")
    if results["problems"]:
        w("")
        w("Problems seen:")
        w("")
        for p in results["problems"]:
            w(f"- {p}")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def add_round_args(ap: argparse.ArgumentParser) -> None:
    """The options of the measured rounds, alike in every harness."""
    ap.add_argument("--rounds", type=int, help="load rounds (default 4; quick 1)")
    ap.add_argument("--max-extra-rounds", type=int, help="extra rounds when others loaded the machine (default 2; quick 0)")
    ap.add_argument("--duration", type=float, help="seconds per measured run (default 10; quick 3)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up before each run (default 2; quick 1)")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, short runs, smaller memory fill")
    add_round_args(ap)
    ap.add_argument("--latency-duration", type=float, help="seconds per latency run (default 10; quick 3)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--pool", type=int, default=100_000, help="session ids the traffic draws from")
    ap.add_argument("--large", type=int, help="sessions in the large table (default 1000000; quick 300000)")
    ap.add_argument("--no-latency", action="store_true", help="skip the pinned single-connection run")
    ap.add_argument("--store", help='sessionwatch\'s [session] store (e.g. "compact"); default: the proxy\'s default')
    ap.add_argument("--skip-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    o = ap.parse_args()
    o.rounds = o.rounds or (1 if o.quick else 4)
    o.max_extra_rounds = o.max_extra_rounds if o.max_extra_rounds is not None else (0 if o.quick else 2)
    o.duration = o.duration or (3 if o.quick else 10)
    o.warmup = o.warmup or (1 if o.quick else 2)
    o.latency_duration = o.latency_duration or (3 if o.quick else 10)
    o.large = o.large or (300_000 if o.quick else 1_000_000)
    if o.large <= o.pool or o.large >= 2_000_000:
        raise SystemExit("--large must be above --pool and below 2000000")
    return o


def memory_profile(bench: Bench, target: Target, small: int, large: int) -> dict:
    """RSS after 1 session, `small` and `large` sessions; this also fills the target for its runs."""
    w, pid = bench.wrk, target.proc.pid
    w.fill(target.port, 0, 1)
    # Warm-up with one session (connections, buffers, thread pools), as in the load rounds.
    w.load(target.port, bench.opts.warmup, bench.opts.connections, 2, pool=1, no_cookie_per_mille=0)
    time.sleep(0.5)
    rss, tracked, fills = [rss_kib(pid)], [target.tracked()], []
    for first, count in ((1, small - 1), (small, large - small)):
        fills.append(w.fill(target.port, first, count))
        time.sleep(0.5)
        rss.append(rss_kib(pid))
        tracked.append(target.tracked())
        log(f"  {target.name}: RSS {rss[-1] / 1024:.1f} MiB with {tracked[-1]} sessions tracked")
    return {
        "rss_kib": rss,
        "tracked": tracked,
        "fills": fills,
        "bytes_per_session": (rss[2] - rss[1]) * 1024 / (large - small),
    }


def run_rounds(opts, targets: list[str], rounds: list[dict], run_one) -> None:
    """Load rounds in alternating order (A B ... B A) until opts.rounds are clean, with at most
    opts.max_extra_rounds more; run_one(target name, round index) measures one run."""
    log(f"load: {opts.rounds} rounds of {len(targets)} targets, {opts.duration} s each")
    extra = 0
    while True:
        i = len(rounds)
        order = targets if i % 2 == 0 else list(reversed(targets))
        log(f"round {i + 1}: {' '.join(order)}")
        rounds.append({name: run_one(name, i) for name in order})
        clean = sum(1 for r in rounds if not any(x["flagged"] for x in r.values()))
        if len(rounds) >= opts.rounds and (clean >= opts.rounds or extra >= opts.max_extra_rounds):
            break
        if len(rounds) >= opts.rounds:
            extra += 1
            log(f"only {clean} clean rounds: one more ({extra} of at most {opts.max_extra_rounds})")


def main() -> int:
    opts = parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)

    tools = ensure_tools()
    release = build(opts.skip_build)
    results = {
        "machine": machine_info(),
        "versions": tool_versions(tools),
        "settings": {
            "quick": opts.quick,
            "sessionwatch_store": opts.store or "default",
            "rounds": opts.rounds,
            "connections": opts.connections,
            "wrk_threads": 2,
            "duration": opts.duration,
            "warmup": opts.warmup,
            "latency_duration": opts.latency_duration,
            "pool": opts.pool,
            "no_cookie_per_mille": 50,
            "large": opts.large,
            "outside_load_limit_cores": OUTSIDE_LOAD_LIMIT,
            "min_clean_rounds": 1 if opts.quick else 2,
        },
        "fills": {},
        "memory": {},
        "load_rounds": [],
        "latency_rounds": [],
        "problems": [],
    }
    bench = Bench(opts, tools, release, work)
    try:
        log("starting the farm and the proxies")
        a, port_a = start_backend(release, work, "a")
        b, port_b = start_backend(release, work, "b")
        bench.backends = [a, b]
        ports = [port_a, port_b]
        t = bench.targets
        t["direct"] = Target("direct", port_a, None, "direct")
        t["sw_learn"] = start_sessionwatch(release, work, "sw_learn", "learn", ports, opts.store)
        t["sw_off"] = start_sessionwatch(release, work, "sw_off", "off", ports, opts.store)
        t["sw_learn_1m"] = start_sessionwatch(release, work, "sw_learn_1m", "learn", ports, opts.store)
        t["haproxy"] = start_haproxy(tools, work, "haproxy", ports)
        t["haproxy_1m"] = start_haproxy(tools, work, "haproxy_1m", ports)
        t["nginx"] = start_nginx(tools, work, ports)

        log(f"memory: filling {opts.large:,} sessions into sw_learn_1m and haproxy_1m")
        results["memory"] = {"small": opts.pool, "large": opts.large}
        results["memory"]["sessionwatch"] = memory_profile(bench, t["sw_learn_1m"], opts.pool, opts.large)
        results["memory"]["haproxy"] = memory_profile(bench, t["haproxy_1m"], opts.pool, opts.large)

        for name in ("sw_learn", "sw_off", "haproxy"):
            log(f"fill: {opts.pool:,} sessions into {name}")
            results["fills"][name] = bench.wrk.fill(t[name].port, 0, opts.pool)
            results["fills"][name]["tracked"] = t[name].tracked()
            if (results["fills"][name]["tracked"] or 0) < opts.pool * 0.99:
                results["problems"].append(
                    f"{name} tracks {results['fills'][name]['tracked']} sessions after a fill of {opts.pool}"
                )

        run_rounds(opts, LOAD_TARGETS, results["load_rounds"], lambda name, _round: bench.run_load(t[name]))

        if not opts.no_latency:
            log("latency: 1 connection, wrk, proxy and backends pinned to CPU 0")
            lat_rounds = results["latency_rounds"]
            for i in range(opts.rounds):
                order = LATENCY_TARGETS if i % 2 == 0 else list(reversed(LATENCY_TARGETS))
                log(f"latency round {i + 1}: {' '.join(order)}")
                lat_rounds.append({name: bench.run_latency(t[name]) for name in order})

        # Health of the run: errors seen by the client, sessionwatch's own counters and logs.
        for rnd in results["load_rounds"] + results["latency_rounds"]:
            for name, r in rnd.items():
                if r["error_count"]:
                    results["problems"].append(f"{name}: wrk saw errors {r['errors']} in one run")
        results["sessionwatch_metrics"] = {}
        for name in ("sw_learn", "sw_off", "sw_learn_1m"):
            status, body = http_get(t[name].admin_port, "/metrics")
            counters: dict[str, float] = {}
            for line in body.splitlines():
                if line.startswith("sessionwatch_") and not line.startswith("sessionwatch_upstream_request_duration"):
                    key, _, value = line.rpartition(" ")
                    counters[key] = float(value)
            results["sessionwatch_metrics"][name] = counters
            resets = sum(v for k, v in counters.items() if k.startswith("sessionwatch_session_resets_total"))
            upstream_errors = sum(v for k, v in counters.items() if k.startswith("sessionwatch_upstream_errors_total"))
            if resets:
                results["problems"].append(f"{name} reported {resets:.0f} session resets (the farm loses none)")
            if upstream_errors:
                results["problems"].append(f"{name} counted {upstream_errors:.0f} upstream errors")
            bad = log_warnings(t[name].log_file)
            if bad:
                results["problems"].append(f"{name} logged {len(bad)} warnings or errors, e.g. {bad[0][:200]}")
        for name, proc in (("backend a", a), ("backend b", b)):
            if proc.poll() is not None:
                results["problems"].append(f"{name} exited with {proc.returncode}")
        for name, target in t.items():
            if target.proc is not None and target.proc.poll() is not None:
                results["problems"].append(f"{name} exited with {target.proc.returncode}")
    finally:
        PROCS.stop_all()

    results["settings"]["rounds_run"] = len(results["load_rounds"])
    results["summary"] = compute(results)
    results["targets"] = targets_check(results)
    write_results(results, markdown(results), opts.out)
    return 0


def write_results(results: dict, report: str, out: Path) -> None:
    """The run's JSON at `out`, its report beside it as Markdown and on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(report)
    print(report)
    log(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    finally:
        PROCS.stop_all()
