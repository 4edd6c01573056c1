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
# configuration; SESSIONS=1000000 teaches it a million sessions instead of 10,000 (the traffic
# draws from all of them), so that the table's size is in the count.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT="$ROOT/bench/results/icount"
TOOL=valgrind
rm -f "$OUT"/callgrind.out.*
WRAP=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$OUT/callgrind.out.%p")
source bench/proxy-under-load.sh
start_proxy_under_load "${1:-}"

callgrind_control -i on "$PROXY" >/dev/null
load 10 "$OUT/load.out"
callgrind_control -i off "$PROXY" >/dev/null
callgrind_control -d "$PROXY" >/dev/null

REQUESTS=$(grep -o '[0-9]* requests in' "$OUT/load.out" | grep -o '^[0-9]*')
INSTRUCTIONS=0
for f in "$OUT"/callgrind.out.*; do
    n=$(callgrind_annotate "$f" 2>/dev/null | grep "PROGRAM TOTALS" | grep -o '^[0-9,]*' | tr -d , || true)
    INSTRUCTIONS=$((INSTRUCTIONS + ${n:-0}))
done
if ! grep -q "Non-2xx\|Socket errors" "$OUT/load.out"; then errors=0; else errors=$(grep -E "Non-2xx|Socket errors" "$OUT/load.out"); fi
echo "sessions learned: $SESSIONS"
echo "requests: $REQUESTS (errors: $errors)"
echo "instructions per request: $((INSTRUCTIONS / REQUESTS))"
echo "callgrind files: $OUT/callgrind.out.*"
