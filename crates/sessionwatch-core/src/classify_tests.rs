//! Every classification outcome and exclusion, on hand-built exchanges.

use std::time::Duration;

use http::{HeaderName, Method, StatusCode};

use crate::*;

const A: BackendId = BackendId(0);
const B: BackendId = BackendId(1);
const SID: CookieId = CookieId(0);
const TICKET: CookieId = CookieId(1);

fn profile() -> SessionProfile {
    SessionProfile::custom(vec![
        CookieSpec::new("SID"),
        CookieSpec::new("TICKET").rotating(true),
    ])
    .with_idle_timeout(Duration::from_secs(600))
    .with_marker(Marker {
        header: Some(HeaderName::from_static("x-session-lost")),
        statuses: vec![StatusCode::from_u16(440).unwrap()],
    })
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_millis(1_795_478_400_000 + secs * 1000)
}

fn fp(v: &str) -> Fingerprint {
    Fingerprinter::from_secret(b"k").fingerprint("SID", v.as_bytes())
}

fn known(cookie: CookieId, v: &str, issuer: BackendId, issued: u64) -> Carried {
    Carried {
        cookie,
        fingerprint: fp(v),
        record: Some(SessionRecord::issued(issuer, t(issued))),
    }
}

fn presented(record: SessionRecord) -> SessionRecord {
    SessionRecord {
        presented: true,
        ..record
    }
}

fn unknown(cookie: CookieId, v: &str) -> Carried {
    Carried {
        cookie,
        fingerprint: fp(v),
        record: None,
    }
}

struct Ex {
    method: Method,
    path: &'static str,
    carried: Vec<Carried>,
    status: StatusCode,
    location: Option<&'static str>,
    marker: bool,
    set: Vec<SetCookieEvent>,
    server: BackendId,
    now: Timestamp,
}

fn ex(carried: Vec<Carried>) -> Ex {
    Ex {
        method: Method::GET,
        path: "/me",
        carried,
        status: StatusCode::OK,
        location: None,
        marker: false,
        set: vec![],
        server: B,
        now: t(60),
    }
}

impl Ex {
    fn status(mut self, s: u16) -> Self {
        self.status = StatusCode::from_u16(s).unwrap();
        self
    }
    fn location(mut self, l: &'static str) -> Self {
        self.location = Some(l);
        self
    }
    fn path(mut self, p: &'static str) -> Self {
        self.path = p;
        self
    }
    fn issues(mut self, cookie: CookieId, v: &str) -> Self {
        self.set.push(SetCookieEvent::Issued {
            cookie,
            fingerprint: fp(v),
        });
        self
    }
    fn deletes(mut self, cookie: CookieId) -> Self {
        self.set.push(SetCookieEvent::Deleted { cookie });
        self
    }
    fn server(mut self, s: BackendId) -> Self {
        self.server = s;
        self
    }
    fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }
    fn exchange(&self) -> Exchange<'_> {
        Exchange {
            method: &self.method,
            path: self.path,
            carried: &self.carried,
            status: self.status,
            location: self.location,
            marker_header: self.marker,
            set_cookies: &self.set,
            server: self.server,
            now: self.now,
        }
    }
    fn outcome(&self) -> Outcome {
        classify(&self.exchange(), &profile()).outcome
    }
    fn updates(&self, policy: PinPolicy) -> Vec<StoreUpdate> {
        let e = self.exchange();
        let v = classify(&e, &profile());
        let mut out = vec![];
        plan_updates(&e, &v, &profile(), policy, |u| out.push(u));
        out
    }
}

fn reset(signal: ResetSignal, attribution: Attribution) -> Outcome {
    Outcome::Reset {
        signal,
        attribution,
    }
}

#[test]
fn a_client_made_up_cookie_is_never_learned() {
    let e = ex(vec![unknown(SID, "made-up")]);
    assert_eq!(e.outcome(), Outcome::Untracked);
    assert_eq!(e.updates(PinPolicy::Learn), vec![]);
    // Even when the backend answers with a login redirect, there is nothing to classify.
    let e = ex(vec![unknown(SID, "made-up")])
        .status(302)
        .location("/login");
    assert_eq!(e.outcome(), Outcome::Untracked);
    assert_eq!(e.updates(PinPolicy::Learn), vec![]);
}

