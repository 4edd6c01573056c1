//! Classifying one response to a request that carried a known session.
//!
//! The rules, in order (DESIGN.md, "Observation"):
//! 1. a request on a logout path ends its sessions on purpose;
//! 2. on a login path a new value is a renewal (every framework rotates the id at sign-in) and
//!    nothing else counts;
//! 3. a session unused past the idle timeout ends on purpose when the response shows any signal;
//! 4. a signal from the session cookie itself: `cleared` (deleted), then `reissued` (a new value),
//!    unless the cookie rotates in normal operation and nothing else says the session was lost;
//! 5. a signal from the response alone: `login_redirect` (3xx to a login path), `unauthorized`
//!    (401), `marker` (the application's own marker). These catch the store misses that keep the
//!    cookie unchanged (ASP.NET Core, PHP's default), so they are never optional;
//! 6. otherwise the session continued.

use http::{Method, StatusCode};

use crate::profile::MAX_COOKIES;
use crate::{
    BackendId, CookieId, Fingerprint, PinPolicy, SessionProfile, SessionRecord, SetCookieEvent,
    Timestamp,
};

/// One session cookie carried by the request, with its record if the session is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// Which session cookie.
    pub cookie: CookieId,
    /// The fingerprint of the value the client sent.
    pub fingerprint: Fingerprint,
    /// The record, if a backend issued this value and it is still tracked.
    pub record: Option<SessionRecord>,
}

/// One request and its response, as the classifier sees them.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Request path, without the query.
    pub path: &'a str,
    /// The session cookies the request carried.
    pub carried: &'a [Carried],
    /// Response status.
    pub status: StatusCode,
    /// Response `Location` header, if any.
    pub location: Option<&'a str>,
    /// Whether the response carries the profile's marker header.
    pub marker_header: bool,
    /// What the response's `Set-Cookie` headers did to session cookies.
    pub set_cookies: &'a [SetCookieEvent],
    /// The backend that served the request ([`BackendId::UNKNOWN`] when it cannot be told).
    pub server: BackendId,
    /// When the response was seen.
    pub now: Timestamp,
}

/// The normal renewals of a session value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// A new id issued on a login path.
    Login,
    /// A rotating cookie (sliding auth ticket) re-issued on an ordinary response.
    Rotation,
}

/// What showed that a session was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResetSignal {
    /// A new value for the same cookie.
    Reissued,
    /// The cookie was deleted.
    Cleared,
    /// A redirect to a login path.
    LoginRedirect,
    /// 401 Unauthorized.
    Unauthorized,
    /// The application's own marker header or status.
    Marker,
}

impl ResetSignal {
    /// Every signal, for metric descriptions and tests.
    pub const ALL: [ResetSignal; 5] = [
        ResetSignal::Reissued,
        ResetSignal::Cleared,
        ResetSignal::LoginRedirect,
        ResetSignal::Unauthorized,
        ResetSignal::Marker,
    ];

    /// The name used in alert lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetSignal::Reissued => "reissued",
            ResetSignal::Cleared => "cleared",
            ResetSignal::LoginRedirect => "login_redirect",
            ResetSignal::Unauthorized => "unauthorized",
            ResetSignal::Marker => "marker",
        }
    }
}

/// Whether the backend that lost a session is the one that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attribution {
    /// Issued by one backend, lost by another: the store or keys are not shared.
    CrossBackend,
    /// Lost by the backend that issued it: it restarted, evicted, or timed out.
    SameBackend,
    /// The issuer or the server is not known (in front of a single upstream without a replica
    /// header).
    Unknown,
}

impl Attribution {
    /// Attribution of a loss of a session issued by `issuer` and served by `server`.
    pub fn of(issuer: BackendId, server: BackendId) -> Self {
        if issuer == BackendId::UNKNOWN || server == BackendId::UNKNOWN {
            Attribution::Unknown
        } else if issuer == server {
            Attribution::SameBackend
        } else {
            Attribution::CrossBackend
        }
    }

    /// The name used in alert lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::CrossBackend => "cross_backend",
            Attribution::SameBackend => "same_backend",
            Attribution::Unknown => "unknown",
        }
    }
}

/// Why a session ended on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The request was on a logout path.
    Logout,
    /// The session had been idle past the timeout.
    IdleTimeout,
}

/// The classification of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request carried no known session: nothing to classify (new sessions are still learned).
    Untracked,
    /// Nothing says the session ended.
    Continued,
    /// The session value was renewed normally.
    Renewed(Renewal),
    /// The session was lost.
    Reset {
        /// What showed it.
        signal: ResetSignal,
        /// Which backend lost it relative to the issuer.
        attribution: Attribution,
    },
    /// The session ended on purpose.
    Ended(EndReason),
}

