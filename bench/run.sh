#!/usr/bin/env bash
# The benchmark: sessionwatch against a direct connection, HAProxy's stick table and NGINX's
# cookie hash, under the same wrk traffic, in one run. See BENCHMARKS.md.
#
#   bash bench/run.sh            full run (about 20 minutes on 2 cores, plus a release build)
#   bash bench/run.sh --quick    smoke run (a few minutes)
#   bash bench/run.sh --help     every option
#
# Results: a Markdown report on stdout, bench/results/latest.json and latest.md.
# bench/run.py stops every process it started when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/run.py "$@"
