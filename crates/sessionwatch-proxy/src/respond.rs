//! Every way a request can fail, and the one place each becomes an HTTP answer, logged once:
//! the [`Respond`] step of the stack, for what the steps inside it return, and
//! [`ForwardError::into_response`] for what the connection loop refuses before any step runs.
//! A panic in a request's steps is caught here too, and answered 500: one request's bug never
//! takes its worker, or the other requests on it, down.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use sessionwatch_core::loggable_path;
use tower::{Layer, Service};

use crate::upstream::UpstreamError;
use crate::upstream::body::{RequestBody, ResponseBody};

/// The methods the proxy forwards, for the `Allow` of a 405 (RFC 9110 15.5.6).
const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE";

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// Every backend is down.
    #[error("no healthy backend")]
    NoHealthyBackend,
    /// The session is pinned to a backend that is down and the policy is `fail`.
    #[error("the pinned backend {backend} is unhealthy")]
    PinnedBackendDown {
        /// The backend's name.
        backend: String,
        /// What to put in `Retry-After`.
        retry_after: Duration,
    },
    /// The backend refused or did not accept the connection in time.
    #[error("cannot connect to backend {backend}")]
    Connect {
        /// The backend's name.
        backend: String,
        /// The underlying error.
        #[source]
        source: UpstreamError,
    },
    /// The backend did not send a response head in time.
    #[error("backend {backend} did not answer within {timeout:?}")]
    Timeout {
        /// The backend's name.
        backend: String,
        /// The configured response timeout.
        timeout: Duration,
    },
    /// The exchange with the backend failed after connecting.
    #[error("backend {backend} failed")]
    Upstream {
        /// The backend's name.
        backend: String,
        /// The underlying error.
        #[source]
        source: UpstreamError,
    },
    /// The client's body, to be read whole before forwarding, failed or was not all sent within
    /// the response timeout.
    #[error("the request body could not be read")]
    RequestBody {
        /// Whether the client was too slow (rather than gone or malformed).
        timed_out: bool,
    },
    /// The request could not be turned into an upstream request.
    #[error("cannot forward this request: {0}")]
    BadRequest(&'static str),
    /// A method the proxy never forwards (`CONNECT`: a reverse proxy opens no tunnels).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The proxy ran out of its own resources (file descriptors, local ports) to reach a backend.
    #[error("out of local resources for an upstream connection")]
    Overloaded(#[source] UpstreamError),
    /// A step of the request's handling panicked.
    #[error("the request's handling panicked")]
    Panicked,
    /// The request head is larger than `listen.max_header_bytes`.
    #[error("the request head is too large")]
    HeadTooLarge,
}

impl ForwardError {
    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ForwardError::NoHealthyBackend
            | ForwardError::PinnedBackendDown { .. }
            | ForwardError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Connect { .. } | ForwardError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::RequestBody { timed_out: true } => StatusCode::REQUEST_TIMEOUT,
            ForwardError::RequestBody { timed_out: false } | ForwardError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ForwardError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ForwardError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ForwardError::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the client broke the protocol or stalled: the connection is closed after the
    /// answer, since what the client sends next cannot be trusted to be framed right.
    pub(crate) fn is_client_fault(&self) -> bool {
        matches!(
            self,
            ForwardError::RequestBody { .. }
                | ForwardError::BadRequest(_)
                | ForwardError::MethodNotAllowed
                | ForwardError::HeadTooLarge
        )
    }

    /// The answer for the client: the status, a short body, and `Retry-After` where a retry makes
    /// sense. Backend names and error details stay in the proxy's log.
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let text = match &self {
            ForwardError::NoHealthyBackend => "no healthy backend\n",
            ForwardError::Overloaded(_) => "service unavailable\n",
            ForwardError::PinnedBackendDown { .. } => {
                "the server holding your session is unavailable; retry shortly\n"
            }
            ForwardError::Connect { .. } | ForwardError::Upstream { .. } => "bad gateway\n",
            ForwardError::Timeout { .. } => "gateway timeout\n",
            ForwardError::RequestBody { timed_out: true } => "request timeout\n",
            ForwardError::RequestBody { timed_out: false } | ForwardError::BadRequest(_) => {
                "bad request\n"
            }
            ForwardError::MethodNotAllowed => "method not allowed\n",
            ForwardError::HeadTooLarge => "request header fields too large\n",
            ForwardError::Panicked => "internal server error\n",
        };
        let mut resp = Response::new(ResponseBody::full(text));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let retry = match &self {
            ForwardError::PinnedBackendDown { retry_after, .. } => {
                Some(retry_after.as_secs().max(1))
            }
            ForwardError::NoHealthyBackend | ForwardError::Overloaded(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ForwardError::MethodNotAllowed) {
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(ALLOWED));
        }
        if self.is_client_fault() {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The respond step as a layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct RespondLayer;

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Respond<S> {
        Respond { inner }
    }
}

/// Turns the inner steps' errors (and panics) into answers; never fails itself.
#[derive(Debug, Clone)]
pub(crate) struct Respond<S> {
    inner: S,
}

impl<S> Respond<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ForwardError>
        + Clone,
{
    /// The answer to `req`: the steps inside are called when the future is first polled, so
    /// that a panic while they build their future is caught with the rest, and the steps'
    /// future is built in its place rather than moved there.
    pub(crate) fn respond(&self, req: Request<RequestBody>) -> RespondFuture<S> {
        self.respond_for(req, None)
    }

    /// [`respond`](Self::respond), with the client a failure's log line names.
    pub(crate) fn respond_for(
        &self,
        req: Request<RequestBody>,
        client: Option<IpAddr>,
    ) -> RespondFuture<S> {
        RespondFuture {
            // Kept for the log line of a failure; a clone of a `Uri` shares its bytes.
            uri: req.uri().clone(),
            client,
            state: State::Waiting {
                svc: self.inner.clone(),
                req: Some(req),
            },
        }
    }
}

impl<S> Service<Request<RequestBody>> for Respond<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ForwardError>
        + Clone,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = RespondFuture<S>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each answer calls its own clone of the steps inside, when it is polled.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        self.respond(req)
    }
}

