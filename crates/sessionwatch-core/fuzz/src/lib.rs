//! What the core's fuzz targets share: the profiles the cookie and classification targets run
//! against, the status a response block stands for, and (from the codec's fuzz crate) the
//! lenient builders that turn any bytes into header blocks and knobs.

use http::{HeaderName, StatusCode};
use sessionwatch_core::{CookieSpec, Framework, Marker, SessionProfile};

pub use sessionwatch_h1_fuzz::{Knobs, header_line, header_map, lines, split_block};

/// The first number in `line` that is a valid status code, or 200.
pub fn status_in(line: &[u8]) -> StatusCode {
    line.split(|b| !b.is_ascii_digit())
        .filter(|t| t.len() == 3)
        .find_map(|t| StatusCode::from_bytes(t).ok())
        .unwrap_or(StatusCode::OK)
}

/// Every built-in profile, and a custom one with the most cookies a profile may have, a
/// rotating one among them, and a marker header and statuses.
pub fn profiles() -> Vec<SessionProfile> {
    let mut all: Vec<_> = Framework::ALL
        .into_iter()
        .map(SessionProfile::preset)
        .collect();
    let names = [
        "sid",
        "SESSION",
        "__Host-session",
        "auth.ticket",
        "a",
        "token",
        "X",
        "laravel_session",
    ];
    all.push(
        SessionProfile::custom(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| CookieSpec::new(*n).rotating(i == 3))
                .collect(),
        )
        .with_login_paths(vec!["/login".into(), "/Account/Login".into()])
        .with_logout_paths(vec!["/logout".into(), "/signout/".into()])
        .with_marker(Marker {
            header: Some(HeaderName::from_static("x-session-lost")),
            statuses: vec![StatusCode::from_u16(419).unwrap_or(StatusCode::OK)],
        }),
    );
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_found_in_a_status_line() {
        assert_eq!(status_in(b"HTTP/1.1 302 Found"), StatusCode::FOUND);
        assert_eq!(status_in(b"HTTP/1.1 2000"), StatusCode::OK);
    }

    #[test]
    fn the_custom_profile_is_valid() {
        for p in profiles() {
            assert_eq!(p.validate(), Ok(()));
        }
    }
}