impl Outcome {
    /// Whether the request counts in the share of requests with a known session that lost it:
    /// every request with a known session but a sign-in or a sign-out. Those can never show a
    /// loss (the rules decide them by path), and the sign-ins that follow every loss would
    /// dilute exactly the issuer x server pairs that lose sessions, and hide the cause.
    pub fn counts_in_share(&self) -> bool {
        !matches!(
            self,
            Outcome::Untracked
                | Outcome::Renewed(Renewal::Login)
                | Outcome::Ended(EndReason::Logout)
        )
    }
}

/// The classification, and which carried session it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The outcome.
    pub outcome: Outcome,
    /// Index into [`Exchange::carried`] of the known session the outcome is about.
    pub subject: Option<usize>,
}

impl Verdict {
    /// The subject's fingerprint and record, if there is a subject.
    pub fn subject<'a>(&self, exchange: &Exchange<'a>) -> Option<(Fingerprint, SessionRecord)> {
        let c = exchange.carried.get(self.subject?)?;
        Some((c.fingerprint, c.record?))
    }
}

/// What the response did to each session cookie; the last `Set-Cookie` for a name wins, as in
/// a browser.
#[derive(Clone, Copy)]
struct CookieChanges([Option<SetCookieEvent>; MAX_COOKIES]);

impl CookieChanges {
    fn of(events: &[SetCookieEvent]) -> Self {
        let mut changes = [None; MAX_COOKIES];
        for e in events {
            if let Some(slot) = changes.get_mut(e.cookie().index()) {
                *slot = Some(*e);
            }
        }
        Self(changes)
    }

    fn get(&self, cookie: CookieId) -> Option<SetCookieEvent> {
        self.0.get(cookie.index()).copied().flatten()
    }

    /// Whether the response replaced or deleted the carried value.
    fn replaces(&self, carried: &Carried) -> bool {
        match self.get(carried.cookie) {
            Some(SetCookieEvent::Deleted { .. }) => true,
            Some(SetCookieEvent::Issued { fingerprint, .. }) => fingerprint != carried.fingerprint,
            None => false,
        }
    }
}

fn is_live(record: &SessionRecord, profile: &SessionProfile, now: Timestamp) -> bool {
    now.since(record.last_seen) <= profile.idle_timeout()
}

/// Classify one exchange.
pub fn classify(exchange: &Exchange<'_>, profile: &SessionProfile) -> Verdict {
    let known = |c: &Carried| c.record.is_some();
    let Some(first_known) = exchange.carried.iter().position(known) else {
        return Verdict {
            outcome: Outcome::Untracked,
            subject: None,
        };
    };
    let changes = CookieChanges::of(exchange.set_cookies);
    // The subject is the known session whose cookie the response touched, if any: that is the
    // one the application acted on. Otherwise the first known one in configured order.
    let subject = exchange
        .carried
        .iter()
        .position(|c| known(c) && changes.replaces(c))
        .unwrap_or(first_known);
    let verdict = |outcome| Verdict {
        outcome,
        subject: Some(subject),
    };

    if profile.is_logout_path(exchange.path) {
        return verdict(Outcome::Ended(EndReason::Logout));
    }
    let carried = exchange.carried[subject];
    let cookie_signal = match changes.get(carried.cookie) {
        Some(SetCookieEvent::Deleted { .. }) => Some(ResetSignal::Cleared),
        Some(SetCookieEvent::Issued { fingerprint, .. }) if fingerprint != carried.fingerprint => {
            Some(ResetSignal::Reissued)
        }
        _ => None,
    };
    if profile.is_login_path(exchange.path) {
        return verdict(match cookie_signal {
            Some(ResetSignal::Reissued) => Outcome::Renewed(Renewal::Login),
            _ => Outcome::Continued,
        });
    }
    let response_signal = response_signal(exchange, profile);
    let Some(record) = carried.record else {
        return verdict(Outcome::Continued);
    };
    if cookie_signal.is_none() && response_signal.is_none() {
        return verdict(Outcome::Continued);
    }
    if !is_live(&record, profile, exchange.now) {
        return verdict(Outcome::Ended(EndReason::IdleTimeout));
    }
    let rotates = profile
        .cookies()
        .get(carried.cookie.index())
        .is_some_and(|c| c.rotates());
    let signal = match (cookie_signal, response_signal) {
        (Some(ResetSignal::Reissued), None) if rotates => {
            return verdict(Outcome::Renewed(Renewal::Rotation));
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => return verdict(Outcome::Continued),
    };
    verdict(Outcome::Reset {
        signal,
        attribution: Attribution::of(record.issuer, exchange.server),
    })
}

fn response_signal(exchange: &Exchange<'_>, profile: &SessionProfile) -> Option<ResetSignal> {
    if exchange.status.is_redirection()
        && exchange
            .location
            .is_some_and(|l| profile.is_login_location(l))
    {
        return Some(ResetSignal::LoginRedirect);
    }
    if exchange.status == StatusCode::UNAUTHORIZED {
        return Some(ResetSignal::Unauthorized);
    }
    if exchange.marker_header || profile.marker().statuses.contains(&exchange.status) {
        return Some(ResetSignal::Marker);
    }
    None
}

/// A change to the session table that follows from an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUpdate {
    /// Insert or replace the record of `fingerprint`.
    Put {
        /// The session.
        fingerprint: Fingerprint,
        /// Its record.
        record: SessionRecord,
    },
    /// The session value is gone for good (deleted, replaced, logged out, timed out).
    Remove {
        /// The session.
        fingerprint: Fingerprint,
    },
}

