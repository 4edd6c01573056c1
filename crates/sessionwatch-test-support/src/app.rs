//! The fake web application every node runs: login, a protected page, and a few routes that let
//! tests look at what the proxy forwards (headers, streaming bodies, upgrades).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE, UPGRADE};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::body::{Body, BoxError, RepeatBody, empty, full};
use crate::state::{LossStyle, NodeState};

/// Names the node that answered; tests and the demo read it to see where a request landed.
pub(crate) const X_SERVED_BY: HeaderName = HeaderName::from_static(crate::SERVED_BY_HEADER);

const LOGIN_REDIRECT: &str = "/login?return=%2Fme";
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// A login form is a few bytes; anything bigger is not worth reading.
const MAX_LOGIN_BODY: usize = 64 * 1024;
/// The accept value for the sample key in RFC 6455; the farm never checks the key, and the tests
/// only look at raw bytes passing through.
const FAKE_WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Serves one request on behalf of `state`'s node.
pub(crate) async fn handle(
    state: Arc<NodeState>,
    stopped: watch::Receiver<()>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    state.count_request(req.uri().path() == "/health");
    let delay = state.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = route(&state, stopped, req).await;
    resp.headers_mut()
        .insert(X_SERVED_BY, state.served_by.clone());
    Ok(resp)
}

async fn route(
    state: &NodeState,
    stopped: watch::Receiver<()>,
    req: Request<Incoming>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/login") => login(state, req).await,
        (&Method::GET, "/login") => text(StatusCode::OK, "login form"),
        (&Method::GET, "/me") => me(state, req.headers()),
        (&Method::GET, "/logout") => logout(state, req.headers()),
        (&Method::GET, "/anon") => anon(state, req.headers()),
        (&Method::GET, "/health") => health(state),
        (&Method::GET, "/headers") => echo_headers(req.headers()),
        (&Method::POST, "/echo") => echo_body(req),
        (&Method::GET, "/big") => big(req.uri().query()),
        (&Method::GET, "/ws") => websocket(req, stopped),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Always rotates: a fresh id on every login, whatever cookie came in.
async fn login(state: &NodeState, req: Request<Incoming>) -> Response<Body> {
    let form = match Limited::new(req.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad login body"),
    };
    let user = form_user(&form).unwrap_or_else(|| "user".to_owned());
    let id = state.ids.next_id();
    state.store.insert(id.clone(), user);
    let cookie = session_cookie(&state.cookie_name, &id);
    finish(
        Response::builder()
            .status(StatusCode::FOUND)
            .header(LOCATION, "/me")
            .header(SET_COOKIE, cookie),
        empty(),
    )
}

/// `user=NAME` from an urlencoded form; `None` when absent or empty.
fn form_user(form: &[u8]) -> Option<String> {
    let form = std::str::from_utf8(form).ok()?;
    let raw = form
        .split('&')
        .find_map(|pair| pair.strip_prefix("user="))?
        .replace('+', " ");
    let user = percent_decode_str(&raw).decode_utf8_lossy().into_owned();
    (!user.is_empty()).then_some(user)
}

fn me(state: &NodeState, headers: &HeaderMap) -> Response<Body> {
    let Some(id) = session_id(headers, &state.cookie_name) else {
        return anonymous_redirect();
    };
    match state.store.user(id) {
        Some(user) if !user.is_empty() => finish(
            Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, TEXT_PLAIN),
            full(user),
        ),
        // A live anonymous session is not a lost one: just ask for a login.
        Some(_) => anonymous_redirect(),
        None => session_lost(state),
    }
}

fn anonymous_redirect() -> Response<Body> {
    finish(
        Response::builder()
            .status(StatusCode::FOUND)
            .header(LOCATION, LOGIN_REDIRECT),
        empty(),
    )
}

/// The framework-specific answer to a session id this node does not know.
fn session_lost(state: &NodeState) -> Response<Body> {
    let redirect = Response::builder()
        .status(StatusCode::FOUND)
        .header(LOCATION, LOGIN_REDIRECT);
    let builder = match state.loss {
        LossStyle::LoginRedirect => redirect,
        LossStyle::Reissue => {
            let id = state.ids.next_id();
            state.store.insert(id.clone(), String::new());
            redirect.header(SET_COOKIE, session_cookie(&state.cookie_name, &id))
        }
        LossStyle::Clear => redirect.header(
            SET_COOKIE,
            format!(
                "{}=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/",
                state.cookie_name
            ),
        ),
        LossStyle::Unauthorized => return text(StatusCode::UNAUTHORIZED, "unauthorized"),
    };
    finish(builder, empty())
}

