//! A simulated browser for one user: keeps the session cookie the way a browser would and talks
//! to one base address, normally the proxy under test.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::body::BoxError;

/// Every request, body included, must finish within this or counts as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/1.1 keep-alive client that simulated users share, so a thousand users do not mean a
/// thousand connection pools.
pub type SharedClient = Client<HttpConnector, Full<Bytes>>;

/// A new [`SharedClient`]; clone it (cheap) into every [`UserClient`].
pub fn shared_client() -> SharedClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Why a simulated request did not produce an answer.
#[derive(Debug)]
pub struct DriveError {
    kind: Kind,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Timeout,
    Transport,
    InvalidRequest,
    Status(StatusCode),
}

impl DriveError {
    fn new(kind: Kind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    fn status(status: StatusCode) -> Self {
        Self {
            kind: Kind::Status(status),
            source: None,
        }
    }

    /// The request did not finish within [`REQUEST_TIMEOUT`].
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// Connecting, sending or reading the response failed.
    pub fn is_transport(&self) -> bool {
        self.kind == Kind::Transport
    }

    /// The request could not be built (a path that is not a valid URI).
    pub fn is_invalid_request(&self) -> bool {
        self.kind == Kind::InvalidRequest
    }

    /// The status of an answer that made no sense for the call: a login without a session cookie,
    /// or a `5xx`.
    pub fn unexpected_status(&self) -> Option<StatusCode> {
        match self.kind {
            Kind::Status(status) => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Timeout => write!(f, "request timed out after {REQUEST_TIMEOUT:?}"),
            Kind::Transport => f.write_str("request failed in transport"),
            Kind::InvalidRequest => f.write_str("request could not be built"),
            Kind::Status(status) => write!(f, "unexpected response status {status}"),
        }
    }
}

impl std::error::Error for DriveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What `GET /me` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeOutcome {
    /// `200`: the session is known and logged in.
    LoggedIn,
    /// Anything else below `500`: redirected to login, `401`, and so on.
    LoggedOut {
        /// The response status.
        status: u16,
    },
}

/// A response as the caller sees it.
pub type Reply = (StatusCode, HeaderMap, Bytes);

/// A cookie-keeping HTTP client for one simulated user.
#[derive(Debug, Clone)]
pub struct UserClient {
    client: SharedClient,
    target: SocketAddr,
    cookie_name: String,
    user: String,
    cookie: Option<String>,
    seen: Vec<String>,
}

impl UserClient {
    /// A user named `user` talking to `target` with its own connection pool.
    pub fn new(target: SocketAddr, cookie_name: &str) -> Self {
        Self::with_client(shared_client(), target, cookie_name)
    }

    /// A user named `user` talking to `target` through a shared client.
    pub fn with_client(client: SharedClient, target: SocketAddr, cookie_name: &str) -> Self {
        Self {
            client,
            target,
            cookie_name: cookie_name.to_owned(),
            user: "user".to_owned(),
            cookie: None,
            seen: Vec::new(),
        }
    }

    /// Sets the name sent on login (and answered by `GET /me`).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// The user name sent on login.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The address every request goes to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The current raw session cookie value.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// Replaces the session cookie, as a test that replays or forges one would.
    pub fn set_cookie(&mut self, value: Option<String>) {
        match value {
            Some(value) => self.remember(value),
            None => self.cookie = None,
        }
    }

    /// Every session value this user has held, oldest first, without repeats.
    pub fn all_cookie_values(&self) -> &[String] {
        &self.seen
    }

    /// `POST /login` with `user=<name>`; succeeds once the answer sets a session cookie.
    pub async fn login(&mut self) -> Result<(), DriveError> {
        let form = format!("user={}", utf8_percent_encode(&self.user, NON_ALPHANUMERIC));
        let form_type = Some("application/x-www-form-urlencoded");
        let (status, headers, _) = self
            .send(Method::POST, "/login", Bytes::from(form), form_type)
            .await?;
        if status.is_server_error() || !self.apply_set_cookies(&headers) {
            return Err(DriveError::status(status));
        }
        Ok(())
    }

