//! What the layer knows of a request between its two sides: the sessions it carried, with
//! their records (from the near cache, the affinity cookie or the fleet's store), and what a
//! rescue replay needs; and the step both sides take to route and send it on.

use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use sessionwatch_core::{
    Carried, CookieId, Fingerprint, MAX_COOKIES, SessionRecord, Timestamp, route,
};
use tower::Service;

use crate::shared::{Shared, pinning_all};
use crate::{Found, SessionRoute};

/// The carried session cookies of one request, inline: at most one per configured cookie.
#[derive(Clone, Copy)]
pub(crate) struct CarriedSet {
    items: [Carried; MAX_COOKIES],
    len: usize,
}

impl CarriedSet {
    const EMPTY: Carried = Carried {
        cookie: CookieId(0),
        fingerprint: Fingerprint(0),
        record: None,
    };

    pub(crate) fn new() -> Self {
        Self {
            items: [Self::EMPTY; MAX_COOKIES],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, c: Carried) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[Carried] {
        &self.items[..self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [Carried] {
        &mut self.items[..self.len]
    }
}

/// What the replay of a rescued request needs from the original.
pub(crate) struct ReplayParts {
    pub(crate) headers: HeaderMap,
    pub(crate) version: Version,
    /// The original's extensions (the client's address among them), for the replay.
    pub(crate) extensions: http::Extensions,
}

/// What the response side needs to know about the request.
pub(crate) struct RequestContext {
    pub(crate) carried: CarriedSet,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) replay: Option<ReplayParts>,
    /// The session a rescue is about, once one starts.
    pub(crate) subject: Option<sessionwatch_core::Fingerprint>,
    /// Whether the request carried the proxy's affinity cookie.
    pub(crate) affinity_seen: bool,
    /// The session that cookie is valid for, and when it was minted.
    pub(crate) affinity_valid: Option<(Fingerprint, Timestamp)>,
    /// The fleet's store did not answer this request's lookup in time: it waits no more.
    pub(crate) fleet_waited_out: bool,
}

/// Takes what the fleet knows into the request's carried sessions and the near cache. The
/// client presents these sessions now, so the records say `presented`.
pub(crate) fn take_found(shared: &Shared, ctx: &mut RequestContext, found: Found) {
    ctx.fleet_waited_out = found.waited_out;
    let carried = &mut ctx.carried;
    for (fingerprint, record) in found.records {
        let record = SessionRecord {
            presented: true,
            ..record
        };
        for c in carried.as_mut_slice() {
            if c.fingerprint == fingerprint && c.record.is_none() {
                c.record = Some(record);
                shared.store.put(fingerprint, record);
            }
        }
    }
}

/// Routes the request by what is known of its sessions and calls `inner`, which must be ready.
/// Returns the call's future and, when the request may be rescued, a clone of `inner` for the
/// replay.
pub(crate) fn route_and_call<S, B>(
    inner: &mut S,
    mut req: Request<B>,
    ctx: &mut RequestContext,
    shared: &Shared,
) -> (S::Future, Option<S>)
where
    S: Service<Request<B>> + Clone,
    B: http_body::Body,
{
    let first_known = ctx.carried.as_slice().iter().find_map(|c| c.record);
    let decision = route(shared.policy, first_known.as_ref(), pinning_all(shared));
    req.extensions_mut().insert(SessionRoute { decision });
    ctx.replay = match (&shared.rescue, first_known) {
        (Some(_), Some(_)) if is_replayable(&req) => Some(ReplayParts {
            headers: req.headers().clone(),
            version: req.version(),
            extensions: req.extensions().clone(),
        }),
        _ => None,
    };
    // The clone serves the replay; `ServiceExt::ready` is polled on it before use.
    let rescue_svc = ctx.replay.as_ref().map(|_| inner.clone());
    (inner.call(req), rescue_svc)
}

/// Only a GET or HEAD without a body may be sent twice: replaying anything else could repeat a
/// side effect, and a streamed body cannot be read twice. A protocol upgrade is not replayed
/// either: the client's side of the switch belongs to the first attempt.
fn is_replayable<B: http_body::Body>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.body().is_end_stream()
        && !req.headers().contains_key(http::header::UPGRADE)
}