/// How far `last_seen` may lag before a record is written back. Rewriting the table on every
/// request would cost more than the precision is worth next to idle timeouts of minutes: a
/// sixty-fourth of the idle timeout, between one and thirty seconds.
fn touch_granularity(profile: &SessionProfile) -> std::time::Duration {
    (profile.idle_timeout() / 64).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(30),
    )
}

/// Calls `update` for every change to the session table that the exchange implies: new values
/// learned from `Set-Cookie` (never from what a client sent), replaced or ended values removed,
/// lost ones marked, live ones touched. `policy` decides whether a replacement inherits a pin. A
/// new value counts as [`SessionRecord::presented`] when it was issued on a login path or in
/// place of a value the request carried.
pub fn plan_updates(
    exchange: &Exchange<'_>,
    verdict: &Verdict,
    profile: &SessionProfile,
    policy: PinPolicy,
    mut update: impl FnMut(StoreUpdate),
) {
    let changes = CookieChanges::of(exchange.set_cookies);
    let now = exchange.now;
    let is_reset = matches!(verdict.outcome, Outcome::Reset { .. });
    let ended = matches!(verdict.outcome, Outcome::Ended(_));
    let touch_every = touch_granularity(profile);

    for carried in exchange.carried {
        let Some(record) = carried.record else {
            continue;
        };
        if ended || changes.replaces(carried) {
            update(StoreUpdate::Remove {
                fingerprint: carried.fingerprint,
            });
            continue;
        }
        let lost = record.lost || is_reset;
        if lost != record.lost || now.since(record.last_seen) >= touch_every {
            update(StoreUpdate::Put {
                fingerprint: carried.fingerprint,
                record: SessionRecord {
                    last_seen: now,
                    lost,
                    ..record
                },
            });
        }
    }

    for event in exchange.set_cookies {
        let SetCookieEvent::Issued {
            cookie,
            fingerprint,
        } = *event
        else {
            continue;
        };
        // A later Set-Cookie for the same name overrides this one.
        if changes.get(cookie) != Some(*event) {
            continue;
        }
        let previous = exchange
            .carried
            .iter()
            .find(|c| c.cookie == cookie)
            .and_then(|c| c.record.filter(|_| c.fingerprint != fingerprint));
        let Some(previous) = previous else {
            if exchange
                .carried
                .iter()
                .any(|c| c.cookie == cookie && c.fingerprint == fingerprint && c.record.is_some())
            {
                // Same value re-sent (an expiry refresh): the carried record already covers it.
                continue;
            }
            // A sign-in (a form sent to a login path) is followed by the client's next request;
            // a session handed to a request without one may never come back (a bot, a crawler,
            // a flood), and neither may one handed to a GET of the login form, which anyone
            // can send as fast as they like.
            let sign_in = profile.is_login_path(exchange.path)
                && !matches!(*exchange.method, Method::GET | Method::HEAD);
            update(StoreUpdate::Put {
                fingerprint,
                record: SessionRecord {
                    presented: sign_in,
                    ..SessionRecord::issued(exchange.server, now)
                },
            });
            continue;
        };
        // It replaces the value this very request presented: the client will send it next.
        let mut record = SessionRecord {
            presented: true,
            ..SessionRecord::issued(exchange.server, now)
        };
        match verdict.outcome {
            Outcome::Renewed(Renewal::Rotation) => {
                record.issued_at = previous.issued_at;
                record.pinned = previous.pinned;
            }
            Outcome::Renewed(Renewal::Login) | Outcome::Continued => {
                record.pinned = previous.pinned || (policy == PinPolicy::OnReset && previous.lost);
            }
            Outcome::Reset { .. } => {
                record.pinned = previous.pinned || policy == PinPolicy::OnReset;
            }
            Outcome::Ended(_) | Outcome::Untracked => {}
        }
        update(StoreUpdate::Put {
            fingerprint,
            record,
        });
    }
}