    /// `GET /me`. A `5xx` is an error, not a logout: the proxy or farm failed, the session did not.
    pub async fn me(&mut self) -> Result<MeOutcome, DriveError> {
        let (status, _, _) = self.get("/me").await?;
        if status.is_server_error() {
            return Err(DriveError::status(status));
        }
        Ok(if status == StatusCode::OK {
            MeOutcome::LoggedIn
        } else {
            MeOutcome::LoggedOut {
                status: status.as_u16(),
            }
        })
    }

    /// `GET /logout`; the answer's expired cookie removes ours.
    pub async fn logout(&mut self) -> Result<(), DriveError> {
        let (status, _, _) = self.get("/logout").await?;
        if status.is_server_error() {
            return Err(DriveError::status(status));
        }
        Ok(())
    }

    /// `GET path` (path and query, starting with `/`), applying any `Set-Cookie`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, DriveError> {
        let reply = self.send(Method::GET, path, Bytes::new(), None).await?;
        self.apply_set_cookies(&reply.1);
        Ok(reply)
    }

    /// `POST path` with `body`, applying any `Set-Cookie`.
    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Result<Reply, DriveError> {
        let reply = self.send(Method::POST, path, body.into(), None).await?;
        self.apply_set_cookies(&reply.1);
        Ok(reply)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: Option<&'static str>,
    ) -> Result<Reply, DriveError> {
        let uri: Uri = format!("http://{}{}", self.target, path)
            .parse()
            .map_err(|e| DriveError::new(Kind::InvalidRequest, e))?;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(value) = &self.cookie {
            builder = builder.header(COOKIE, format!("{}={value}", self.cookie_name));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        let req = builder
            .body(Full::new(body))
            .map_err(|e| DriveError::new(Kind::InvalidRequest, e))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| DriveError::new(Kind::Transport, e))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| DriveError::new(Kind::Transport, e))?;
            Ok((parts.status, parts.headers, body.to_bytes()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|e| DriveError::new(Kind::Timeout, e))?
    }

    /// Applies our cookie's `Set-Cookie` lines; true when one of them set a new value.
    fn apply_set_cookies(&mut self, headers: &HeaderMap) -> bool {
        let mut set = false;
        for line in headers.get_all(SET_COOKIE) {
            let Ok(line) = line.to_str() else { continue };
            let mut parts = line.split(';');
            let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
                continue;
            };
            if name.trim() != self.cookie_name {
                continue;
            }
            let value = value.trim().trim_matches('"');
            if value.is_empty() || parts.any(is_expiry) {
                self.cookie = None;
            } else {
                self.remember(value.to_owned());
                set = true;
            }
        }
        set
    }

    fn remember(&mut self, value: String) {
        if !self.seen.contains(&value) {
            self.seen.push(value.clone());
        }
        self.cookie = Some(value);
    }
}

/// An attribute that deletes the cookie: `Max-Age` of zero or less, or an `Expires` in 1970 (the
/// only past date the farm, and the frameworks it imitates, send).
fn is_expiry(attr: &str) -> bool {
    let (key, value) = attr.split_once('=').unwrap_or((attr, ""));
    let key = key.trim();
    if key.eq_ignore_ascii_case("max-age") {
        value.trim().parse::<i64>().is_ok_and(|age| age <= 0)
    } else if key.eq_ignore_ascii_case("expires") {
        value.contains("1970")
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn user() -> UserClient {
        UserClient::new(SocketAddr::from(([127, 0, 0, 1], 1)), "SID")
    }

    fn set_cookie(line: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static(line));
        headers
    }

    #[tokio::test]
    async fn set_cookie_replaces_and_deletes() {
        let mut u = user();
        assert!(u.apply_set_cookies(&set_cookie("SID=one; Path=/; HttpOnly")));
        assert_eq!(u.cookie(), Some("one"));
        assert!(!u.apply_set_cookies(&set_cookie("OTHER=x")));
        assert!(u.apply_set_cookies(&set_cookie("SID=two")));
        assert_eq!(u.cookie(), Some("two"));
        u.apply_set_cookies(&set_cookie(
            "SID=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/",
        ));
        assert_eq!(u.cookie(), None);
        u.set_cookie(Some("three".into()));
        u.apply_set_cookies(&set_cookie("SID=deleted; Max-Age=0; Path=/"));
        assert_eq!(u.cookie(), None);
        assert_eq!(u.all_cookie_values(), ["one", "two", "three"]);
    }
}
