//! The header fields that carry sessions and credentials, marked sensitive wherever `http`
//! types could reach a log: a sensitive value's `Debug` prints `Sensitive`, and HTTP/2 never
//! puts it in its compression tables. The plain HTTP/1.1 path formats no header at all.

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use tower::layer::util::Stack;
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};

/// Marks `Cookie`, `Authorization` and `Proxy-Authorization` on requests and `Set-Cookie` on
/// answers: each message is looked up only for the names it can carry.
pub(crate) fn layer() -> Stack<SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer> {
    Stack::new(
        SetSensitiveRequestHeadersLayer::new([COOKIE, AUTHORIZATION, PROXY_AUTHORIZATION]),
        SetSensitiveResponseHeadersLayer::new([SET_COOKIE]),
    )
}