fn logout(state: &NodeState, headers: &HeaderMap) -> Response<Body> {
    if let Some(id) = session_id(headers, &state.cookie_name) {
        state.store.remove(id);
    }
    let expired = format!(
        "{}=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; Path=/",
        state.cookie_name
    );
    finish(
        Response::builder()
            .status(StatusCode::FOUND)
            .header(LOCATION, "/login")
            .header(SET_COOKIE, expired),
        empty(),
    )
}

fn anon(state: &NodeState, headers: &HeaderMap) -> Response<Body> {
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, TEXT_PLAIN);
    if session_id(headers, &state.cookie_name).is_some() {
        return finish(builder, full("anonymous"));
    }
    let id = state.ids.next_id();
    state.store.insert(id.clone(), String::new());
    let cookie = session_cookie(&state.cookie_name, &id);
    finish(builder.header(SET_COOKIE, cookie), full("anonymous"))
}

fn health(state: &NodeState) -> Response<Body> {
    if state.is_healthy() {
        text(StatusCode::OK, "ok")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    }
}

fn echo_headers(headers: &HeaderMap) -> Response<Body> {
    let mut out = String::new();
    for (name, value) in headers {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    text(StatusCode::OK, out)
}

/// Hands the request body straight back, frame by frame, so the proxy's streaming is what gets
/// tested, not our buffering.
fn echo_body(req: Request<Incoming>) -> Response<Body> {
    let body = req.into_body().map_err(BoxError::from).boxed();
    finish(Response::builder().status(StatusCode::OK), body)
}

fn big(query: Option<&str>) -> Response<Body> {
    let bytes = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("bytes="))
        .map(str::parse::<u64>);
    let len = match bytes {
        Some(Ok(n)) => n,
        None => 0,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "bytes must be a number"),
    };
    let body = RepeatBody::new(len).map_err(|never| match never {}).boxed();
    finish(
        Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/octet-stream"),
        body,
    )
}

/// Accepts any upgrade to `websocket` and echoes raw bytes: no framing, because the proxy only
/// has to pass bytes through.
fn websocket(mut req: Request<Incoming>, mut stopped: watch::Receiver<()>) -> Response<Body> {
    let wants_websocket = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_websocket {
        return text(StatusCode::BAD_REQUEST, "expected upgrade: websocket");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let echo = async {
            let upgraded = TokioIo::new(on_upgrade.await?);
            let (mut reader, mut writer) = tokio::io::split(upgraded);
            tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await?;
            Ok::<_, BoxError>(())
        };
        tokio::select! {
            // A failed upgrade or a reset peer simply ends the echo.
            _ = echo => {}
            _ = stopped.changed() => {}
        }
    });
    finish(
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .header("sec-websocket-accept", FAKE_WS_ACCEPT),
        empty(),
    )
}

/// The value of `name` among all `cookie` headers (HTTP/2 may send one per cookie).
fn session_id<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

fn session_cookie(name: &str, id: &str) -> String {
    format!("{name}={id}; Path=/; HttpOnly")
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    finish(
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, TEXT_PLAIN),
        full(body),
    )
}

/// Builds the response, or a bare 500 if a header did not parse; the farm validates the cookie
/// name up front, so that should never happen.
fn finish(builder: http::response::Builder, body: Body) -> Response<Body> {
    builder.body(body).unwrap_or_else(|_| {
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        resp
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_session_id_across_cookie_headers() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; SIDX=2"));
        headers.append(COOKIE, HeaderValue::from_static("SID=abc"));
        assert_eq!(session_id(&headers, "SID"), Some("abc"));
        assert_eq!(session_id(&headers, "a"), Some("1"));
        assert_eq!(session_id(&headers, "b"), None);
    }

    #[test]
    fn parses_form_user() {
        assert_eq!(form_user(b"user=alice").as_deref(), Some("alice"));
        assert_eq!(form_user(b"x=1&user=a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(form_user(b"user="), None);
        assert_eq!(form_user(b""), None);
    }
}
