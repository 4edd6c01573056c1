//! What an answer says and changes: its session `Set-Cookie`s read and the exchange classified,
//! then the updates that follow (the table, the fleet's store, the affinity cookie).

use std::task::Poll;
use std::time::Duration;

use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Response};
use sessionwatch_core::{
    Affinity, BackendId, CookieId, Exchange, Fingerprint, MAX_COOKIES, Outcome, Renewal,
    SessionRecord, SetCookieEvent, StoreUpdate, Timestamp, Verdict, classify, expire_cookie_header,
    plan_updates, read_set_cookie, set_cookie_header,
};

use crate::request::RequestContext;
use crate::shared::{AffinityCookie, BackendDirectory, Shared};
use crate::{Publish, ServedBy, SessionSeen};

/// The session `Set-Cookie`s of a response, last one per cookie name.
struct SetCookies {
    compact: [SetCookieEvent; MAX_COOKIES],
    len: usize,
}

impl SetCookies {
    /// The session `Set-Cookie`s, at most one per cookie (a later one replaces an earlier one, as
    /// in a browser), so they fit in `MAX_COOKIES` slots without allocating.
    fn read(shared: &Shared, headers: &HeaderMap, now: Timestamp) -> Self {
        let mut out = Self {
            compact: [SetCookieEvent::Deleted {
                cookie: sessionwatch_core::CookieId(0),
            }; MAX_COOKIES],
            len: 0,
        };
        for value in headers.get_all(SET_COOKIE) {
            let Some(e) = read_set_cookie(value, &shared.profile, &shared.fingerprinter, now)
            else {
                continue;
            };
            match out.compact[..out.len]
                .iter_mut()
                .find(|o| o.cookie() == e.cookie())
            {
                Some(slot) => *slot = e,
                None if out.len < MAX_COOKIES => {
                    out.compact[out.len] = e;
                    out.len += 1;
                }
                None => {}
            }
        }
        out
    }

    fn as_slice(&self) -> &[SetCookieEvent] {
        &self.compact[..self.len]
    }
}

pub(crate) struct Classified {
    pub(crate) verdict: Verdict,
    set_cookies: SetCookies,
    pub(crate) server: BackendId,
    pub(crate) now: Timestamp,
}

fn exchange<'a, RB>(
    ctx: &'a RequestContext,
    resp: &'a Response<RB>,
    c: &'a Classified,
) -> Exchange<'a> {
    Exchange {
        method: &ctx.method,
        path: ctx.uri.path(),
        carried: ctx.carried.as_slice(),
        status: resp.status(),
        location: resp
            .headers()
            .get(LOCATION)
            .and_then(|l| std::str::from_utf8(l.as_bytes()).ok()),
        marker_header: false,
        set_cookies: c.set_cookies.as_slice(),
        server: c.server,
        now: c.now,
    }
}

pub(crate) fn classify_response<RB>(
    shared: &Shared,
    ctx: &RequestContext,
    resp: &Response<RB>,
) -> Classified {
    let now = Timestamp::now();
    let server = resp
        .extensions()
        .get::<ServedBy>()
        .map_or(shared.default_server, |s| s.0);
    let set_cookies = SetCookies::read(shared, resp.headers(), now);
    let mut c = Classified {
        verdict: Verdict {
            outcome: Outcome::Untracked,
            subject: None,
        },
        set_cookies,
        server,
        now,
    };
    if ctx.carried.as_slice().is_empty() && c.set_cookies.len == 0 {
        return c;
    }
    // An answer no backend served (the proxy's own 502/503/504) says nothing about the
    // application's session: neither classified nor learned from.
    if !is_from_backend(shared, resp) {
        return c;
    }
    let mut ex = exchange(ctx, resp, &c);
    ex.marker_header = shared
        .profile
        .marker()
        .header
        .as_ref()
        .is_some_and(|h| resp.headers().contains_key(h));
    c.verdict = classify(&ex, &shared.profile);
    c
}

pub(crate) fn is_from_backend<RB>(shared: &Shared, resp: &Response<RB>) -> bool {
    shared.default_server != BackendId::UNKNOWN || resp.extensions().get::<ServedBy>().is_some()
}