pin_project! {
    /// The answer of the steps inside, or the one their error or panic stands for.
    pub(crate) struct RespondFuture<S: Service<Request<RequestBody>>> {
        #[pin]
        state: State<S>,
        uri: Uri,
        client: Option<IpAddr>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<RequestBody>>> {
        Waiting { svc: S, req: Option<Request<RequestBody>> },
        Called { #[pin] fut: S::Future },
    }
}

impl<S> Future for RespondFuture<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ForwardError>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The answer is written where it will be returned from, not passed back through the
        // unwind guard: an answer is a few hundred bytes, and this runs for every request.
        let mut answered = None;
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            loop {
                match this.state.as_mut().project() {
                    StateProj::Waiting { svc, req } => {
                        if svc.poll_ready(cx)?.is_pending() {
                            return Ok(false);
                        }
                        let Some(req) = req.take() else {
                            return Err(ForwardError::Panicked);
                        };
                        let fut = svc.call(req);
                        this.state.set(State::Called { fut });
                    }
                    StateProj::Called { fut } => {
                        return match fut.poll(cx) {
                            Poll::Pending => Ok(false),
                            Poll::Ready(Ok(resp)) => {
                                answered = Some(resp);
                                Ok(true)
                            }
                            Poll::Ready(Err(e)) => Err(e),
                        };
                    }
                }
            }
        }));
        let result = match (polled, answered) {
            (Ok(Ok(true)), Some(resp)) => Ok(resp),
            (Ok(Ok(false)), _) => return Poll::Pending,
            (Ok(Err(e)), _) => Err(e),
            (Ok(Ok(true)), None) | (Err(_), _) => Err(ForwardError::Panicked),
        };
        Poll::Ready(Ok(match result {
            Ok(resp) => resp,
            Err(e) => answer(e, this.uri, *this.client),
        }))
    }
}

/// The answer for `e`, logged once.
fn answer(e: ForwardError, uri: &Uri, client: Option<IpAddr>) -> Response<ResponseBody> {
    let status = e.status();
    let path = loggable_path(uri.path());
    let client = client.map(tracing::field::display);
    match &e {
        ForwardError::RequestBody { .. }
        | ForwardError::PinnedBackendDown { .. }
        | ForwardError::NoHealthyBackend => {
            tracing::debug!(client, %status, path, error = %e, "refused");
        }
        ForwardError::Panicked => {
            tracing::error!(client, %status, path, "a request's handling panicked; answered 500");
        }
        _ => tracing::warn!(client, %status, path, error = %error_chain(&e), "upstream failure"),
    }
    e.into_response()
}

/// `e` and its sources, one after another.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;
    use tower::util::BoxCloneService;

    use super::*;

    /// The steps below respond, with a bug: they panic for `/now` while making the future and
    /// for `/later` while it runs; anything else is answered 200.
    fn buggy() -> BoxCloneService<Request<RequestBody>, Response<ResponseBody>, ForwardError> {
        BoxCloneService::new(tower::service_fn(|req: Request<RequestBody>| {
            assert_ne!(req.uri().path(), "/now", "a bug while building the future");
            async move {
                assert_ne!(req.uri().path(), "/later", "a bug while it runs");
                Ok(Response::new(ResponseBody::full("fine")))
            }
        }))
    }

    fn get(path: &str) -> Request<RequestBody> {
        Request::get(path).body(RequestBody::Empty).unwrap()
    }

    #[tokio::test]
    async fn a_panic_in_a_request_is_answered_500_and_the_next_one_is_served() {
        let svc = RespondLayer.layer(buggy());
        for path in ["/now", "/later"] {
            let resp = svc.clone().oneshot(get(path)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        }
        let resp = svc.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
