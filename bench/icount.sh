#!/usr/bin/env bash
# Instructions the proxy executes per request, counted by callgrind: repeatable whatever else the
# machine is doing, so two versions of the request path can be compared on a noisy machine.
#
#   bash bench/icount.sh [BINARY]      # default: target/release/sessionwatch (built if missing)
#
# Two bench backends and the proxy (pin = learn, the benchmark's configuration) run on
# 127.0.0.1; the proxy runs under valgrind with instrumentation off while it starts and learns
# 10,000 sessions (bench/fill.lua), then on for 10 s of bench/load.lua traffic (1 wrk thread,
# 16 connections, the same cookie mix as the benchmark over those 10,000 sessions). It prints
# the requests served and the instructions per request, and leaves callgrind's file in
# bench/results/ for callgrind_annotate. PIN=off and EXTRA='store = "compact"' change the
# configuration.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT="$ROOT/bench/results/icount"
mkdir -p "$OUT"

need=()
command -v valgrind >/dev/null || need+=(valgrind)
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

rm -f "$OUT"/callgrind.out.*
RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.out.%p" \
    "$BIN" serve --config "$OUT/sessionwatch.toml" >"$OUT/proxy.log" 2>&1 &
VG=$!
PIDS+=("$VG")
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break
    kill -0 "$VG" 2>/dev/null || { cat "$OUT/proxy.log" >&2; exit 1; }
    sleep 0.2
done

# Learn 10,000 sessions; fill.lua prints FILL_DONE once every id has been issued.
wrk -t1 -c16 -d600s -s bench/fill.lua "http://127.0.0.1:$PORT/" -- 0 10000 >"$OUT/fill.out" 2>&1 &
FILL=$!
PIDS+=("$FILL")
for _ in $(seq 1200); do
    grep -q FILL_DONE "$OUT/fill.out" && break
    sleep 0.5
done
kill "$FILL" 2>/dev/null || true
grep -q "FILL_DONE issued=10000 failed=0" "$OUT/fill.out" || { echo "fill failed:" >&2; cat "$OUT/fill.out" >&2; exit 1; }

# Warm up (pools, allocator), then count.
wrk -t1 -c16 -d3s -s bench/load.lua "http://127.0.0.1:$PORT/" -- 10000 0 50 >/dev/null
callgrind_control -i on "$VG" >/dev/null
wrk -t1 -c16 -d10s -s bench/load.lua "http://127.0.0.1:$PORT/" -- 10000 0 50 >"$OUT/load.out"
callgrind_control -i off "$VG" >/dev/null
callgrind_control -d "$VG" >/dev/null

REQUESTS=$(grep -o '[0-9]* requests in' "$OUT/load.out" | grep -o '^[0-9]*')
INSTRUCTIONS=0
for f in "$OUT"/callgrind.out.*; do
    n=$(callgrind_annotate "$f" 2>/dev/null | grep "PROGRAM TOTALS" | grep -o '^[0-9,]*' | tr -d , || true)
    INSTRUCTIONS=$((INSTRUCTIONS + ${n:-0}))
done
if ! grep -q "Non-2xx\|Socket errors" "$OUT/load.out"; then errors=0; else errors=$(grep -E "Non-2xx|Socket errors" "$OUT/load.out"); fi
echo "requests: $REQUESTS (errors: $errors)"
echo "instructions per request: $((INSTRUCTIONS / REQUESTS))"
echo "callgrind files: $OUT/callgrind.out.*"
