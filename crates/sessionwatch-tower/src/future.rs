//! The response side: classify, update the store, report, and maybe rescue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use sessionwatch_core::{BackendId, Outcome, RouteDecision, Timestamp};
use tower::Service;

use crate::answer::{Classified, apply_updates, classify_response, is_from_backend};
use crate::request::{RequestContext, route_and_call, take_found};
use crate::shared::Shared;
use crate::{Lookup, Observed, Publish, RescueAttempt, Rescued, SessionRoute};

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
