//! Classification (`classify`) and the session-table updates that follow (`plan_updates`), on
//! an exchange built from the input as the tower layer builds it from live traffic.
//!
//! The input is a request block (`METHOD /path?query` then headers), an empty line, a response
//! block (a status line then headers), an empty line, then knobs: the profile, the backend that
//! served, and for each session cookie carried whether the session is known, which backend
//! issued it, how long ago it was last seen and whether it is pinned or lost. Missing knobs are
//! zeros: the PHP profile, backend 0 served, every carried session known, issued by backend 0,
//! seen just now.
//!
//! Checks: classification is deterministic; a request with no known session is untracked and
//! any other has a known subject; a logout path ends the session and a login path never resets
//! it; a reset is attributed as its issuer and server say; the updates learn new values only
//! from `Set-Cookie` (never from what the client sent), remove only values the client carried,
//! and mark a reset session lost.

#![no_main]

use std::time::Duration;

use http::Method;
use http::header::LOCATION;
use libfuzzer_sys::fuzz_target;
use sessionwatch_core::{
    Attribution, BackendId, Carried, EndReason, Exchange, Fingerprinter, MAX_COOKIES, Outcome,
    PinPolicy, SessionRecord, SetCookieEvent, StoreUpdate, Timestamp, Verdict, classify,
    plan_updates, read_request_cookies, read_set_cookies,
};
use sessionwatch_core_fuzz::{Knobs, header_map, lines, profiles, split_block, status_in};

const NOW: Timestamp = Timestamp::from_millis(1_795_478_400_000);

fuzz_target!(|data: &[u8]| {
    let (request, rest) = split_block(data);
    let (response, knobs) = split_block(rest);
    let mut request = lines(request);
    let mut response = lines(response);
    let mut knobs = Knobs::new(knobs);

    let request_line = request.next().unwrap_or_default();
    let mut words = request_line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let method = words
        .next()
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(Method::GET);
    let target = String::from_utf8_lossy(words.next().unwrap_or(b"/"));
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let request_headers = header_map(request, "cookie");
    let status = status_in(response.next().unwrap_or_default());
    let response_headers = header_map(response, "set-cookie");

    let profiles = profiles();
    let profile = &profiles[usize::from(knobs.byte()) % profiles.len()];
    let server = match knobs.byte() {
        b if b >= 0xf0 => BackendId::UNKNOWN,
        b => BackendId(u16::from(b % 4)),
    };
    let fingerprinter = Fingerprinter::from_secret(b"fuzz");

    let mut carried = Vec::with_capacity(MAX_COOKIES);
    read_request_cookies(
        &request_headers,
        profile,
        &fingerprinter,
        |cookie, fingerprint| {
            if carried.len() < MAX_COOKIES {
                carried.push(Carried {
                    cookie,
                    fingerprint,
                    record: record(&mut knobs),
                });
            }
        },
    );
    let mut set_cookies = Vec::new();
    read_set_cookies(&response_headers, profile, &fingerprinter, NOW, |e| {
        set_cookies.push(e)
    });
    let location = response_headers
        .get(LOCATION)
        .and_then(|l| std::str::from_utf8(l.as_bytes()).ok());
    let marker_header = profile
        .marker()
        .header
        .as_ref()
        .is_some_and(|h| response_headers.contains_key(h));
    let exchange = Exchange {
        method: &method,
        path,
        carried: &carried,
        status,
        location,
        marker_header,
        set_cookies: &set_cookies,
        server,
        now: NOW,
    };

    let verdict = classify(&exchange, profile);
    assert_eq!(verdict, classify(&exchange, profile), "not deterministic");
    check_verdict(&exchange, &verdict, profile);
    for policy in [
        PinPolicy::Off,
        PinPolicy::Learn,
        PinPolicy::OnReset,
        PinPolicy::OnIncident,
    ] {
        let mut updates = Vec::new();
        plan_updates(&exchange, &verdict, profile, policy, |u| updates.push(u));
        check_updates(&exchange, &verdict, &updates);
    }
});

/// The record of a carried session from the knobs: `None` when the knob says unknown.
fn record(knobs: &mut Knobs<'_>) -> Option<SessionRecord> {
    let flags = knobs.byte();
    if flags & 1 != 0 {
        return None;
    }
    let issuer = match knobs.byte() {
        b if b >= 0xf0 => BackendId::UNKNOWN,
        b => BackendId(u16::from(b % 4)),
    };
    // Ages from seconds to weeks, either side of every preset's idle timeout.
    let age = Duration::from_secs(u64::from(knobs.u16()) * 30);
    let last_seen = Timestamp::from_millis(NOW.as_millis() - age.as_millis() as u64);
    Some(SessionRecord {
        issuer,
        issued_at: Timestamp::from_millis(last_seen.as_millis() / 2),
        last_seen,
        pinned: flags & 2 != 0,
        lost: flags & 4 != 0,
        presented: flags & 8 != 0,
    })
}

fn check_verdict(
    ex: &Exchange<'_>,
    verdict: &Verdict,
    profile: &sessionwatch_core::SessionProfile,
) {
    let known = ex.carried.iter().any(|c| c.record.is_some());
    if !known {
        assert_eq!(verdict.outcome, Outcome::Untracked);
        assert_eq!(verdict.subject, None);
        return;
    }
    let subject = verdict.subject.expect("a known session has a subject");
    let carried = ex.carried.get(subject).expect("the subject is carried");
    let record = carried.record.expect("the subject is known");
    assert_ne!(verdict.outcome, Outcome::Untracked);
    if profile.is_logout_path(ex.path) {
        assert_eq!(verdict.outcome, Outcome::Ended(EndReason::Logout));
    }
    if let Outcome::Reset { attribution, .. } = verdict.outcome {
        assert!(!profile.is_login_path(ex.path), "a reset on a login path");
        assert_eq!(attribution, Attribution::of(record.issuer, ex.server));
    }
    if ex.status.is_success() && !ex.marker_header && ex.set_cookies.is_empty() {
        assert!(
            !matches!(verdict.outcome, Outcome::Reset { .. }),
            "a plain {} with no Set-Cookie is a reset",
            ex.status
        );
    }
}

fn check_updates(ex: &Exchange<'_>, verdict: &Verdict, updates: &[StoreUpdate]) {
    let issued = |fp| {
        ex.set_cookies
            .iter()
            .any(|e| matches!(e, SetCookieEvent::Issued { fingerprint, .. } if *fingerprint == fp))
    };
    let carried_known = |fp| {
        ex.carried
            .iter()
            .any(|c| c.fingerprint == fp && c.record.is_some())
    };
    for u in updates {
        match *u {
            StoreUpdate::Put {
                fingerprint,
                record,
            } => {
                assert!(
                    issued(fingerprint) || carried_known(fingerprint),
                    "a value learned from what the client sent"
                );
                assert_eq!(record.last_seen, ex.now);
            }
            StoreUpdate::Remove { fingerprint } => {
                assert!(carried_known(fingerprint), "removed a value nobody carried");
            }
        }
    }
    if matches!(verdict.outcome, Outcome::Reset { .. })
        && let Some((fp, _)) = verdict.subject(ex)
    {
        for u in updates {
            if let StoreUpdate::Put {
                fingerprint,
                record,
            } = *u
                && fingerprint == fp
                && !issued(fp)
            {
                assert!(record.lost, "a reset session not marked lost");
            }
        }
    }
}
