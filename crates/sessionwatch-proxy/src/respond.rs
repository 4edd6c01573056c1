//! Every way a request can fail, and the one place each becomes an HTTP answer, logged once:
//! the [`Respond`] step of the stack, for what the steps inside it return, and
//! [`ForwardError::into_response`] for what the connection loop refuses before any step runs.
//! A panic in a request's steps is caught here too, and answered 500: one request's bug never
//! takes its worker, or the other requests on it, down.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};
use metrics::Counter;
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

/// What the respond step counts: the client's faults, never the backend's.
#[derive(Debug, Clone)]
pub(crate) struct ClientFaults {
    /// Request bodies the client stopped sending.
    pub body_timeout: Counter,
    /// Request bodies that broke off or were malformed.
    pub body_invalid: Counter,
}

/// The respond step as a layer.
#[derive(Debug, Clone)]
pub(crate) struct RespondLayer {
    faults: ClientFaults,
}

impl RespondLayer {
    /// Errors become answers, client faults counted in `faults`.
    pub(crate) fn new(faults: ClientFaults) -> Self {
        Self { faults }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Respond<S> {
        Respond {
            inner,
            faults: self.faults.clone(),
        }
    }
}

/// Turns the inner steps' errors (and panics) into answers; never fails itself.
#[derive(Debug, Clone)]
pub(crate) struct Respond<S> {
    inner: S,
    faults: ClientFaults,
}

impl<S> Service<Request<RequestBody>> for Respond<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ForwardError>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The steps inside are always ready; an error here would have no request to answer.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        // Kept for the log line of a failure; a clone of a `Uri` shares its bytes.
        let uri = req.uri().clone();
        let faults = self.faults.clone();
        // A panic while the steps build the future is caught as surely as one while it runs.
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        Box::pin(async move {
            let result = match answer {
                Ok(fut) => AssertUnwindSafe(fut)
                    .catch_unwind()
                    .await
                    .unwrap_or(Err(ForwardError::Panicked)),
                Err(_) => Err(ForwardError::Panicked),
            };
            let e = match result {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            let status = e.status();
            let path = loggable_path(uri.path());
            match &e {
                ForwardError::RequestBody { timed_out } => {
                    if *timed_out {
                        faults.body_timeout.increment(1);
                    } else {
                        faults.body_invalid.increment(1);
                    }
                    tracing::debug!(%status, path, error = %e, "refused");
                }
                ForwardError::PinnedBackendDown { .. } | ForwardError::NoHealthyBackend => {
                    tracing::debug!(%status, path, error = %e, "refused");
                }
                ForwardError::Panicked => {
                    tracing::error!(%status, path, "a request's handling panicked; answered 500");
                }
                _ => tracing::warn!(%status, path, error = %error_chain(&e), "upstream failure"),
            }
            Ok(e.into_response())
        })
    }
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
