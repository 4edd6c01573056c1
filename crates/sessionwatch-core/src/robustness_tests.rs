//! Whatever bytes arrive in `Cookie`, `Set-Cookie` and `Location`, reading and classifying them
//! never panics. A deterministic generator keeps the run reproducible and fast.

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::*;

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Header-legal bytes biased towards cookie syntax.
    fn header_bytes(&mut self) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"SID",
            b"=",
            b";",
            b" ",
            b"\"",
            b"Max-Age=",
            b"-1",
            b"0",
            b"Expires=",
            b"Thu, 01 Jan 1970 00:00:00 GMT",
            b"Path=/",
            b",",
            b"\xff",
            b"\x80",
            b"%00",
            b"a",
            b"==",
            b"PHPSESSID",
            b"\t",
            b"Max-Age=99999999999999999999",
        ];
        let n = (self.next() % 12) as usize;
        let mut out = Vec::new();
        for _ in 0..n {
            if self.next() % 4 == 0 {
                let b = (self.next() % 256) as u8;
                // Header values may not contain control characters other than tab.
                if b >= 0x20 && b != 0x7f || b == b'\t' {
                    out.push(b);
                }
            } else {
                out.extend_from_slice(PIECES[(self.next() as usize) % PIECES.len()]);
            }
        }
        out
    }
}

#[test]
fn random_headers_never_panic() {
    let profile = SessionProfile::custom(vec![
        CookieSpec::new("SID"),
        CookieSpec::new("PHPSESSID").rotating(true),
    ]);
    let fp = Fingerprinter::from_secret(b"fuzz");
    let mut rng = Rng(0x5eed);
    let now = Timestamp::from_millis(1_795_478_400_000);
    for _ in 0..20_000 {
        let mut request = HeaderMap::new();
        for _ in 0..(rng.next() % 3) {
            if let Ok(v) = HeaderValue::from_bytes(&rng.header_bytes()) {
                request.append(http::header::COOKIE, v);
            }
        }
        let mut carried = Vec::new();
        read_request_cookies(&request, &profile, &fp, |cookie, fingerprint| {
            carried.push(Carried {
                cookie,
                fingerprint,
                record: Some(SessionRecord::issued(BackendId(0), now)),
            })
        });
        let mut set = Vec::new();
        for _ in 0..(rng.next() % 3) {
            if let Ok(v) = HeaderValue::from_bytes(&rng.header_bytes()) {
                set.extend(read_set_cookie(&v, &profile, &fp, now));
            }
        }
        let location_bytes = rng.header_bytes();
        let location = std::str::from_utf8(&location_bytes).ok();
        let status =
            StatusCode::from_u16(100 + (rng.next() % 500) as u16).unwrap_or(StatusCode::OK);
        let exchange = Exchange {
            method: &Method::GET,
            path: location.unwrap_or("/"),
            carried: &carried,
            status,
            location,
            marker_header: false,
            set_cookies: &set,
            server: BackendId((rng.next() % 3) as u16),
            now,
        };
        let verdict = classify(&exchange, &profile);
        plan_updates(&exchange, &verdict, &profile, PinPolicy::OnReset, |_| {});
    }
}
