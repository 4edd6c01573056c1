#!/usr/bin/env bash
# System calls the proxy makes per request on the keep-alive path, counted by the kernel's
# syscall tracepoints (`perf stat`: no ptrace, so the proxy runs at its own pace, and a check
# that depends on how long a connection sat idle is counted as it happens under real load).
#
#   bash bench/syscalls.sh [BINARY]    # default: target/release/sessionwatch (built if missing)
#
# The set-up of bench/icount.sh (two bench backends, pin = learn, 10,000 sessions learned
# first, then 16 keep-alive connections of bench/load.lua traffic for 10 s), with `perf stat`
# attached to every thread of the proxy for the measured part only. It prints the requests
# served and, per request, every system call and the calls the request path makes. PIN=off and
# EXTRA='store = "compact"' change the configuration. perf comes from Debian's linux-perf.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT="$ROOT/bench/results/syscalls"
TOOL=perf
WRAP=()
source bench/proxy-under-load.sh
start_proxy_under_load "${1:-}"

EVENTS=raw_syscalls:sys_enter
for call in recvfrom sendto read write readv writev epoll_wait epoll_ctl futex accept4 close; do
    EVENTS+=",syscalls:sys_enter_$call"
done
perf stat -x, -e "$EVENTS" -p "$PROXY" -o "$OUT/perf.out" &
ST=$!
sleep 1
load 10 "$OUT/load.out"
kill -INT "$ST"
wait "$ST" 2>/dev/null || true

REQUESTS=$(grep -o '[0-9]* requests in' "$OUT/load.out" | grep -o '^[0-9]*')
echo "requests: $REQUESTS"
echo "system calls per request:"
awk -F, -v n="$REQUESTS" '$1 ~ /^[0-9]+$/ {
    name = $3; sub(/^syscalls:sys_enter_/, "", name); sub(/^raw_syscalls:sys_enter$/, "(all)", name)
    printf "  %-12s %.3f\n", name, $1 / n
}' "$OUT/perf.out"
echo "perf output: $OUT/perf.out"
