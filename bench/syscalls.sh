#!/usr/bin/env bash
# System calls the proxy makes per request on the keep-alive path, counted by `strace -c`.
#
#   bash bench/syscalls.sh [BINARY]    # default: target/release/sessionwatch (built if missing)
#
# The set-up of bench/icount.sh (two bench backends, pin = learn, 10,000 sessions learned
# first, then 16 keep-alive connections of bench/load.lua traffic for 10 s), with strace
# attached to every thread of the proxy for the measured part only. It prints the requests
# served and, per request, each system call made at least once per 100 requests. PIN=off and
# EXTRA='store = "compact"' change the configuration.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT="$ROOT/bench/results/syscalls"
mkdir -p "$OUT"

need=()
command -v strace >/dev/null || need+=(strace)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "icount.sh: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

BIN=${1:-}
if [[ -z $BIN ]]; then
    cargo build --release -p sessionwatch -p sessionwatch-bench-backend
    BIN="$ROOT/target/release/sessionwatch"
elif [[ ! -x target/release/sessionwatch-bench-backend ]]; then
    cargo build --release -p sessionwatch-bench-backend
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Sets BACKEND_PORT. Not called in a command substitution: that would run it in a subshell,
# and the backend's pid would never reach PIDS (so never be stopped).
start_backend() {
    local log=$1
    target/release/sessionwatch-bench-backend 0 >"$log" 2>/dev/null &
    PIDS+=($!)
    for _ in $(seq 50); do
        grep -q "listening on" "$log" 2>/dev/null && break
        sleep 0.1
    done
    BACKEND_PORT=$(grep -o '[0-9]*$' "$log")
}
start_backend "$OUT/backend-a.log"
A=$BACKEND_PORT
start_backend "$OUT/backend-b.log"
B=$BACKEND_PORT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
ADMIN=$(free_port)
sed -e "s/@PORT@/$PORT/; s/@ADMIN_PORT@/$ADMIN/; s/@BACKEND_A@/$A/; s/@BACKEND_B@/$B/" \
    -e "s/@PIN@/${PIN:-learn}/; s/@SESSION_EXTRA@/${EXTRA:-}/" \
    bench/sessionwatch.toml.in >"$OUT/sessionwatch.toml"

RUST_LOG=warn "$BIN" serve --config "$OUT/sessionwatch.toml" >"$OUT/proxy.log" 2>&1 &
PROXY=$!
PIDS+=("$PROXY")
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break
    kill -0 "$PROXY" 2>/dev/null || { cat "$OUT/proxy.log" >&2; exit 1; }
    sleep 0.2
done

wrk -t1 -c16 -d600s -s bench/fill.lua "http://127.0.0.1:$PORT/" -- 0 10000 >"$OUT/fill.out" 2>&1 &
FILL=$!
PIDS+=("$FILL")
for _ in $(seq 1200); do
    grep -q FILL_DONE "$OUT/fill.out" && break
    sleep 0.5
done
kill "$FILL" 2>/dev/null || true
grep -q "FILL_DONE issued=10000 failed=0" "$OUT/fill.out" || { echo "fill failed:" >&2; cat "$OUT/fill.out" >&2; exit 1; }

# Warm up (pools, allocator), then count with strace on every thread.
wrk -t1 -c16 -d3s -s bench/load.lua "http://127.0.0.1:$PORT/" -- 10000 0 50 >/dev/null
strace -c -f -p "$PROXY" -o "$OUT/strace.out" &
ST=$!
sleep 1
wrk -t1 -c16 -d10s -s bench/load.lua "http://127.0.0.1:$PORT/" -- 10000 0 50 >"$OUT/load.out"
kill -INT "$ST"
wait "$ST" 2>/dev/null || true

REQUESTS=$(grep -o '[0-9]* requests in' "$OUT/load.out" | grep -o '^[0-9]*')
echo "requests: $REQUESTS"
echo "system calls per request (those made at least once per 100 requests):"
awk -v n="$REQUESTS" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
    calls = $4; name = $NF
    if (calls / n >= 0.01) printf "  %-16s %.2f\n", name, calls / n
}' "$OUT/strace.out"
echo "strace summary: $OUT/strace.out"
