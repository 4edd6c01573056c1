//! The `Cookie` scanner and the `Set-Cookie` reader (`read_request_cookies`,
//! `read_set_cookies`), against every built-in profile and a custom one with eight cookies.
//!
//! The input is a header block, one header a line (`Cookie: ...`, `Set-Cookie: ...`; a line
//! without a colon is a `Cookie` value); headers `http` refuses are left out.
//!
//! Checks: the scanner reports each configured cookie at most once, and only configured ones;
//! the reader reports at most one event per `Set-Cookie`, in order; and the two sides agree:
//! a pair that a backend's `Set-Cookie` issued fingerprints the same when a client sends it
//! back (`name=value`, as a browser does), and a `Cookie` pair that both sides read gets the same
//! fingerprint from both.

#![no_main]

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sessionwatch_core::{
    CookieId, Fingerprint, Fingerprinter, SessionProfile, SetCookieEvent, Timestamp,
    read_request_cookies, read_set_cookie, read_set_cookies,
};
use sessionwatch_core_fuzz::{header_map, lines, profiles};

/// 2026-11-24T00:00:00Z, so that `Expires` dates on either side of it turn up in the seeds.
const NOW: Timestamp = Timestamp::from_millis(1_795_478_400_000);

fuzz_target!(|data: &[u8]| {
    let headers = header_map(lines(data), "cookie");
    let fingerprinter = Fingerprinter::from_secret(b"fuzz");
    for profile in profiles() {
        check(&headers, &profile, &fingerprinter);
    }
});

fn request_side(
    headers: &HeaderMap,
    p: &SessionProfile,
    f: &Fingerprinter,
) -> Vec<(CookieId, Fingerprint)> {
    let mut found = Vec::new();
    read_request_cookies(headers, p, f, |id, fp| found.push((id, fp)));
    found
}

fn check(headers: &HeaderMap, profile: &SessionProfile, f: &Fingerprinter) {
    let found = request_side(headers, profile, f);
    for (i, (id, _)) in found.iter().enumerate() {
        assert!(id.index() < profile.cookies().len());
        assert!(
            found[..i].iter().all(|(other, _)| other != id),
            "{id:?} reported twice"
        );
    }

    let mut events = Vec::new();
    read_set_cookies(headers, profile, f, NOW, |e| events.push(e));
    let one_by_one: Vec<_> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| read_set_cookie(v, profile, f, NOW))
        .collect();
    assert_eq!(events, one_by_one);
    for e in &events {
        assert!(e.cookie().index() < profile.cookies().len());
    }

    // A value issued by Set-Cookie comes back as `name=value` (RFC 6265 section 5.4).
    for value in headers.get_all(SET_COOKIE) {
        let Some(SetCookieEvent::Issued {
            cookie,
            fingerprint,
        }) = read_set_cookie(value, profile, f, NOW)
        else {
            continue;
        };
        let pair = value
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let sent = single(COOKIE, pair);
        assert_eq!(
            request_side(&sent, profile, f),
            [(cookie, fingerprint)],
            "issued as {value:?}, sent back as \"{}\"",
            pair.escape_ascii()
        );
    }

    // A `Cookie` pair read by both sides gets one fingerprint.
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let request = request_side(&single(COOKIE, pair), profile, f);
            let Some(&(id, fp)) = request.first() else {
                continue;
            };
            if let Ok(v) = HeaderValue::from_bytes(pair)
                && let Some(SetCookieEvent::Issued {
                    cookie,
                    fingerprint,
                }) = read_set_cookie(&v, profile, f, NOW)
            {
                assert_eq!((cookie, fingerprint), (id, fp), "{}", pair.escape_ascii());
            }
        }
    }
}

fn single(name: http::HeaderName, value: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(value) {
        h.append(name, v);
    }
    h
}