#[test]
fn an_anonymous_request_that_gets_a_fresh_id_is_learned_not_reset() {
    let e = ex(vec![]).issues(SID, "fresh");
    assert_eq!(e.outcome(), Outcome::Untracked);
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Put {
            fingerprint: fp("fresh"),
            record: SessionRecord::issued(B, t(60))
        }]
    );
}

#[test]
fn a_known_session_with_a_plain_answer_continues_and_is_touched() {
    let e = ex(vec![known(SID, "s", A, 0)]);
    assert_eq!(e.outcome(), Outcome::Continued);
    let mut touched = SessionRecord::issued(A, t(0));
    touched.last_seen = t(60);
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Put {
            fingerprint: fp("s"),
            record: touched
        }]
    );
    // A redirect elsewhere is not a loss, and neither is re-sending the same value.
    assert_eq!(
        ex(vec![known(SID, "s", A, 0)])
            .status(302)
            .location("/cart")
            .outcome(),
        Outcome::Continued
    );
    assert_eq!(
        ex(vec![known(SID, "s", A, 0)]).issues(SID, "s").outcome(),
        Outcome::Continued
    );
}

#[test]
fn a_touch_within_the_granularity_is_not_written_back() {
    // Idle timeout 600 s: last_seen is written back once it lags by 600/64 s or more.
    let e = ex(vec![known(SID, "s", A, 60)]).at(t(60).plus(Duration::from_millis(9_000)));
    assert_eq!(e.outcome(), Outcome::Continued);
    assert_eq!(e.updates(PinPolicy::Off), vec![]);
    let e = ex(vec![known(SID, "s", A, 60)]).at(t(60).plus(Duration::from_millis(9_500)));
    assert_eq!(e.updates(PinPolicy::Off).len(), 1);
}

#[test]
fn a_new_value_for_the_same_cookie_is_reissued() {
    let e = ex(vec![known(SID, "old", A, 0)]).issues(SID, "new");
    assert_eq!(
        e.outcome(),
        reset(ResetSignal::Reissued, Attribution::CrossBackend)
    );
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![
            StoreUpdate::Remove {
                fingerprint: fp("old")
            },
            StoreUpdate::Put {
                fingerprint: fp("new"),
                record: presented(SessionRecord::issued(B, t(60)))
            },
        ]
    );
}

#[test]
fn deletion_is_cleared_in_each_form() {
    // The three wire forms (empty value, Max-Age=0, past Expires) all parse to `Deleted`; see
    // cookies::tests::issue_and_each_deletion_form. Here: a deletion of a known session is a reset.
    let e = ex(vec![known(SID, "s", A, 0)])
        .deletes(SID)
        .status(302)
        .location("/accounts/login/?next=/me");
    assert_eq!(
        e.outcome(),
        reset(ResetSignal::Cleared, Attribution::CrossBackend)
    );
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Remove {
            fingerprint: fp("s")
        }]
    );
}

#[test]
fn a_redirect_to_login_with_a_return_parameter_is_login_redirect() {
    for location in [
        "/login?return=%2Fme",
        "https://shop.example/login?next=/me",
        "/LOGIN/",
    ] {
        let e = ex(vec![known(SID, "s", A, 0)])
            .status(302)
            .location(location);
        assert_eq!(
            e.outcome(),
            reset(ResetSignal::LoginRedirect, Attribution::CrossBackend),
            "{location}"
        );
    }
    // A 200 whose body happens to be a login form, with no redirect, is not a signal.
    assert_eq!(
        ex(vec![known(SID, "s", A, 0)]).location("/login").outcome(),
        Outcome::Continued
    );
}

#[test]
fn a_cookie_kept_silently_with_a_login_redirect_is_a_reset_and_the_record_is_kept() {
    // ASP.NET Core's store miss and PHP's default: same value, no Set-Cookie, 302 to login.
    let e = ex(vec![known(SID, "s", A, 0)])
        .status(302)
        .location("/login?ReturnUrl=%2Fme");
    assert_eq!(
        e.outcome(),
        reset(ResetSignal::LoginRedirect, Attribution::CrossBackend)
    );
    let mut lost = SessionRecord::issued(A, t(0));
    lost.last_seen = t(60);
    lost.lost = true;
    // Kept, marked lost: the next request to the issuer may well work again.
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Put {
            fingerprint: fp("s"),
            record: lost
        }]
    );
}

