//! The service: reads the request side, hands the rest to [`crate::ResponseFuture`].

use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use arc_swap::cache::Cache;

use http::{Request, Response};
use sessionwatch_core::{
    AffinityRejection, Carried, Fingerprint, MAX_COOKIES, Timestamp, read_cookie,
    read_request_cookies, strip_cookie,
};
use tower::Service;

use crate::future::ResponseFuture;
use crate::request::{CarriedSet, RequestContext, route_and_call};
use crate::shared::AffinityCookie;
use crate::shared::Shared;
use crate::{AffinityUse, Lookup};

/// See [`crate::SessionLayer`].
pub struct SessionService<S> {
    inner: S,
    /// The layer's settings as they are now: a [`crate::SessionLayer::reconfigure`] is seen by
    /// the next request, and checking for one costs a request one atomic load.
    shared: Cache<Arc<ArcSwap<Shared>>, Arc<Shared>>,
}

impl<S: Clone> Clone for SessionService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, shared: Arc<ArcSwap<Shared>>) -> Self {
        Self {
            inner,
            shared: Cache::new(shared),
        }
    }
}

/// The header that carries a request's id; the layer puts it in what it reports.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

impl<S, B, RB> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    B: http_body::Body + Default,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // One request sees one version of the settings, from its head to its answer.
        let current = self.shared.load().clone();
        let shared = &current;
        // The proxy's own cookie is read, then taken out of what the backend sees.
        let affinity_value = shared.affinity.as_ref().and_then(|a| {
            let value = read_cookie(req.headers(), &a.name).map(<[u8]>::to_vec);
            strip_cookie(req.headers_mut(), &a.name);
            value
        });
        let mut carried = CarriedSet::new();
        read_request_cookies(
            req.headers(),
            &shared.profile,
            &shared.fingerprinter,
            |cookie, fingerprint| {
                carried.push(Carried {
                    cookie,
                    fingerprint,
                    record: shared.store.get(fingerprint),
                });
            },
        );
        // The cookie answers before the fleet is asked: it costs no round trip.
        let affinity_valid = match (&shared.affinity, &affinity_value) {
            (Some(a), Some(value)) => adopt(shared, a, value, &mut carried),
            _ => None,
        };
        let mut ctx = RequestContext {
            carried,
            method: req.method().clone(),
            uri: req.uri().clone(),
            request_id: req.headers().get(X_REQUEST_ID).cloned(),
            replay: None,
            subject: None,
            affinity_seen: affinity_value.is_some(),
            affinity_valid,
            fleet_waited_out: false,
        };
        if let Some(lookup) = ask_fleet(shared, &ctx.carried) {
            // Classified and routed once the fleet has answered, on a clone made ready then.
            return ResponseFuture::looking_up(lookup, req, self.inner.clone(), ctx, current);
        }
        let (fut, rescue_svc) = route_and_call(&mut self.inner, req, &mut ctx, shared);
        ResponseFuture::new(fut, ctx, rescue_svc, current)
    }
}

/// Asks the fleet for the carried sessions the near cache misses, if any.
fn ask_fleet(shared: &Shared, carried: &CarriedSet) -> Option<Lookup> {
    let fleet = shared.fleet.as_ref()?;
    let mut misses = [Fingerprint(0); MAX_COOKIES];
    let mut n = 0;
    for c in carried.as_slice().iter().filter(|c| c.record.is_none()) {
        if let Some(slot) = misses.get_mut(n) {
            *slot = c.fingerprint;
            n += 1;
        }
    }
    if n == 0 {
        return None;
    }
    fleet.lookup(&misses[..n])
}

/// Takes the record of a carried session the table misses from a valid affinity cookie, and
/// remembers it, as the replica that minted the cookie learned it from the backend's
/// `Set-Cookie`. An invalid cookie changes nothing; either way the use is reported (for a
/// session the table knows, the cookie is only checked, to tell when to refresh it). Returns the
/// session the cookie is valid for, and when it was minted.
fn adopt(
    shared: &Shared,
    a: &AffinityCookie,
    value: &[u8],
    carried: &mut CarriedSet,
) -> Option<(Fingerprint, Timestamp)> {
    let now = Timestamp::now();
    let mut rejection = None;
    for c in carried.as_mut_slice() {
        let verified = a.key.verify(value, c.fingerprint, now, a.max_age);
        if c.record.is_some() {
            if let Ok(affinity) = verified {
                return Some((c.fingerprint, affinity.minted_at));
            }
            continue;
        }
        match verified {
            Ok(affinity) => {
                // Another replica's backend this one has not resolved yet: the session stays
                // unknown here (no verdict, no pin) rather than be put on the wrong backend.
                let Some(issuer) = shared.directory.resolve(affinity.issuer_tag) else {
                    shared.events.affinity(AffinityUse::Unresolved);
                    return None;
                };
                let record = affinity.record(issuer);
                shared.store.put(c.fingerprint, record);
                c.record = Some(record);
                shared.events.affinity(AffinityUse::Adopted);
                return Some((c.fingerprint, affinity.minted_at));
            }
            // An authentic but stale cookie says more than a tag that fails for another cookie.
            Err(e) if rejection != Some(AffinityRejection::Stale) => rejection = Some(e),
            Err(_) => {}
        }
    }
    if let Some(e) = rejection {
        shared.events.affinity(AffinityUse::Rejected(e));
    }
    None
}
