//! Micro-benchmarks of the per-request work of the core: reading the session cookie from a
//! request, fingerprinting a value, reading a `Set-Cookie`, and classifying an exchange with the
//! table updates it implies.
//!
//! `cargo bench -p sessionwatch-core --bench core` (about half a minute). Each figure is the time
//! of one call; BENCHMARKS.md records them next to the proxy's CPU per request.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sessionwatch_core::{
    BackendId, Carried, CookieId, CookieSpec, Exchange, Fingerprinter, PinPolicy, SessionProfile,
    SessionRecord, SetCookieEvent, Timestamp, classify, plan_updates, read_request_cookies,
    read_set_cookie,
};

/// A session id as applications issue them: 32 hex digits.
const SESSION_VALUE: &str = "5f2b8c1e9a4d7f3b6e0c2a8d4f1b7e9c";

fn profile() -> SessionProfile {
    SessionProfile::custom(vec![CookieSpec::new("SESSIONID")])
}

fn fingerprinter() -> Fingerprinter {
    Fingerprinter::from_secret(b"benchmark fingerprint key")
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_795_478_400_000)
}

/// A browser's `Cookie` header: analytics, preferences, a CSRF token and the session, five cookies.
fn browser_cookie_header() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        COOKIE,
        HeaderValue::from_static(
            "_ga=GA1.2.1204518239.1795478400; theme=dark; lang=en-US; \
             SESSIONID=5f2b8c1e9a4d7f3b6e0c2a8d4f1b7e9c; csrftoken=Jq8rT2mZ0vXw4yB6nK1pL9sD3fG7hC5a",
        ),
    );
    headers
}

fn cookies(c: &mut Criterion) {
    let profile = profile();
    let fp = fingerprinter();
    let headers = browser_cookie_header();
    c.bench_function("read_request_cookies/5_cookies", |b| {
        b.iter(|| {
            let mut found = None;
            read_request_cookies(black_box(&headers), &profile, &fp, |id, f| {
                found = Some((id, f));
            });
            black_box(found)
        })
    });

    let set_cookie = HeaderValue::from_static(
        "SESSIONID=5f2b8c1e9a4d7f3b6e0c2a8d4f1b7e9c; Path=/; HttpOnly; SameSite=Lax",
    );
    c.bench_function("read_set_cookie/issued", |b| {
        b.iter(|| read_set_cookie(black_box(&set_cookie), &profile, &fp, now()))
    });
}

fn fingerprint(c: &mut Criterion) {
    let fp = fingerprinter();
    let value = SESSION_VALUE.as_bytes();
    c.bench_function("fingerprint/32_bytes", |b| {
        b.iter(|| fp.fingerprint(black_box("SESSIONID"), black_box(value)))
    });
}

fn classification(c: &mut Criterion) {
    let profile = profile();
    let fp = fingerprinter();
    let carried_fp = fp.fingerprint("SESSIONID", SESSION_VALUE.as_bytes());
    let issued_at = Timestamp::from_millis(now().as_millis() - 60_000);
    let mut record = SessionRecord::issued(BackendId(0), issued_at);
    // Seen a moment ago: the common request of an active session, which needs no table write.
    record.last_seen = Timestamp::from_millis(now().as_millis() - 100);
    let carried = [Carried {
        cookie: CookieId(0),
        fingerprint: carried_fp,
        record: Some(record),
    }];
    let method = Method::GET;

    let continued = Exchange {
        method: &method,
        path: "/account/orders",
        carried: &carried,
        status: StatusCode::OK,
        location: None,
        marker_header: false,
        set_cookies: &[],
        server: BackendId(0),
        now: now(),
    };
    c.bench_function("classify+plan_updates/continued", |b| {
        b.iter(|| {
            let exchange = black_box(&continued);
            let verdict = classify(exchange, &profile);
            let mut updates = 0u32;
            plan_updates(exchange, &verdict, &profile, PinPolicy::Learn, |_| {
                updates += 1
            });
            black_box((verdict, updates))
        })
    });

    // Served by the other node, which did not know the session and issued a new one.
    let reissued = [SetCookieEvent::Issued {
        cookie: CookieId(0),
        fingerprint: fp.fingerprint("SESSIONID", b"0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"),
    }];
    let reset = Exchange {
        set_cookies: &reissued,
        server: BackendId(1),
        ..continued
    };
    c.bench_function("classify+plan_updates/reset", |b| {
        b.iter(|| {
            let exchange = black_box(&reset);
            let verdict = classify(exchange, &profile);
            let mut updates = 0u32;
            plan_updates(exchange, &verdict, &profile, PinPolicy::Learn, |_| {
                updates += 1
            });
            black_box((verdict, updates))
        })
    });
}

fn config() -> Criterion {
    // Short runs: these are nanosecond functions, two seconds each is plenty.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = cookies, fingerprint, classification
}
criterion_main!(benches);