#[test]
fn unauthorized_and_marker_signals() {
    assert_eq!(
        ex(vec![known(SID, "s", A, 0)]).status(401).outcome(),
        reset(ResetSignal::Unauthorized, Attribution::CrossBackend)
    );
    assert_eq!(
        ex(vec![known(SID, "s", A, 0)]).status(440).outcome(),
        reset(ResetSignal::Marker, Attribution::CrossBackend)
    );
    let mut e = ex(vec![known(SID, "s", A, 0)]);
    e.marker = true;
    assert_eq!(
        e.outcome(),
        reset(ResetSignal::Marker, Attribution::CrossBackend)
    );
}

#[test]
fn attribution_names_same_and_cross_backend() {
    let same = ex(vec![known(SID, "s", B, 0)]).status(401).server(B);
    assert_eq!(
        same.outcome(),
        reset(ResetSignal::Unauthorized, Attribution::SameBackend)
    );
    let cross = ex(vec![known(SID, "s", A, 0)]).status(401).server(B);
    assert_eq!(
        cross.outcome(),
        reset(ResetSignal::Unauthorized, Attribution::CrossBackend)
    );
    let unknown_server = ex(vec![known(SID, "s", A, 0)])
        .status(401)
        .server(BackendId::UNKNOWN);
    assert_eq!(
        unknown_server.outcome(),
        reset(ResetSignal::Unauthorized, Attribution::Unknown)
    );
}

#[test]
fn logout_is_ended_on_purpose_whatever_it_looks_like() {
    // PHP: PHPSESSID=deleted; Max-Age=0 and a redirect to login. Same bytes as a loss.
    let e = ex(vec![known(SID, "s", A, 0)])
        .path("/logout")
        .deletes(SID)
        .status(302)
        .location("/login");
    assert_eq!(e.outcome(), Outcome::Ended(EndReason::Logout));
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Remove {
            fingerprint: fp("s")
        }]
    );
    let e = ex(vec![known(SID, "s", A, 0)]).path("/logout/").status(200);
    assert_eq!(e.outcome(), Outcome::Ended(EndReason::Logout));
}

#[test]
fn a_new_id_on_the_login_request_is_a_renewal() {
    let mut e = ex(vec![known(SID, "anon", A, 0)])
        .path("/login")
        .issues(SID, "signed-in")
        .status(302)
        .location("/me");
    e.method = Method::POST;
    assert_eq!(e.outcome(), Outcome::Renewed(Renewal::Login));
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![
            StoreUpdate::Remove {
                fingerprint: fp("anon")
            },
            StoreUpdate::Put {
                fingerprint: fp("signed-in"),
                record: presented(SessionRecord::issued(B, t(60)))
            },
        ]
    );
    // A failed sign-in that redirects back to the login page is not a loss either.
    let e = ex(vec![known(SID, "anon", A, 0)])
        .path("/login")
        .status(302)
        .location("/login?error=1");
    assert_eq!(e.outcome(), Outcome::Continued);
}

#[test]
fn a_rotating_ticket_reissued_on_an_ordinary_response_is_a_renewal() {
    let e = ex(vec![known(TICKET, "t1", A, 0)]).issues(TICKET, "t2");
    assert_eq!(e.outcome(), Outcome::Renewed(Renewal::Rotation));
    let mut renewed = presented(SessionRecord::issued(B, t(60)));
    renewed.issued_at = t(0); // the session's age carries over
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![
            StoreUpdate::Remove {
                fingerprint: fp("t1")
            },
            StoreUpdate::Put {
                fingerprint: fp("t2"),
                record: renewed
            },
        ]
    );
    // ... but not when the same response says the session was lost.
    let e = ex(vec![known(TICKET, "t1", A, 0)])
        .issues(TICKET, "t2")
        .status(302)
        .location("/login");
    assert_eq!(
        e.outcome(),
        reset(ResetSignal::Reissued, Attribution::CrossBackend)
    );
    // A non-rotating cookie re-issued is a reset.
    let e = ex(vec![known(SID, "s1", A, 0)]).issues(SID, "s2");
    assert_eq!(
        e.outcome(),
        reset(ResetSignal::Reissued, Attribution::CrossBackend)
    );
}

