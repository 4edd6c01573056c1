#!/usr/bin/env bash
# The soak: mixed traffic through the release build of the proxy for a fixed time, every answer
# checked against the request it answers, the proxy's memory sampled throughout.
#
#   bash bench/soak.sh                   the documented run: 10 minutes
#   bash bench/soak.sh --duration 60     a short check
#   bash bench/soak.sh --help            every option
#
# Two soak backends (`sessionwatch-soak backend`, bench/backend/src/soak/) answer every request
# with its own token; `sessionwatch-soak client` keeps --connections connections busy with
# keep-alive GETs, GETs on new connections, sized and chunked uploads, HEAD, 204s, chunked
# answers, requests the backend resets (before its head or mid-body) and slow readers, and
# counts every answer that is not its request's own. RSS (VmRSS) is read from /proc every
# --sample seconds.
#
# Exits non-zero on any mismatch, a panic on the proxy's (or a backend's) standard error, a proxy
# that died or did not stop on SIGTERM, or RSS after the warm-up more than 10% above its level
# just after the warm-up. Not run by CI: it takes the machine for its whole duration.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=600
connections=64
slow_every=8
warmup=""
sample=5
scrape=15
reuse=""
log_level=error
build=1
keep=0

usage() {
    cat <<EOF
usage: bash bench/soak.sh [options]
  --duration SECS     how long the traffic runs (default 600)
  --connections N     client connections at once (default 64)
  --slow-every K      every K-th connection reads slowly (default 8; 0: none)
  --warmup SECS       RSS growth is measured from this point (default duration/5, 20 to 120)
  --sample SECS       RSS sampling period (default 5)
  --scrape SECS       GET /metrics this often, as Prometheus would (default 15; 0: never)
  --reuse MODE        write [upstream] reuse = "MODE" into the proxy's config (only for a build
                      whose config accepts upstream.reuse)
  --log LEVEL         the proxy's RUST_LOG (default error; panics are printed whatever it is)
  --no-build          use the release binaries already in target/release
  --keep              keep the work directory (logs, config, RSS samples) even on success
EOF
}

while (($#)); do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --slow-every) slow_every=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --sample) sample=$2; shift 2 ;;
        --scrape) scrape=$2; shift 2 ;;
        --reuse) reuse=$2; shift 2 ;;
        --log) log_level=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "soak: unknown option $1" >&2; usage >&2; exit 64 ;;
    esac
done
for n in "$duration" "$connections" "$slow_every" "$sample" "$scrape"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "soak: not a number: $n" >&2; exit 64; }
done
if [[ -z $warmup ]]; then
    warmup=$((duration / 5))
    ((warmup < 20)) && warmup=20
    ((warmup > 120)) && warmup=120
fi
[[ $warmup =~ ^[0-9]+$ ]] || { echo "soak: not a number: $warmup" >&2; exit 64; }
((warmup < duration)) || { echo "soak: --warmup must be shorter than --duration" >&2; exit 64; }

log() { printf 'soak: %s\n' "$*" >&2; }

if ((build)); then
    log "building the release binaries"
    nice -n 10 cargo build --release --locked -p sessionwatch -p sessionwatch-bench-backend >&2
