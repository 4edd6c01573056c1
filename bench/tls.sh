#!/usr/bin/env bash
# TLS termination's cost: sessionwatch, HAProxy and NGINX on plain HTTP and terminating TLS with
# the same ECDSA P-256 certificate, keep-alive (wrk -t1 -c32 over https) and new connections
# (openssl s_time, full and resumed handshakes), in one run. See BENCHMARKS.md, "TLS".
#
#   bash bench/tls.sh            full run (about 5 minutes on 2 cores, plus a release build)
#   bash bench/tls.sh --quick    smoke run (about 2 minutes)
#   bash bench/tls.sh --help     every option
#
# Results: a Markdown report on stdout, bench/results/tls.json and tls.md.
# bench/tls.py stops every process it started when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/tls.py "$@"