#[test]
fn the_session_whose_cookie_changed_is_the_subject() {
    // ASP.NET Core carries both cookies; the session store cookie is re-issued, the ticket kept.
    let e = ex(vec![known(SID, "s1", A, 0), known(TICKET, "t1", B, 0)])
        .issues(SID, "s2")
        .server(B);
    let v = classify(&e.exchange(), &profile());
    assert_eq!(v.subject, Some(0));
    assert_eq!(
        v.outcome,
        reset(ResetSignal::Reissued, Attribution::CrossBackend)
    );
}

#[test]
fn a_session_past_the_idle_timeout_ends_on_purpose() {
    let e = ex(vec![known(SID, "s", A, 0)])
        .status(302)
        .location("/login")
        .at(t(601));
    assert_eq!(e.outcome(), Outcome::Ended(EndReason::IdleTimeout));
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Remove {
            fingerprint: fp("s")
        }]
    );
    // Still within the timeout: a reset.
    let e = ex(vec![known(SID, "s", A, 0)])
        .status(302)
        .location("/login")
        .at(t(599));
    assert!(matches!(e.outcome(), Outcome::Reset { .. }));
    // Past it but the app kept the session: it simply continues.
    assert_eq!(
        ex(vec![known(SID, "s", A, 0)]).at(t(900)).outcome(),
        Outcome::Continued
    );
}

#[test]
fn on_reset_pins_the_replacement_of_a_lost_session() {
    let e = ex(vec![known(SID, "old", A, 0)]).issues(SID, "new");
    let pinned = |updates: Vec<StoreUpdate>| {
        updates.into_iter().find_map(|u| match u {
            StoreUpdate::Put {
                fingerprint,
                record,
            } if fingerprint == fp("new") => Some(record.pinned),
            _ => None,
        })
    };
    assert_eq!(pinned(e.updates(PinPolicy::OnReset)), Some(true));
    assert_eq!(pinned(e.updates(PinPolicy::Off)), Some(false));
    // Lost without a new cookie, then the user signs in again carrying the lost value.
    let mut lost = known(SID, "old", A, 0);
    if let Some(r) = lost.record.as_mut() {
        r.lost = true;
    }
    let login = ex(vec![lost]).path("/login").issues(SID, "new");
    assert_eq!(pinned(login.updates(PinPolicy::OnReset)), Some(true));
    assert_eq!(pinned(login.updates(PinPolicy::Learn)), Some(false));
}

#[test]
fn a_session_counts_as_presented_once_signed_in_or_sent_back() {
    // Handed to a request without a cookie on an ordinary path: nobody may ever send it back.
    let e = ex(vec![])
        .issues(SID, "anon")
        .status(302)
        .location("/login");
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Put {
            fingerprint: fp("anon"),
            record: SessionRecord::issued(B, t(60))
        }]
    );
    // Handed to a GET of the login form without a cookie: a bot can ask for it in a flood.
    let e = ex(vec![]).path("/login").issues(SID, "bot").status(200);
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Put {
            fingerprint: fp("bot"),
            record: SessionRecord::issued(B, t(60))
        }]
    );
    // Issued to a sign-in, even to a request without a cookie: the client signing in will.
    let mut e = ex(vec![])
        .path("/login")
        .issues(SID, "signed-in")
        .status(302)
        .location("/me");
    e.method = Method::POST;
    assert_eq!(
        e.updates(PinPolicy::Off),
        vec![StoreUpdate::Put {
            fingerprint: fp("signed-in"),
            record: presented(SessionRecord::issued(B, t(60)))
        }]
    );
    // A touch keeps what the store said of the record, presented or not.
    for record in [
        SessionRecord::issued(A, t(0)),
        presented(SessionRecord::issued(A, t(0))),
    ] {
        let carried = Carried {
            cookie: SID,
            fingerprint: fp("s"),
            record: Some(record),
        };
        let updates = ex(vec![carried]).updates(PinPolicy::Off);
        assert_eq!(
            updates,
            vec![StoreUpdate::Put {
                fingerprint: fp("s"),
                record: SessionRecord {
                    last_seen: t(60),
                    ..record
                }
            }]
        );
    }
}
