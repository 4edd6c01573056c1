//! The probe's HTTP client: one request on a connection of its own to one target (a backend
//! or the front door), its answer read with a bounded body, and the cookie jar a browser would
//! keep. A new connection per request, so that no answer can be read on another's connection
//! and each backend is asked exactly what the probe means to ask it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sessionwatch_core::BackendId;

use crate::upstream::{ConnectError, TlsTarget, connect};

/// The most of an answer's body kept (a login form, a page); the rest is not read.
const BODY_LIMIT: usize = 256 * 1024;

/// Where the probe sends requests.
#[derive(Clone)]
pub(crate) struct Target {
    /// The backend's name (or the front door's URL), for the report.
    pub(crate) name: String,
    /// Its position in the probe's list: the issuer and server ids the core rules take
    /// ([`BackendId::UNKNOWN`] for the front door, where the server cannot be told).
    pub(crate) id: BackendId,
    /// `host:port`.
    pub(crate) authority: Authority,
    /// Put before every path (a front door reached under a path prefix); empty for a backend.
    pub(crate) prefix: String,
    /// TLS settings for an `https://` target.
    pub(crate) tls: Option<Arc<TlsTarget>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No TCP connection.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// Where.
        authority: Authority,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("the TLS handshake with {authority} failed: {source}")]
    Handshake {
        /// Where.
        authority: Authority,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange on the connection failed (closed early, not HTTP).
    #[error("no answer from {authority}: {why}")]
    Exchange {
        /// Where.
        authority: Authority,
        /// What hyper said.
        why: String,
    },
    /// The request could not be built (a header value a variable gave is not valid in a
    /// header).
    #[error("the request cannot be sent: {0}")]
    Request(String),
}

/// One answer: its head, and its body up to [`BODY_LIMIT`].
#[derive(Debug)]
pub(crate) struct Answer {
    /// Its status.
    pub(crate) status: StatusCode,
    /// Its fields.
    pub(crate) headers: HeaderMap,
    /// Its body, cut at [`BODY_LIMIT`]; what could be read when it broke off.
    pub(crate) body: Bytes,
}

impl Answer {
    /// The `Location` as text, if any.
    pub(crate) fn location(&self) -> Option<&str> {
        self.headers
            .get(LOCATION)
            .and_then(|l| std::str::from_utf8(l.as_bytes()).ok())
    }
}

/// The cookies a browser would send back: name and value, in the order first set.
#[derive(Clone, Default)]
pub(crate) struct Jar(Vec<(String, String)>);

impl std::fmt::Debug for Jar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the values are session ids.
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Jar {
    /// Takes every `Set-Cookie` of `headers`: a value set or replaced, or deleted (an empty
    /// value, or `Max-Age` of zero or less).
    pub(crate) fn take(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                continue;
            };
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (name, value) = (
                name.trim_matches([' ', '\t']),
                value.trim_matches([' ', '\t']),
            );
            if name.is_empty() {
                continue;
            }
            let expired = parts.any(|attr| {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                k.trim().eq_ignore_ascii_case("max-age")
                    && v.trim().parse::<i64>().is_ok_and(|age| age <= 0)
            });
            self.0.retain(|(n, _)| n != name);
            if !expired && !value.is_empty() && value != "\"\"" {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    /// The value of cookie `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets cookie `name` to `value` (a renewal the probe keeps).
    pub(crate) fn set(&mut self, name: &str, value: &str) {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_owned(), value.to_owned()));
    }

    /// The `Cookie` header, if any cookie is held.
    fn header(&self) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let text: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        HeaderValue::from_str(&text.join("; ")).ok()
    }
}

/// One request the probe sends.
pub(crate) struct Outgoing {
    /// Its method.
    pub(crate) method: Method,
    /// Its path and query, from the target's root.
    pub(crate) path: String,
    /// Its fields besides `Host`, `Cookie` and `Content-Type`.
    pub(crate) headers: Vec<(http::HeaderName, HeaderValue)>,
    /// An urlencoded form, when it has one.
    pub(crate) form: Option<String>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Field names only: a form or a header may carry a password or a token.
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("form", &self.form.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Sends `out` to `target` with `jar`'s cookies and reads the answer. The caller bounds it in
/// time (the whole run's timeout).
pub(crate) async fn send(target: &Target, out: &Outgoing, jar: &Jar) -> Result<Answer, SendError> {
    let authority = target.authority.clone();
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority
        .port_u16()
        .unwrap_or(if target.tls.is_some() { 443 } else { 80 });
    let mut req = Request::builder()
        .method(out.method.clone())
        .uri(format!("{}{}", target.prefix, out.path))
        .header(HOST, authority.as_str())
        .header(CONNECTION, "close");
    for (name, value) in &out.headers {
        req = req.header(name, value);
    }
    if let Some(cookie) = jar.header() {
        req = req.header(COOKIE, cookie);
    }
    let body = match &out.form {
        Some(form) => {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
            Bytes::from(form.clone())
        }
        None => Bytes::new(),
    };
    let req = req
        .body(Full::new(body))
        .map_err(|e| SendError::Request(e.to_string()))?;
    let stream = connect(host, port, target.tls.as_ref())
        .await
        .map_err(|e| match e {
            ConnectError::Tcp(source) => SendError::Connect {
                authority: authority.clone(),
                source,
            },
            ConnectError::Tls(source) => SendError::Handshake {
                authority: authority.clone(),
                source,
            },
        })?;
    let exchange_error = |why: String| SendError::Exchange {
        authority: authority.clone(),
        why,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| exchange_error(e.to_string()))?;
    // The connection is driven beside the exchange and dropped with it: one request each.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| exchange_error(e.to_string()))?;
        let (parts, mut body) = resp.into_parts();
        let mut read = Vec::new();
        while read.len() < BODY_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = BODY_LIMIT - read.len();
                        read.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                // A body that breaks off still leaves its head to judge.
                Some(Err(_)) | None => break,
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(read),
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(set_cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in set_cookies {
            h.append(SET_COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn the_jar_keeps_sets_replaces_and_deletes_as_a_browser_does() {
        let mut jar = Jar::default();
        jar.take(&headers(&[
            "csrftoken=abc; Path=/; SameSite=Lax",
            "sessionid=s1; HttpOnly",
            "junk",
            "=nameless",
        ]));
        assert_eq!(jar.get("csrftoken"), Some("abc"));
        assert_eq!(jar.get("sessionid"), Some("s1"));
        assert_eq!(jar.header().unwrap(), "csrftoken=abc; sessionid=s1");
        jar.take(&headers(&["sessionid=s2"]));
        assert_eq!(jar.get("sessionid"), Some("s2"));
        jar.take(&headers(&[
            "sessionid=\"\"; Max-Age=0",
            "csrftoken=x; max-age=-1",
        ]));
        assert_eq!(jar.get("sessionid"), None);
        assert_eq!(jar.get("csrftoken"), None);
        assert!(jar.header().is_none());
        let mut jar = Jar::default();
        jar.set("sessionid", "secret-value");
        assert!(!format!("{jar:?}").contains("secret-value"));
    }
}
