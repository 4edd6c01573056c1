#!/usr/bin/env bash
# System calls the proxy makes per request on the keep-alive path, counted by `strace -c`.
#
#   bash bench/syscalls.sh [BINARY]    # default: target/release/sessionwatch (built if missing)
#
# The set-up of bench/icount.sh (two bench backends, pin = learn, 10,000 sessions learned
# first, then 16 keep-alive connections of bench/load.lua traffic for 10 s), with strace
# attached to every thread of the proxy for the measured part only. It prints the requests
# served and, per request, each system call made at least once per 100 requests, and their
# total. PIN=off and EXTRA='store = "compact"' change the configuration.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT="$ROOT/bench/results/syscalls"
TOOL=strace
WRAP=()
source bench/proxy-under-load.sh
start_proxy_under_load "${1:-}"

strace -c -f -p "$PROXY" -o "$OUT/strace.out" &
ST=$!
sleep 1
load 10 "$OUT/load.out"
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
