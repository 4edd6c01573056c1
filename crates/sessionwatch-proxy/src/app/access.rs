//! The access log (`[log] access = true`): one event a request, on target
//! `sessionwatch::access`, written wherever the process's log lines go (as JSON with
//! `--log-format json`). Off by default: a busy proxy would write a line per request.
//!
//! What it says is chosen so that nothing secret reaches it: the path without its query or its
//! `;` parameters (where `;jsessionid=` puts a raw session id), the status, the backend's name,
//! the time to the answer's head, the request id, and the session's short fingerprint (never its
//! value: the session layer marks the answer with it, see [`SessionSeen`]).

use std::future::Future;
use std::sync::Arc;

use futures_util::future::Either;
use http::{Request, Response};
use sessionwatch_tower::{ServedBy, SessionSeen};
use tokio::time::Instant;

use crate::backends::Backends;
use crate::listen::Handler;
use crate::prepare::X_REQUEST_ID;
use crate::upstream::body::{RequestBody, ResponseBody};

/// `inner`, with an access line for each of its requests when `on`.
pub(crate) struct AccessLogged<H> {
    pub(crate) inner: H,
    pub(crate) on: Option<Arc<Backends>>,
}

/// The part of a request target that may be logged.
fn loggable_path(target: &str) -> &str {
    let end = target.find(['?', ';', '#']).unwrap_or(target.len());
    &target[..end]
}

impl<H: Handler> Handler for AccessLogged<H> {
    fn handle(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static + use<H> {
        let Some(backends) = self.on.clone() else {
            return Either::Left(self.inner.handle(req));
        };
        let method = req.method().clone();
        let path = loggable_path(req.uri().path()).to_owned();
        let started = Instant::now();
        let answer = self.inner.handle(req);
        Either::Right(async move {
            let resp = answer.await;
            let backend = resp
                .extensions()
                .get::<ServedBy>()
                .map(|ServedBy(id)| backends.name(*id).to_owned());
            let id = resp
                .headers()
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok());
            let session = resp
                .extensions()
                .get::<SessionSeen>()
                .map(|SessionSeen(short)| short.to_string());
            tracing::info!(
                target: "sessionwatch::access",
                method = method.as_str(),
                path = path.as_str(),
                status = resp.status().as_u16(),
                backend = backend.as_deref().unwrap_or("-"),
                duration_ms = started.elapsed().as_secs_f64() * 1e3,
                request_id = id.unwrap_or("-"),
                session = session.as_deref().unwrap_or("-"),
                "access"
            );
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn neither_query_nor_path_parameters_are_logged() {
        assert_eq!(loggable_path("/cart"), "/cart");
        assert_eq!(loggable_path("/login?token=abc"), "/login");
        assert_eq!(
            loggable_path("/app;jsessionid=0123456789ABCDEF?x=1"),
            "/app"
        );
    }
}
