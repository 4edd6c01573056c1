#!/usr/bin/env bash
# The Redis session store's cost: sessionwatch with the moka store, with the Redis store (warm and
# cold near cache) and HAProxy's stick table under the same wrk traffic, in one run, and the bytes
# per session in Redis. See BENCHMARKS.md, "Fleet: the Redis store's cost".
#
#   bash bench/fleet.sh            full run (about 10 minutes on 2 cores, plus a release build)
#   bash bench/fleet.sh --quick    smoke run (a few minutes)
#   bash bench/fleet.sh --help     every option
#
# Results: a Markdown report on stdout, bench/results/fleet.json and fleet.md.
# bench/fleet.py stops every process it started when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/fleet.py "$@"
