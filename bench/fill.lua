-- wrk script for the fill phase (bench/run.py): POST /issue?sid=<id> once for each index in
-- [first, first + count), in order, so that the proxy learns every session from the backend's
-- Set-Cookie. Run it with one thread (-t1); once every issue has been answered it prints
-- FILL_DONE and stops its thread, and bench/run.py ends wrk. Requests sent after the last id
-- are health checks, which learn nothing.
--
-- Arguments (after --): first_index count

local function sid(i)
    return string.format("%08x%08x%08x%08x",
        i,
        (i * 2654435761) % 4294967296,
        (i * 40503 + 2246822519) % 4294967296,
        (i * 2246822519 + 3266489917) % 4294967296)
end

local first, count = 0, 0
local sent, issued, failed = 0, 0, 0
local reported = false
local health

function init(args)
    first = tonumber(args[1])
    count = tonumber(args[2])
    assert(first + count < 2097152, "session index too large for sid()")
    health = wrk.format("GET", "/health")
    -- wrk calls request() once right after init() to check the script, and throws that request
    -- away: start one below zero so that call consumes no session id.
    sent = -1
end

function request()
    if sent < 0 then
        sent = 0
        return health
    end
    if sent < count then
        -- A POST to a login path (bench/sessionwatch.toml.in): a sign-in, so the session is
        -- tracked as presented from the start, as a user's would be from their next request.
        local r = wrk.format("POST", "/issue?sid=" .. sid(first + sent))
        sent = sent + 1
        return r
    end
    return health
end

function response(status, headers, body)
    if status ~= 200 then
        failed = failed + 1
    elseif headers["set-cookie"] or headers["Set-Cookie"] then
        issued = issued + 1
    end
    if not reported and issued + failed >= count then
        reported = true
        io.write(string.format("FILL_DONE issued=%d failed=%d\n", issued, failed))
        io.flush()
        wrk.thread:stop()
    end
end