fi
proxy_bin=target/release/sessionwatch
soak_bin=target/release/sessionwatch-soak
for b in "$proxy_bin" "$soak_bin"; do
    [[ -x $b ]] || { echo "soak: $b is missing (run without --no-build)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/sessionwatch-soak.XXXXXX)
pids=()
sampler=""
scraper=""
failed=1
cleanup() {
    # Only the script itself cleans up, not a subshell that exits.
    [[ $BASHPID == "$$" ]] || return 0
    [[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
    [[ -n $scraper ]] && kill "$scraper" 2>/dev/null || true
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if ((failed || keep)); then
        log "logs, config and RSS samples are in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# A backend prints its port on its first line; it lands in $backend_port.
backend_port=""
start_backend() {
    local name=$1 out="$work/backend-$1.out"
    nice -n 10 "$soak_bin" backend 0 >"$out" 2>"$work/backend-$name.err" &
    pids+=($!)
    local i
    for ((i = 0; i < 100; i++)); do
        backend_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out" 2>/dev/null || true)
        [[ -n $backend_port ]] && return
        sleep 0.1
    done
    echo "soak: backend $name did not start: $(cat "$work/backend-$name.err")" >&2
    exit 1
}
start_backend a
port_a=$backend_port
start_backend b
port_b=$backend_port

read -r port admin < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')

config="$work/sessionwatch.toml"
{
    printf '[listen]\naddress = "127.0.0.1:%s"\n\n' "$port"
    printf '[admin]\naddress = "127.0.0.1:%s"\n\n' "$admin"
    printf '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:%s"\n\n' "$port_a"
    printf '[[backends]]\nname = "b"\nurl = "http://127.0.0.1:%s"\n\n' "$port_b"
    printf '[session]\ncookies = [{ name = "SESSIONID" }]\nfingerprint_key = "sessionwatch soak fingerprint key"\n\n'
    printf '[health]\npath = "/health"\n\n'
    printf '[alerts]\nlog_file = "%s"\n' "$work/alerts.jsonl"
    if [[ -n $reuse ]]; then
        printf '\n[upstream]\nreuse = "%s"\n' "$reuse"
    fi
} >"$config"
if ! "$proxy_bin" check-config "$config" >"$work/check-config.out" 2>&1; then
    echo "soak: the proxy refuses the soak's configuration:" >&2
    cat "$work/check-config.out" >&2
    exit 1
fi

RUST_LOG=$log_level nice -n 10 "$proxy_bin" serve --config "$config" \
    >"$work/proxy.out" 2>"$work/proxy.err" &
proxy=$!
pids+=("$proxy")
ready=0
for ((i = 0; i < 100; i++)); do
    if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$admin/readyz', timeout=1).status == 200 else 1)" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$proxy" 2>/dev/null || break
    sleep 0.1
done
((ready)) || { echo "soak: the proxy did not become ready:" >&2; cat "$work/proxy.err" >&2; exit 1; }

rss_of() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
rss_log="$work/rss.log"
start=$SECONDS
(
    while kill -0 "$proxy" 2>/dev/null; do
        echo "$((SECONDS - start)) $(rss_of "$proxy")" >>"$rss_log"
        sleep "$sample"
    done
) &
sampler=$!
if ((scrape > 0)); then
    python3 - "$admin" "$scrape" "$work/scrapes.log" <<'PY' &
import sys, time, urllib.request
admin, every, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
with open(out, "a") as log:
    while True:
        time.sleep(every)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
                log.write(f"{r.status} {len(r.read())}\n")
        except Exception as e:
            log.write(f"error {e}\n")
        log.flush()
PY
    scraper=$!
fi

log "$duration s of traffic: $connections connections, proxy pid $proxy, work dir $work"
client_rc=0
nice -n 10 "$soak_bin" client --target "127.0.0.1:$port" --duration "$duration" \
    --connections "$connections" --slow-every "$slow_every" \
    >"$work/client.out" 2>"$work/client.err" || client_rc=$?

proxy_alive=0
if kill -0 "$proxy" 2>/dev/null; then
    proxy_alive=1
    echo "$((SECONDS - start)) $(rss_of "$proxy")" >>"$rss_log"
fi
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=""
if [[ -n $scraper ]]; then
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
    scraper=""
fi
scrapes_ok=$(grep -c '^200 ' "$work/scrapes.log" 2>/dev/null || true)
scrapes_failed=$(grep -vc '^200 ' "$work/scrapes.log" 2>/dev/null || true)

# A clean stop within a bound: SIGTERM drains and exits 0.
stopped=0
proxy_rc=""
if ((proxy_alive)); then
    kill -TERM "$proxy"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$proxy" 2>/dev/null || { stopped=1; break; }
        sleep 0.1
    done
fi
if ((stopped)) || ! ((proxy_alive)); then
    proxy_rc=0
    wait "$proxy" || proxy_rc=$?
fi

panics=$(cat "$work/proxy.err" "$work"/backend-*.err | grep -c 'panicked' || true)
alert_lines=$(wc -l <"$work/alerts.jsonl" 2>/dev/null || echo 0)
resets=$(grep -c '"type":"session_reset"' "$work/alerts.jsonl" 2>/dev/null || true)

# RSS in KiB: the first sample; the level after the warm-up, taken as the highest sample in the
# first quarter after it (RSS moves a few percent from one sample to the next, so one sample is
# too noisy a baseline); the highest sample after the warm-up; the last.
read -r rss_first rss_warm rss_max rss_last rss_samples < <(awk -v w="$warmup" '
    NF == 2 && $2 != "" {
        n++
        if (n == 1) first = $2
        if ($1 >= w) after[++m] = $2
        last = $2
    }
    END {
        q = int((m + 3) / 4)
        for (i = 1; i <= m; i++) {
            if (i <= q && after[i] > warm) warm = after[i]
            if (after[i] > max) max = after[i]
        }
        print first + 0, warm + 0, max + 0, last + 0, n + 0
    }
' "$rss_log")
growth=$(awk -v a="$rss_warm" -v b="$rss_max" 'BEGIN { if (a > 0) printf "%.1f", (b - a) * 100 / a; else print "n/a" }')

echo "== sessionwatch soak: ${duration} s, ${connections} connections (every ${slow_every}th slow)${reuse:+, upstream.reuse = $reuse}"
cat "$work/client.out"
echo "proxy: panics on stderr $panics; alive at the end: $((proxy_alive)); stopped on SIGTERM: $stopped (exit ${proxy_rc:-none})"
echo "metrics scrapes (every ${scrape} s; 0: none): ${scrapes_ok:-0} answered, ${scrapes_failed:-0} failed"
echo "alert log: $alert_lines lines, $resets session_reset (the soak's farm loses no session)"
echo "RSS (KiB, $rss_samples samples every ${sample} s): first $rss_first, after the ${warmup} s warm-up $rss_warm (highest of its first quarter), max after warm-up $rss_max, last $rss_last; growth ${growth}%"

verdict=()
((client_rc == 0)) || verdict+=("client exit $client_rc (1: mismatches, 2: no request made)")
((panics == 0)) || verdict+=("$panics panics")
((proxy_alive)) || verdict+=("the proxy died during the run")
if ((proxy_alive)) && ! ((stopped)); then verdict+=("the proxy did not stop within 30 s of SIGTERM"); fi
if [[ -n $proxy_rc ]] && ((proxy_rc != 0)) && ((proxy_alive)); then verdict+=("the proxy exited $proxy_rc"); fi
if [[ $growth == n/a ]]; then
    verdict+=("no RSS sample after the warm-up")
elif awk -v g="$growth" 'BEGIN { exit !(g > 10) }'; then
    verdict+=("RSS grew ${growth}% after the warm-up (limit 10%)")
fi
if ((${#verdict[@]})); then
    echo "soak: FAILED: $(IFS=';'; echo "${verdict[*]}")"
    exit 1
fi
failed=0
echo "soak: passed"
