//! The response side: classify, update the store, report, and maybe rescue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use sessionwatch_core::{
    Affinity, BackendId, CookieId, Exchange, Fingerprint, MAX_COOKIES, Outcome, RouteDecision,
    SessionRecord, SetCookieEvent, StoreUpdate, Timestamp, Verdict, classify, expire_cookie_header,
    plan_updates, read_set_cookie, set_cookie_header,
};
use tower::Service;

use crate::request::{RequestContext, route_and_call, take_found};
use crate::shared::{AffinityCookie, BackendDirectory, Shared};
use crate::{Lookup, Observed, Publish, RescueAttempt, Rescued, ServedBy, SessionRoute};

pin_project! {
    #[project = StateProj]
    enum State<S, F, B> {
        // Waiting on the fleet store for sessions the near cache missed.
        Lookup { lookup: Lookup, req: Option<Request<B>>, svc: Option<S> },
        // The fleet has answered: the request goes on once `svc` is ready.
        Calling { req: Option<Request<B>>, svc: Option<S> },
        First { #[pin] fut: F },
        Ready { req: Option<Request<B>>, issuer: BackendId, server: BackendId },
        Rescue { #[pin] fut: F, issuer: BackendId, server: BackendId },
        // The answer in `held` issued a session; it goes once the fleet has it.
        Publish { write: Publish },
        Done,
    }
}

pin_project! {
    /// Response future of [`crate::SessionService`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, S::Future, B>,
        ctx: RequestContext,
        rescue_svc: Option<S>,
        held: Option<S::Response>,
        shared: Arc<Shared>,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        fut: S::Future,
        ctx: RequestContext,
        rescue_svc: Option<S>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::First { fut },
            ctx,
            rescue_svc,
            held: None,
            shared,
        }
    }

    /// A request whose sessions the fleet is asked about first; `svc` serves it afterwards.
    pub(crate) fn looking_up(
        lookup: Lookup,
        req: Request<B>,
        svc: S,
        ctx: RequestContext,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Lookup {
                lookup,
                req: Some(req),
                svc: Some(svc),
            },
            ctx,
            rescue_svc: None,
            held: None,
            shared,
        }
    }
}

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

