//! Reading session cookies from requests (`Cookie`) and responses (`Set-Cookie`).
//!
//! Parsing is the `cookie` crate's; this module only picks out the configured session cookies and
//! fingerprints their values straight away, so no raw value outlives the call. Header names
//! arrive in any case (the `http` crate folds them), a response may carry many `Set-Cookie`
//! headers and an HTTP/2 client may split `Cookie` into several: all are read. A header that is
//! not valid text or not a cookie is skipped, never an error: the proxy passes it through as is.

use cookie::Cookie;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

use crate::{Fingerprint, Fingerprinter, SessionProfile, Timestamp};

/// A session cookie, by its position in the profile's cookie list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieId(pub u8);

impl CookieId {
    /// The position in the profile's cookie list.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What a backend's `Set-Cookie` did to a session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCookieEvent {
    /// A value was issued.
    Issued {
        /// Which session cookie.
        cookie: CookieId,
        /// The fingerprint of the issued value.
        fingerprint: Fingerprint,
    },
    /// The cookie was deleted: empty value, `Max-Age` of zero or less, or an `Expires` date in the
    /// past (when there is no `Max-Age`, which takes precedence).
    Deleted {
        /// Which session cookie.
        cookie: CookieId,
    },
}

impl SetCookieEvent {
    /// The cookie the event is about.
    pub fn cookie(&self) -> CookieId {
        match *self {
            SetCookieEvent::Issued { cookie, .. } | SetCookieEvent::Deleted { cookie } => cookie,
        }
    }
}

fn header_text(value: &HeaderValue) -> Option<&str> {
    // Browsers may send bytes outside visible ASCII; accept any UTF-8 rather than dropping them.
    std::str::from_utf8(value.as_bytes()).ok()
}

fn cookie_id(profile: &SessionProfile, name: &str) -> Option<CookieId> {
    profile
        .cookies()
        .iter()
        .position(|c| c.name() == name)
        .and_then(|i| u8::try_from(i).ok())
        .map(CookieId)
}

/// Calls `found` once for each configured session cookie in the request's `Cookie` headers, with
/// the fingerprint of its value. When a name appears twice (cookies set for two paths), the first
/// is the one the application reads, so only it is reported.
///
/// The request side is scanned by hand rather than with the `cookie` crate: a `Cookie` header is
/// only `name=value` pairs separated by `;` (RFC 6265 4.2.1), every request carries one, and
/// parsing each pair as a full cookie cost several hundred nanoseconds a request. Values are
/// taken exactly as the `cookie` crate takes them from `Set-Cookie` (whitespace trimmed, quotes
/// kept), so the fingerprints of both sides agree.
pub fn read_request_cookies(
    headers: &HeaderMap,
    profile: &SessionProfile,
    fingerprinter: &Fingerprinter,
    mut found: impl FnMut(CookieId, Fingerprint),
) {
    let mut seen = 0u64;
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|b| *b == b';') {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            let name = trim_wsp(&pair[..eq]);
            let value = trim_wsp(&pair[eq + 1..]);
            // A value that is not text can never have been learned from a `Set-Cookie`.
            let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value))
            else {
                continue;
            };
            let Some(id) = cookie_id(profile, name) else {
                continue;
            };
            // Profiles hold at most MAX_COOKIES cookies (validated); an unvalidated larger one
            // simply loses the first-wins rule past 64 rather than overflowing.
            let bit = 1u64.checked_shl(u32::from(id.0)).unwrap_or(0);
            if seen & bit != 0 {
                continue;
            }
            seen |= bit;
            found(id, fingerprinter.fingerprint(name, value.as_bytes()));
        }
    }
}

