//! Every metric's help text and unit, given to the recorder once at start, so that a scrape
//! describes even the series no request has touched yet.

use metrics::{KeyName, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;

pub(super) fn describe(r: &PrometheusRecorder) {
    let d = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        r.describe_counter(
            KeyName::from_const_str(name),
            unit,
            SharedString::const_str(help),
        );
    };
    let g = |name: &'static str, help: &'static str| {
        r.describe_gauge(
            KeyName::from_const_str(name),
            None,
            SharedString::const_str(help),
        );
    };
    d(
        "sessionwatch_requests_total",
        Some(Unit::Count),
        "Requests sent to each backend.",
    );
    g(
        "sessionwatch_store_up",
        "1 while the shared session store answers, 0 while the proxy goes on with its near cache.",
    );
    d(
        "sessionwatch_store_lookups_total",
        Some(Unit::Count),
        "Shared-store lookups of sessions the near cache missed, by result (hit, miss, timeout, error).",
    );
    d(
        "sessionwatch_store_lookups_skipped_total",
        Some(Unit::Count),
        "Near-cache misses not looked up, by why (down, capped: over store.max_lookups_per_second, unknown: asked within the last second).",
    );
    d(
        "sessionwatch_store_writes_total",
        Some(Unit::Count),
        "Shared-store writes, by kind (publish: a session just issued, which its answer waits for; batch: updates and removals) and result.",
    );
    d(
        "sessionwatch_store_timeouts_total",
        Some(Unit::Count),
        "Requests that waited the whole redis.timeout on the shared store, by what they waited on (lookup, publish); a request waits at most once.",
    );
    d(
        "sessionwatch_store_outages_total",
        Some(Unit::Count),
        "Times the shared session store stopped answering (a store_degraded line each).",
    );
    d(
        "sessionwatch_session_requests_total",
        Some(Unit::Count),
        "Requests that carried a known, live session.",
    );
    d(
        "sessionwatch_session_resets_total",
        Some(Unit::Count),
        "Sessions lost, by signal, attribution, issuing backend and serving backend.",
    );
    d(
        "sessionwatch_pins_total",
        Some(Unit::Count),
        "Requests routed to the backend their session is pinned to.",
    );
    d(
        "sessionwatch_pin_broken_total",
        Some(Unit::Count),
        "Pinned requests whose backend was unhealthy, routed elsewhere.",
    );
    d(
        "sessionwatch_pin_failed_total",
        Some(Unit::Count),
        "Pinned requests answered 503 because their backend was unhealthy.",
    );
    d(
        "sessionwatch_rescues_total",
        Some(Unit::Count),
        "Lost GET/HEAD requests replayed on the issuing backend, by result.",
    );
    d(
        "sessionwatch_upstream_errors_total",
        Some(Unit::Count),
        "Upstream connect errors and response timeouts, by backend.",
    );
    d(
        "sessionwatch_reset_lines_suppressed_total",
        Some(Unit::Count),
        "Per-reset alert lines not written because of the rate limit during an incident.",
    );
    d(
        "sessionwatch_no_healthy_backend_total",
        Some(Unit::Count),
        "Requests answered 503 because no backend was healthy.",
    );
    d(
        "sessionwatch_alert_lines_dropped_total",
        Some(Unit::Count),
        "Alert lines that could not be written to the alert log file (disk full, I/O error).",
    );
    d(
        "sessionwatch_affinity_cookies_total",
        Some(Unit::Count),
        "Affinity cookies met next to a session this replica's table missed, by result: \
         `adopted` (the record was taken from it) or why it was ignored (`malformed`, `forged`: \
         another key or another session, `stale`: older than the idle timeout, `unresolved`: \
         its issuer is a backend this replica has not discovered yet).",
    );
    d(
        "sessionwatch_alert_sink_failures_total",
        Some(Unit::Count),
        "Failed deliveries to alert sinks, by sink.",
    );
    d(
        "sessionwatch_upstream_poisoned_total",
        Some(Unit::Count),
        "Upstream connections closed because the backend sent bytes past the end of an answer \
         or while idle, by backend.",
    );
    d(
        "sessionwatch_connection_limit_reached_total",
        Some(Unit::Count),
        "Times a worker stopped accepting because it held its share of listen.max_connections.",
    );
    d(
        "sessionwatch_client_body_errors_total",
        Some(Unit::Count),
        "Requests whose body the client sent malformed (400) or stopped sending (408), by kind.",
    );
    d(
        "sessionwatch_plain_path_requests_total",
        Some(Unit::Count),
        "Requests answered by the plain HTTP/1.1 loop, over TCP or TLS (the rest go to hyper's \
         server), counted when their connection leaves the loop.",
    );
    d(
        "sessionwatch_tls_handshakes_total",
        Some(Unit::Count),
        "Client TLS handshakes by result: `ok`, `failed`, `timeout`.",
    );
    d(
        "sessionwatch_tls_certificate_reloads_total",
        Some(Unit::Count),
        "Certificates whose files changed on disk, by result: `reloaded` (served to new \
         connections from then on) or `failed` (the previous certificate is still served).",
    );
    g(
        "sessionwatch_client_connections",
        "Client connections open now.",
    );
    g(
        "sessionwatch_upstream_connections",
        "Connections to each backend open now, in use and idle.",
    );
    g(
        "sessionwatch_config_last_reload_successful",
        "1 while the last configuration reload applied (or none was tried), 0 after one failed.",
    );
    g(
        "sessionwatch_build_info",
        "1, labelled with the release and the commit the binary was built from.",
    );
    d(
        "sessionwatch_sessions_evicted_total",
        Some(Unit::Count),
        "Sessions the full table dropped to make room, by kind: `unpresented` (issued, never sent \
         back: bots, crawlers, floods of cookie-less requests) or `presented` (sent back at least \
         once, or issued on a login path); presented evictions mean max_sessions is too small.",
    );
    g(
        "sessionwatch_sessions_tracked",
        "Sessions currently tracked.",
    );
    g(
        "sessionwatch_incident_open",
        "1 while a session-loss incident is open.",
    );
    g("sessionwatch_backend_up", "1 while the backend is healthy.");
    g(
        "sessionwatch_backends",
        "Backends by state: `live` (in the farm now) or `left` (known, gone: discovery no longer \
         returns its address).",
    );
    d(
        "sessionwatch_backend_changes_total",
        Some(Unit::Count),
        "Discovered backends that joined or left the farm, by change.",
    );
    d(
        "sessionwatch_backends_refused_total",
        Some(Unit::Count),
        "Discovered addresses not added because the proxy already knows its most backends.",
    );
    d(
        "sessionwatch_config_reloads_total",
        Some(Unit::Count),
        "Configuration reloads (SIGHUP, or the file changed), by result: `applied` or `failed` \
         (the file did not validate; the running configuration was kept).",
    );
    d(
        "sessionwatch_config_reload_failures_total",
        Some(Unit::Count),
        "Configuration reloads that failed: the file could not be read or did not validate.",
    );
    d(
        "sessionwatch_config_reload_refused_keys_total",
        Some(Unit::Count),
        "Keys a reloaded file changed that cannot change while the proxy runs (each kept its \
         old value).",
    );
    d(
        "sessionwatch_pins_left_total",
        Some(Unit::Count),
        "Pinned requests whose backend left the farm, redistributed or failed as \
         pin.when_unhealthy says.",
    );
    d(
        "sessionwatch_discovery_failures_total",
        Some(Unit::Count),
        "DNS resolutions of a discovery target that failed (the last known set was kept).",
    );
    g(
        "sessionwatch_discovery_up",
        "1 while a discovery target's last resolution succeeded, 0 while its last known set is kept.",
    );
    g(
        "sessionwatch_discovery_addresses",
        "Addresses a discovery target's last successful resolution gave.",
    );
    d(
        "sessionwatch_responses_total",
        Some(Unit::Count),
        "Answers each backend gave, by status class (1xx to 5xx); the proxy's own 502/504 for a failed exchange are not among them (connect errors and timeouts are in sessionwatch_upstream_errors_total).",
    );
}
