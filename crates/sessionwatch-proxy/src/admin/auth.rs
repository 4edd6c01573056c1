//! The admin token: with `[admin] token` set, every admin path but the probes' (`/healthz`,
//! `/readyz`, which kubelets and load balancers call without credentials) and the ones
//! `[admin] open_paths` lists (a Flagger webhook cannot send a header) needs it, as an
//! `Authorization: Bearer` token (API clients, Prometheus' `authorization` block) or as the
//! password of HTTP Basic (so that a browser can open the status page; any user name).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::config::AdminAuth;
use crate::upstream::body::ResponseBody;

/// Paths open without the token.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// `None` when the request may go on; else the 401 to send.
pub(super) fn refuse(
    token: Option<&AdminAuth>,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response<ResponseBody>> {
    let token = token?;
    if OPEN.contains(&path)
        || token.is_open(path)
        || presented(headers).is_some_and(|t| token.matches(&t))
    {
        return None;
    }
    let mut r = super::text(
        StatusCode::UNAUTHORIZED,
        "this admin path needs the admin token: send Authorization: Bearer TOKEN, \
         or HTTP Basic with the token as the password\n",
        "text/plain",
    );
    let h = r.headers_mut();
    // Basic first: a browser asks for credentials only for a challenge it knows.
    h.append(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sessionwatch admin\", charset=\"UTF-8\""),
    );
    h.append(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sessionwatch admin\""),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(r)
}

/// The token the request presents, as a Bearer token or a Basic password; `None` when it
/// presents none, or one that cannot be read.
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let credentials = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Some(credentials.to_vec())
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = STANDARD.decode(credentials).ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        Some(decoded[colon + 1..].to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn token(t: &str) -> AdminAuth {
        let src = format!(
            "[admin]\ntoken = \"{t}\"\n[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        let c = Config::parse(&src, "t.toml".as_ref()).unwrap();
        c.admin_auth.unwrap()
    }

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    const T: &str = "s3cret-admin-token-0123";

    #[test]
    fn without_a_token_configured_every_path_is_open() {
        assert!(refuse(None, "/status", &HeaderMap::new()).is_none());
    }

    #[test]
    fn the_probes_paths_are_open_and_the_rest_need_the_token() {
        let t = token(T);
        for open in ["/healthz", "/readyz"] {
            assert!(
                refuse(Some(&t), open, &HeaderMap::new()).is_none(),
                "{open}"
            );
        }
        for closed in ["/", "/status", "/metrics", "/probe", "/healthz/", "/nope"] {
            let r = refuse(Some(&t), closed, &HeaderMap::new()).expect(closed);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            let challenges: Vec<_> = r.headers().get_all(WWW_AUTHENTICATE).iter().collect();
            assert_eq!(challenges.len(), 2, "{closed}");
            assert!(challenges[0].to_str().unwrap().starts_with("Basic "));
        }
    }

    #[test]
    fn a_path_open_paths_lists_needs_no_token() {
        let src = format!(
            "[admin]\ntoken = \"{T}\"\nopen_paths = [\"/probe\"]\n\
             [[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        let t = Config::parse(&src, "t.toml".as_ref())
            .unwrap()
            .admin_auth
            .unwrap();
        assert!(refuse(Some(&t), "/probe", &HeaderMap::new()).is_none());
        assert!(refuse(Some(&t), "/status", &HeaderMap::new()).is_some());
    }

    #[test]
    fn a_bearer_token_or_a_basic_password_lets_the_request_in() {
        let t = token(T);
        let basic =
            |user: &str, pass: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
        for ok in [
            format!("Bearer {T}"),
            format!("bearer  {T} "),
            basic("admin", T),
            basic("", T),
            format!("BASIC {}", STANDARD.encode(format!("x:{T}"))),
        ] {
            assert!(refuse(Some(&t), "/status", &with(&ok)).is_none(), "{ok}");
        }
        for bad in [
            format!("Bearer {T}x"),
            format!("Bearer {}", &T[..T.len() - 1]),
            "Bearer".to_owned(),
            format!("Token {T}"),
            basic(T, "wrong"),
            format!("Basic {T}"),
            format!("Basic {}", STANDARD.encode(T)),
            basic("admin", &T.to_uppercase()),
        ] {
            let r = refuse(Some(&t), "/metrics", &with(&bad));
            assert_eq!(
                r.map(|r| r.status()),
                Some(StatusCode::UNAUTHORIZED),
                "{bad}"
            );
        }
    }
}