/// Applies the exchange's store updates, then gives the client the affinity cookie of the
/// session the answer issued (or deletes it along with the session). Returns the fleet's writes
/// of the sessions the answer issued, which the answer waits for.
pub(crate) fn apply_updates<RB>(
    shared: &Shared,
    ctx: &RequestContext,
    resp: &mut Response<RB>,
    c: &Classified,
) -> Option<Publish> {
    let mut ex = exchange(ctx, resp, c);
    ex.marker_header = false;
    // The session the answer issued, in the profile's first cookie: the one the affinity
    // cookie speaks for.
    let mut learned: Option<(CookieId, Fingerprint, SessionRecord)> = None;
    let mut writes: Vec<Publish> = Vec::new();
    let fleet = shared.fleet.as_deref();
    plan_updates(
        &ex,
        &c.verdict,
        &shared.profile,
        shared.policy,
        |u| match u {
            StoreUpdate::Put {
                fingerprint,
                record,
            } => {
                // Only the affinity cookie and the fleet need to know which cookie a put came
                // from.
                let issued = (shared.affinity.is_some() || fleet.is_some())
                    .then(|| {
                        c.set_cookies.as_slice().iter().find_map(|e| match *e {
                            SetCookieEvent::Issued {
                                cookie,
                                fingerprint: f,
                            } if f == fingerprint => Some(cookie),
                            _ => None,
                        })
                    })
                    .flatten();
                if let Some(cookie) = issued
                    && learned.is_none_or(|(first, _, _)| cookie.0 < first.0)
                {
                    learned = Some((cookie, fingerprint, record));
                }
                shared.store.put(fingerprint, record);
                match (fleet, issued) {
                    (Some(fleet), Some(_)) if !ctx.fleet_waited_out => {
                        writes.extend(fleet.publish(fingerprint, record))
                    }
                    (Some(fleet), Some(_)) => fleet.update(fingerprint, record),
                    (Some(fleet), None) => {
                        let before = ctx
                            .carried
                            .as_slice()
                            .iter()
                            .find(|c| c.fingerprint == fingerprint)
                            .and_then(|c| c.record);
                        if fleet_needs(before, &record, shared.profile.idle_timeout()) {
                            fleet.update(fingerprint, record);
                        }
                    }
                    (None, _) => {}
                }
            }
            StoreUpdate::Remove { fingerprint } => {
                shared.store.remove(fingerprint);
                if let Some(fleet) = fleet {
                    fleet.remove(fingerprint);
                }
            }
        },
    );
    if is_from_backend(shared, resp) {
        report_issued(shared, c);
    }
    if let Some(a) = &shared.affinity
        && is_from_backend(shared, resp)
    {
        let directory = &*shared.directory;
        affinity_answer(a, directory, ctx, resp, c, learned.map(|(_, f, r)| (f, r)));
    }
    if shared.mark_sessions {
        mark_session(ctx, resp, c);
    }
    match writes.len() {
        0 => None,
        1 => writes.pop(),
        _ => Some(join(writes)),
    }
}

/// Tells the events hook how many new sessions the answer issued: its session `Set-Cookie`s,
/// less the one that rotated the carried session's value (the same session, re-issued). A
/// sign-in counts: it issues the signed-in session, also when the request carried one.
fn report_issued(shared: &Shared, c: &Classified) {
    let issued = c
        .set_cookies
        .as_slice()
        .iter()
        .filter(|e| matches!(e, SetCookieEvent::Issued { .. }))
        .count();
    let renewal = usize::from(matches!(
        c.verdict.outcome,
        Outcome::Renewed(Renewal::Rotation)
    ));
    let new = issued.saturating_sub(renewal);
    if new > 0 {
        // At most MAX_COOKIES: the conversion cannot saturate.
        shared
            .events
            .issued(c.server, u32::try_from(new).unwrap_or(u32::MAX));
    }
}