/// Reads one `Set-Cookie` header value; `None` when it is not about a session cookie or cannot
/// be parsed.
pub fn read_set_cookie(
    value: &HeaderValue,
    profile: &SessionProfile,
    fingerprinter: &Fingerprinter,
    now: Timestamp,
) -> Option<SetCookieEvent> {
    let text = header_text(value)?;
    let cookie = Cookie::parse(text).ok()?;
    // The name and value as a browser stores them and sends them back (RFC 6265 5.2: only
    // spaces and tabs trimmed): the `cookie` crate trims any Unicode whitespace, which would
    // fingerprint `a\u{a0}` as `a` here and not in the `Cookie` the browser returns.
    let pair = text.split(';').next().unwrap_or_default();
    let (name, value) = pair.split_once('=')?;
    let (name, value) = (trim_wsp_str(name), trim_wsp_str(value));
    let id = cookie_id(profile, name)?;
    if is_deletion(&cookie, now) {
        return Some(SetCookieEvent::Deleted { cookie: id });
    }
    Some(SetCookieEvent::Issued {
        cookie: id,
        fingerprint: fingerprinter.fingerprint(name, value.as_bytes()),
    })
}

/// `s` without leading and trailing spaces and tabs (RFC 6265's WSP), the only whitespace a
/// browser trims from a cookie's name and value.
pub(crate) fn trim_wsp(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

fn trim_wsp_str(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn is_deletion(cookie: &Cookie<'_>, now: Timestamp) -> bool {
    if cookie.value_trimmed().is_empty() {
        return true;
    }
    if let Some(max_age) = cookie.max_age() {
        return max_age.whole_seconds() <= 0;
    }
    match cookie.expires_datetime() {
        Some(expires) => {
            expires.unix_timestamp() <= i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
        }
        None => false,
    }
}

/// Calls `event` for every session-cookie `Set-Cookie` in the response headers.
pub fn read_set_cookies(
    headers: &HeaderMap,
    profile: &SessionProfile,
    fingerprinter: &Fingerprinter,
    now: Timestamp,
    mut event: impl FnMut(SetCookieEvent),
) {
    for value in headers.get_all(SET_COOKIE) {
        if let Some(e) = read_set_cookie(value, profile, fingerprinter, now) {
            event(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CookieSpec, Framework};

    fn fp() -> Fingerprinter {
        Fingerprinter::from_secret(b"test")
    }

    fn now() -> Timestamp {
        // 2026-11-24T00:00:00Z
        Timestamp::from_millis(1_795_478_400_000)
    }

    fn set(v: &str) -> Option<SetCookieEvent> {
        read_set_cookie(
            &HeaderValue::from_str(v).unwrap(),
            &SessionProfile::preset(Framework::Php),
            &fp(),
            now(),
        )
    }

    #[test]
    fn reads_every_cookie_header_and_only_session_cookies() {
        let profile = SessionProfile::custom(vec![CookieSpec::new("a"), CookieSpec::new("b")]);
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; a=1"));
        headers.append(COOKIE, HeaderValue::from_static("b=2; a=shadowed"));
        let mut got = vec![];
        read_request_cookies(&headers, &profile, &fp(), |id, f| got.push((id, f)));
        assert_eq!(
            got,
            vec![
                (CookieId(0), fp().fingerprint("a", b"1")),
                (CookieId(1), fp().fingerprint("b", b"2")),
            ]
        );
    }

    #[test]
    fn request_and_set_cookie_fingerprints_agree() {
        let profile = SessionProfile::preset(Framework::Php);
        for (set, sent) in [
            ("PHPSESSID=abc123; Path=/", "PHPSESSID=abc123"),
            (
                "PHPSESSID=\"quoted\"; Path=/",
                "theme=x;PHPSESSID=\"quoted\"",
            ),
            (
                "PHPSESSID=s%3Aenc.sig; HttpOnly",
                "a=b;  PHPSESSID=s%3Aenc.sig  ; c=d",
            ),
        ] {
            let Some(SetCookieEvent::Issued { fingerprint, .. }) =
                read_set_cookie(&HeaderValue::from_str(set).unwrap(), &profile, &fp(), now())
            else {
                panic!("{set} not read");
            };
            let mut headers = HeaderMap::new();
            headers.insert(COOKIE, HeaderValue::from_str(sent).unwrap());
            let mut got = vec![];
            read_request_cookies(&headers, &profile, &fp(), |_, f| got.push(f));
            assert_eq!(got, vec![fingerprint], "{set} / {sent}");
        }
    }

    #[test]
    fn only_spaces_and_tabs_are_trimmed_on_either_side() {
        // A non-ASCII blank ends the value: a browser keeps it and sends it back.
        let profile = SessionProfile::preset(Framework::Php);
        let set = HeaderValue::from_bytes(b"PHPSESSID=a\xc2\xa0").unwrap();
        let Some(SetCookieEvent::Issued { fingerprint, .. }) =
            read_set_cookie(&set, &profile, &fp(), now())
        else {
            panic!("not read");
        };
        assert_eq!(
            fingerprint,
            fp().fingerprint("PHPSESSID", "a\u{a0}".as_bytes())
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_bytes(b"PHPSESSID=a\xc2\xa0 \t").unwrap(),
        );
        let mut got = vec![];
        read_request_cookies(&headers, &profile, &fp(), |_, f| got.push(f));
        assert_eq!(got, vec![fingerprint]);
    }

    #[test]
    fn malformed_cookie_headers_are_skipped() {
        let profile = SessionProfile::custom(vec![CookieSpec::new("a")]);
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_bytes(b"a=\xff\xfe").unwrap());
        headers.append(COOKIE, HeaderValue::from_static(";;=;a"));
        headers.append(COOKIE, HeaderValue::from_static("a=ok"));
        let mut got = vec![];
        read_request_cookies(&headers, &profile, &fp(), |id, f| got.push((id, f)));
        assert_eq!(got, vec![(CookieId(0), fp().fingerprint("a", b"ok"))]);
    }

    #[test]
    fn issue_and_each_deletion_form() {
        assert_eq!(
            set("PHPSESSID=abc; path=/; HttpOnly"),
            Some(SetCookieEvent::Issued {
                cookie: CookieId(0),
                fingerprint: fp().fingerprint("PHPSESSID", b"abc")
            })
        );
        let deleted = Some(SetCookieEvent::Deleted {
            cookie: CookieId(0),
        });
        assert_eq!(set("PHPSESSID=; Path=/"), deleted, "empty value");
        assert_eq!(
            set("PHPSESSID=\"\"; Path=/"),
            deleted,
            "empty quoted value (Django)"
        );
        assert_eq!(
            set("PHPSESSID=deleted; Max-Age=0; path=/"),
            deleted,
            "Max-Age=0"
        );
        assert_eq!(set("PHPSESSID=x; Max-Age=-1"), deleted, "negative Max-Age");
        assert_eq!(
            set("PHPSESSID=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; path=/"),
            deleted,
            "past Expires"
        );
        // Max-Age wins over Expires (RFC 6265 5.3 step 3).
        assert!(matches!(
            set("PHPSESSID=x; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=600"),
            Some(SetCookieEvent::Issued { .. })
        ));
        assert!(matches!(
            set("PHPSESSID=x; expires=Fri, 01 Jan 2100 00:00:00 GMT"),
            Some(SetCookieEvent::Issued { .. })
        ));
    }

    #[test]
    fn other_and_malformed_set_cookies_are_ignored() {
        assert_eq!(set("theme=dark"), None);
        assert_eq!(set("=novalue"), None);
        assert_eq!(set(""), None);
        assert_eq!(set("PHPSESSID"), None);
        let bytes = HeaderValue::from_bytes(b"PHPSESSID=\xff").unwrap();
        // Not UTF-8: skipped rather than failing the response.
        assert_eq!(
            read_set_cookie(
                &bytes,
                &SessionProfile::preset(Framework::Php),
                &fp(),
                now()
            ),
            None
        );
    }
}
