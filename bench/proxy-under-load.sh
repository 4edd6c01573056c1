# Shared by bench/icount.sh and bench/syscalls.sh (sourced, not run): the benchmark's farm and
# proxy on 127.0.0.1, with 10,000 sessions learned, ready for a measured load.
#
# The caller sets OUT (a results directory), TOOL (the one command it needs besides wrk and
# curl) and WRAP (an array: what the proxy runs under, possibly empty), then calls
# `start_proxy_under_load [BINARY]`; afterwards PROXY is the pid of what WRAP started, PORT the
# proxy's port, and `load SECONDS OUTFILE` runs the benchmark's traffic. Everything started is
# stopped when the caller exits. PIN=off and EXTRA='store = "compact"' change the configuration;
# SESSIONS (default 10000) is how many sessions the proxy learns and the traffic draws from.

mkdir -p "$OUT"

need=()
for tool in "$TOOL" wrk curl; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "$0: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

SESSIONS=${SESSIONS:-10000}
[[ $SESSIONS =~ ^[1-9][0-9]*$ ]] && ((SESSIONS <= 2000000)) \
    || { echo "$0: SESSIONS must be a whole number from 1 to 2000000 (got $SESSIONS)" >&2; exit 64; }

# The benchmark's traffic: 1 wrk thread, 16 keep-alive connections, the benchmark's cookie mix
# over the SESSIONS learned sessions.
load() {
    wrk -t1 -c16 -d"$1"s -s bench/load.lua "http://127.0.0.1:$PORT/" -- "$SESSIONS" 0 50 >"$2"
}

start_proxy_under_load() {
    local bin=${1:-}
    if [[ -z $bin ]]; then
        cargo build --release -p sessionwatch -p sessionwatch-bench-backend
        bin="$ROOT/target/release/sessionwatch"
    elif [[ ! -x target/release/sessionwatch-bench-backend ]]; then
        cargo build --release -p sessionwatch-bench-backend
    fi
    start_backend "$OUT/backend-a.log"
    local a=$BACKEND_PORT
    start_backend "$OUT/backend-b.log"
    local b=$BACKEND_PORT
    PORT=$(free_port)
    local admin
    admin=$(free_port)
    sed -e "s/@PORT@/$PORT/; s/@ADMIN_PORT@/$admin/; s/@BACKEND_A@/$a/; s/@BACKEND_B@/$b/" \
        -e "s/@PIN@/${PIN:-learn}/; s/@SESSION_EXTRA@/${EXTRA:-}/; s/@SECTIONS@//" \
        bench/sessionwatch.toml.in >"$OUT/sessionwatch.toml"

    RUST_LOG=warn "${WRAP[@]}" "$bin" serve --config "$OUT/sessionwatch.toml" >"$OUT/proxy.log" 2>&1 &
    PROXY=$!
    PIDS+=("$PROXY")
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
        kill -0 "$PROXY" 2>/dev/null || { cat "$OUT/proxy.log" >&2; exit 1; }
        sleep 0.2
    done

    # Learn SESSIONS sessions; fill.lua prints FILL_DONE once every id has been issued. Under
    # valgrind a million take a few minutes: wrk's own limit ends a fill that hangs.
    wrk -t1 -c16 -d3600s -s bench/fill.lua "http://127.0.0.1:$PORT/" -- 0 "$SESSIONS" >"$OUT/fill.out" 2>&1 &
    local fill=$!
    PIDS+=("$fill")
    while kill -0 "$fill" 2>/dev/null; do
        grep -q FILL_DONE "$OUT/fill.out" && break
        sleep 0.5
    done
    kill "$fill" 2>/dev/null || true
    grep -q "FILL_DONE issued=$SESSIONS failed=0" "$OUT/fill.out" || { echo "fill failed:" >&2; cat "$OUT/fill.out" >&2; exit 1; }

    # Warm up (pools, allocator).
    load 3 /dev/null
}
