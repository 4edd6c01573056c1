-- wrk script for the measured traffic (bench/run.py).
-- Every request is GET /app carrying SESSIONID=<id>, the id drawn at random from a pool of
-- session ids; a share of requests carry no cookie (new visitors, to whom the backend issues a
-- session). All requests are formatted once in init(), so request() costs the client almost
-- nothing.
--
-- Arguments (after --): pool_size first_index no_cookie_per_mille
--   e.g. wrk ... -s bench/load.lua URL -- 100000 0 50

-- The session id of index i: 32 hex digits, the same function as bench/fill.lua.
-- Exact in double arithmetic for i < 2^21.
local function sid(i)
    return string.format("%08x%08x%08x%08x",
        i,
        (i * 2654435761) % 4294967296,
        (i * 40503 + 2246822519) % 4294967296,
        (i * 2246822519 + 3266489917) % 4294967296)
end

local threads = 0

function setup(thread)
    thread:set("thread_index", threads)
    threads = threads + 1
end

local pool, first, no_cookie = 100000, 0, 50
local with_cookie = {}
local without_cookie

function init(args)
    pool = tonumber(args[1]) or pool
    first = tonumber(args[2]) or first
    no_cookie = tonumber(args[3]) or no_cookie
    assert(first + pool < 2097152, "session index too large for sid()")
    for i = 1, pool do
        with_cookie[i] = wrk.format("GET", "/app", { ["Cookie"] = "SESSIONID=" .. sid(first + i - 1) })
    end
    without_cookie = wrk.format("GET", "/app", {})
    -- A fixed seed per thread: every target gets the same sequence of sessions.
    math.randomseed(12345 + 7919 * (thread_index or 0))
end

function request()
    if math.random(1000) <= no_cookie then
        return without_cookie
    end
    return with_cookie[math.random(pool)]
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.mean, latency.max))
end
