//! Every way forwarding can fail, and the one place each becomes an HTTP answer.

use std::time::Duration;

use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// The methods the proxy forwards, for the `Allow` of a 405 (RFC 9110 15.5.6).
const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE";

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
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
        source: crate::upstream::UpstreamError,
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
        source: crate::upstream::UpstreamError,
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
    Overloaded,
    /// The request head is larger than `listen.max_header_bytes`.
    #[error("the request head is too large")]
    HeadTooLarge,
}

impl ForwardError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::NoHealthyBackend
            | ForwardError::PinnedBackendDown { .. }
            | ForwardError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Connect { .. } | ForwardError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::RequestBody { timed_out: true } => StatusCode::REQUEST_TIMEOUT,
            ForwardError::RequestBody { timed_out: false } | ForwardError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ForwardError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ForwardError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// Whether the client broke the protocol or stalled: the connection is closed after the
    /// answer, since what the client sends next cannot be trusted to be framed right.
    pub fn is_client_fault(&self) -> bool {
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
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let text = match &self {
            ForwardError::NoHealthyBackend => "no healthy backend\n",
            ForwardError::Overloaded => "service unavailable\n",
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
            ForwardError::NoHealthyBackend | ForwardError::Overloaded => Some(1),
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