struct Classified {
    verdict: Verdict,
    set_cookies: SetCookies,
    server: BackendId,
    now: Timestamp,
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

fn classify_response<RB>(shared: &Shared, ctx: &RequestContext, resp: &Response<RB>) -> Classified {
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

fn is_from_backend<RB>(shared: &Shared, resp: &Response<RB>) -> bool {
    shared.default_server != BackendId::UNKNOWN || resp.extensions().get::<ServedBy>().is_some()
}

/// Applies the exchange's store updates, then gives the client the affinity cookie of the
/// session the answer issued (or deletes it along with the session). Returns the fleet's writes
/// of the sessions the answer issued, which the answer waits for.
fn apply_updates<RB>(
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
    if let Some(a) = &shared.affinity
        && is_from_backend(shared, resp)
    {
        let directory = &*shared.directory;
        affinity_answer(a, directory, ctx, resp, c, learned.map(|(_, f, r)| (f, r)));
    }
    match writes.len() {
        0 => None,
        1 => writes.pop(),
        _ => Some(join(writes)),
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

/// Whether this reset should be replayed on the issuer, and where.
fn rescue_target(shared: &Shared, ctx: &RequestContext, c: &Classified) -> Option<BackendId> {
    let Outcome::Reset { .. } = c.verdict.outcome else {
        return None;
    };
    ctx.replay.as_ref()?;
    let record = ctx.carried.as_slice().get(c.verdict.subject?)?.record?;
    let health = shared.rescue.as_ref()?;
    let issuer = record.issuer;
    (issuer != c.server && issuer != BackendId::UNKNOWN && health.is_healthy(issuer))
        .then_some(issuer)
}

fn report<RB>(
    shared: &Shared,
    ctx: &RequestContext,
    resp: &Response<RB>,
    c: &Classified,
    rescuing: bool,
) {
    let Some(subject) = c.verdict.subject else {
        return;
    };
    let Some(carried) = ctx.carried.as_slice().get(subject) else {
        return;
    };
    let Some(record) = carried.record else {
        return;
    };
    shared.events.observed(&Observed {
        at: c.now,
        outcome: c.verdict.outcome,
        fingerprint: carried.fingerprint,
        record,
        server: c.server,
        method: &ctx.method,
        uri: &ctx.uri,
        status: resp.status(),
        request_id: ctx.request_id.as_ref(),
        rescuing,
    });
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    B: http_body::Body + Default,
{
    type Output = Result<Response<RB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Lookup { lookup, req, svc } => {
                    let found = ready!(lookup.as_mut().poll(cx));
                    take_found(this.shared, this.ctx, found);
                    let (req, svc) = (req.take(), svc.take());
                    this.state.set(State::Calling { req, svc });
                }
                StateProj::Calling { req, svc } => {
                    let (Some(inner), Some(_)) = (svc.as_mut(), req.as_ref()) else {
                        // Both are taken only on the way out of this state.
                        this.state.set(State::Done);
                        continue;
                    };
                    ready!(inner.poll_ready(cx))?;
                    let (Some(mut inner), Some(req)) = (svc.take(), req.take()) else {
                        continue;
                    };
                    let (fut, rescue_svc) = route_and_call(&mut inner, req, this.ctx, this.shared);
                    *this.rescue_svc = rescue_svc;
                    this.state.set(State::First { fut });
                }
                StateProj::First { fut } => {
                    let mut resp = ready!(fut.poll(cx))?;
                    let c = classify_response(this.shared, this.ctx, &resp);
                    let target = rescue_target(this.shared, this.ctx, &c);
                    report(this.shared, this.ctx, &resp, &c, target.is_some());
                    let Some(issuer) = target else {
                        let write = apply_updates(this.shared, this.ctx, &mut resp, &c);
                        match send_after(this.state.as_mut(), this.held, resp, write) {
                            Some(resp) => return Poll::Ready(Ok(resp)),
                            None => continue,
                        }
                    };
                    // The lost answer is held, not applied: if the replay fails, the client
                    // gets it after all and the store learns from it then.
                    let req = replay_request(this.ctx, issuer);
                    this.ctx.subject = c
                        .verdict
                        .subject
                        .and_then(|i| this.ctx.carried.as_slice().get(i))
                        .map(|carried| carried.fingerprint);
                    *this.held = Some(resp);
                    this.state.set(State::Ready {
                        req,
                        issuer,
                        server: c.server,
                    });
                }
                StateProj::Ready {
                    req,
                    issuer,
                    server,
                } => {
                    let (issuer, server) = (*issuer, *server);
                    let svc = this.rescue_svc.as_mut();
                    let ready = match (svc, req.is_some()) {
                        (Some(svc), true) => svc.poll_ready(cx),
                        _ => Poll::Ready(Ok(())),
                    };
                    match ready {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => match (this.rescue_svc.as_mut(), req.take()) {
                            (Some(svc), Some(r)) => {
                                let fut = svc.call(r);
                                this.state.set(State::Rescue {
                                    fut,
                                    issuer,
                                    server,
                                });
                            }
                            _ => match give_back(
                                this.state.as_mut(),
                                this.shared,
                                this.ctx,
                                this.held,
                            ) {
                                Poll::Ready(out) => return Poll::Ready(out),
                                Poll::Pending => continue,
                            },
                        },
                        Poll::Ready(Err(_)) => {
                            this.state.set(State::Done);
                            match give_back(this.state.as_mut(), this.shared, this.ctx, this.held) {
                                Poll::Ready(out) => return Poll::Ready(out),
                                Poll::Pending => continue,
                            }
                        }
                    }
                }
                StateProj::Rescue {
                    fut,
                    issuer,
                    server,
                } => {
                    let (issuer, server) = (*issuer, *server);
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    // An error, or an answer the proxy made itself (the issuer could not be
                    // reached): the client gets the original answer after all.
                    let mut resp = match result {
                        Ok(resp) if is_from_backend(this.shared, &resp) => resp,
                        _ => {
                            let status = this.held.as_ref().map(Response::status);
                            if let (Some(status), Some(fingerprint)) = (status, this.ctx.subject) {
                                this.shared.events.rescued(&Rescued {
                                    at: Timestamp::now(),
                                    fingerprint,
                                    from: server,
                                    to: issuer,
                                    status,
                                    still_lost: true,
                                    reached_issuer: false,
                                    method: &this.ctx.method,
                                    uri: &this.ctx.uri,
                                    request_id: this.ctx.request_id.as_ref(),
                                });
                            }
                            match give_back(this.state.as_mut(), this.shared, this.ctx, this.held) {
                                Poll::Ready(out) => return Poll::Ready(out),
                                Poll::Pending => continue,
                            }
                        }
                    };
                    let c = classify_response(this.shared, this.ctx, &resp);
                    let write = apply_updates(this.shared, this.ctx, &mut resp, &c);
                    if let Some(fingerprint) = this.ctx.subject {
                        this.shared.events.rescued(&Rescued {
                            at: c.now,
                            fingerprint,
                            from: server,
                            to: issuer,
                            status: resp.status(),
                            still_lost: matches!(c.verdict.outcome, Outcome::Reset { .. }),
                            reached_issuer: true,
                            method: &this.ctx.method,
                            uri: &this.ctx.uri,
                            request_id: this.ctx.request_id.as_ref(),
                        });
                    }
                    match send_after(this.state.as_mut(), this.held, resp, write) {
                        Some(resp) => return Poll::Ready(Ok(resp)),
                        None => continue,
                    }
                }
                StateProj::Publish { write } => {
                    ready!(write.as_mut().poll(cx));
                    this.state.set(State::Done);
                    match this.held.take() {
                        Some(resp) => return Poll::Ready(Ok(resp)),
                        // Only reachable by polling a finished future.
                        None => panic!("sessionwatch ResponseFuture polled after completion"),
                    }
                }
                StateProj::Done => {
                    // Polled after completion: the held answer, if any, is all there is.
                    match give_back(this.state.as_mut(), this.shared, this.ctx, this.held) {
                        Poll::Ready(out) => return Poll::Ready(out),
                        Poll::Pending => continue,
                    }
                }
            }
        }
    }
}

/// The answer goes now, or (when it issued a session the fleet must know first) once `write`
/// is done: then it is held and `None` comes back.
fn send_after<S, F, B, RB>(
    mut state: Pin<&mut State<S, F, B>>,
    held: &mut Option<Response<RB>>,
    resp: Response<RB>,
    write: Option<Publish>,
) -> Option<Response<RB>> {
    match write {
        None => {
            state.set(State::Done);
            Some(resp)
        }
        Some(write) => {
            *held = Some(resp);
            state.set(State::Publish { write });
            None
        }
    }
}

/// The rescue could not run: the client gets the original answer, and the store learns from it.
/// Pending when the answer waits on the fleet's write first (the state says so).
fn give_back<S, F, B, RB, E>(
    mut state: Pin<&mut State<S, F, B>>,
    shared: &Shared,
    ctx: &RequestContext,
    held: &mut Option<Response<RB>>,
) -> Poll<Result<Response<RB>, E>> {
    match held.take() {
        Some(mut resp) => {
            let c = classify_response(shared, ctx, &resp);
            let write = apply_updates(shared, ctx, &mut resp, &c);
            match send_after(state.as_mut(), held, resp, write) {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => Poll::Pending,
            }
        }
        // Only reachable by polling a finished future, which the Future contract forbids.
        None => panic!("sessionwatch ResponseFuture polled after completion"),
    }
}

fn replay_request<B: Default>(ctx: &RequestContext, issuer: BackendId) -> Option<Request<B>> {
    let parts = ctx.replay.as_ref()?;
    let mut req = Request::new(B::default());
    *req.method_mut() = ctx.method.clone();
    *req.uri_mut() = ctx.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req.extensions_mut().insert(SessionRoute {
        decision: RouteDecision::Pin(issuer),
    });
    req.extensions_mut().insert(RescueAttempt(issuer));
    Some(req)
}
