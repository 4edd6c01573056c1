//! The header fields that carry sessions and credentials, marked sensitive wherever `http`
//! types could reach a log: a sensitive value's `Debug` prints `Sensitive`, and HTTP/2 never
//! puts it in its compression tables. The plain HTTP/1.1 path formats no header at all.

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;

/// Marks `Cookie`, `Authorization` and `Proxy-Authorization` on requests and `Set-Cookie` on
/// answers (each name on both, which costs nothing where it is absent).
pub(crate) fn layer() -> SetSensitiveHeadersLayer {
    SetSensitiveHeadersLayer::new([COOKIE, SET_COOKIE, AUTHORIZATION, PROXY_AUTHORIZATION])
}