/// Marks the answer with the session it was about: the first carried, else the first issued.
fn mark_session<RB>(ctx: &RequestContext, resp: &mut Response<RB>, c: &Classified) {
    let carried = ctx.carried.as_slice().first().map(|s| s.fingerprint);
    let issued = || {
        c.set_cookies.as_slice().iter().find_map(|e| match *e {
            SetCookieEvent::Issued { fingerprint, .. } => Some(fingerprint),
            SetCookieEvent::Deleted { .. } => None,
        })
    };
    if let Some(fingerprint) = carried.or_else(issued) {
        resp.extensions_mut()
            .insert(SessionSeen(fingerprint.short()));
    }
}

/// Whether the fleet's store must hear of a change to a record it has: anything but the last
/// use, and the last use once per eighth of the idle timeout (when it crosses into another
/// eighth). The near cache is touched every sixty-fourth; the fleet's copy needs to be only
/// recent enough that its expiry (the idle timeout after its last use) never comes while the
/// session is in use, and another replica that adopts it sees it idle for at most an eighth of
/// the timeout more than it is.
pub(crate) fn fleet_needs(
    before: Option<SessionRecord>,
    after: &SessionRecord,
    idle: Duration,
) -> bool {
    let Some(before) = before else {
        return true;
    };
    let same_but_last_use = SessionRecord {
        last_seen: after.last_seen,
        presented: after.presented,
        ..before
    } == *after;
    if !same_but_last_use {
        return true;
    }
    let eighth = u64::try_from((idle / 8).as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    before.last_seen.as_millis() / eighth != after.last_seen.as_millis() / eighth
}

/// The writes of one answer (one per session cookie it issued), waited on together so that the
/// answer waits no longer than the slowest.
fn join(mut writes: Vec<Publish>) -> Publish {
    Box::pin(std::future::poll_fn(move |cx| {
        writes.retain_mut(|w| w.as_mut().poll(cx).is_pending());
        if writes.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }))
}

fn affinity_answer<RB>(
    a: &AffinityCookie,
    directory: &dyn BackendDirectory,
    ctx: &RequestContext,
    resp: &mut Response<RB>,
    c: &Classified,
    learned: Option<(Fingerprint, SessionRecord)>,
) {
    let line = match learned {
        Some((fingerprint, record)) => {
            let value = a.key.mint(
                fingerprint,
                &Affinity {
                    issuer_tag: directory.tag(record.issuer),
                    issued_at: record.issued_at,
                    minted_at: c.now,
                },
            );
            set_cookie_header(&a.name, &value, a.max_age, a.secure)
        }
        None if ctx.affinity_seen && session_ended(c) => expire_cookie_header(&a.name, a.secure),
        None => match refreshed(a, directory, ctx, c) {
            Some(value) => set_cookie_header(&a.name, &value, a.max_age, a.secure),
            None => return,
        },
    };
    // Cookie names and base64url are header-safe: this fails only on a name validation let
    // through, and then the answer goes without the cookie.
    if let Ok(v) = HeaderValue::from_str(&line) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

/// A fresh cookie for a known session that goes on, when the client has none valid for it or
/// its own is a quarter of the idle timeout old: the browser drops the cookie `Max-Age` after it
/// was set, and an active session must not lose its affinity then.
fn refreshed(
    a: &AffinityCookie,
    directory: &dyn BackendDirectory,
    ctx: &RequestContext,
    c: &Classified,
) -> Option<String> {
    if !matches!(c.verdict.outcome, Outcome::Continued) {
        return None;
    }
    let carried = ctx.carried.as_slice().get(c.verdict.subject?)?;
    let record = carried.record?;
    if let Some((fingerprint, minted_at)) = ctx.affinity_valid
        && fingerprint == carried.fingerprint
        && c.now.since(minted_at) < a.max_age / 4
    {
        return None;
    }
    Some(a.key.mint(
        carried.fingerprint,
        &Affinity {
            issuer_tag: directory.tag(record.issuer),
            issued_at: record.issued_at,
            minted_at: c.now,
        },
    ))
}

/// The backend ended the session: logged out, timed out, or deleted its cookie.
fn session_ended(c: &Classified) -> bool {
    matches!(c.verdict.outcome, Outcome::Ended(_))
        || c.set_cookies
            .as_slice()
            .iter()
            .any(|e| matches!(e, SetCookieEvent::Deleted { .. }))
}
