//! The signed affinity cookie: a session's issuer, carried by the client from one replica to
//! another.
//!
//! When a backend issues a session, the replica that saw its `Set-Cookie` mints a small cookie
//! that binds the issuer and the times to the session's fingerprint. Another replica (its own
//! table, the same fingerprint key, the same backend list) that misses the session in its table
//! takes the record from the cookie instead, so a fleet without a shared store classifies and pins
//! as one proxy would. The issuer travels as its tag, a 32-bit hash of its name that every replica
//! derives alike (replicas number their backends each in its own order, and those discovered at
//! run time in the order they appeared); each replica maps the tag back to its own id. A client cannot mint one: the cookie is authenticated, and it is valid only
//! next to the session value it was minted for.
//!
//! The value is `base64url(version || ciphertext || tag)`, 37 bytes (50 characters):
//! - the plaintext is `issuer tag (u32) || issued_at (ms, u64) || minted_at (ms, u64)`,
//!   little-endian (version 1 carried the issuer's index, a `u16`: it is refused as malformed);
//! - `tag` is the first 16 bytes of keyed BLAKE3 (the MAC key) over
//!   `version || fingerprint || plaintext`, so it binds the cookie to one session;
//! - the ciphertext is the plaintext XOR keyed BLAKE3's output stream (the encryption key) over
//!   `tag`, a synthetic IV (SIV): the same issuer in two sessions gives two unrelated bytes, so
//!   the backend cannot be read from the cookie, and no random source is needed.
//!
//! Both keys are derived from the fingerprint key, so every replica that fingerprints alike
//! verifies alike. Sans-I/O: time is an argument.

use std::time::Duration;

use http::HeaderMap;
use http::header::COOKIE;

use crate::cookies::trim_wsp;
use crate::{BackendId, Fingerprint, Fingerprinter, SessionRecord, Timestamp};

const VERSION: u8 = 2;
const PLAIN: usize = 20;
const TAG: usize = 16;
const RAW: usize = 1 + PLAIN + TAG;
/// How far ahead of this replica's clock another replica's may be.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What an affinity cookie says about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Affinity {
    /// The tag of the backend whose `Set-Cookie` issued the session (its name's hash, the same
    /// on every replica).
    pub issuer_tag: u32,
    /// When the session was issued.
    pub issued_at: Timestamp,
    /// When this cookie was minted: it is stale once older than the idle timeout.
    pub minted_at: Timestamp,
}

impl Affinity {
    /// The record a replica takes for a session it learns from the cookie, `issuer` being its
    /// own id for [`Affinity::issuer_tag`]. The client presents it, so it is `presented`; it was
    /// last seen, as far as this replica can tell, at the mint.
    pub fn record(&self, issuer: BackendId) -> SessionRecord {
        SessionRecord {
            issuer,
            issued_at: self.issued_at,
            last_seen: self.minted_at,
            pinned: false,
            lost: false,
            presented: true,
        }
    }
}

/// Why an affinity cookie was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityRejection {
    /// Not a value this proxy mints (wrong length, not base64url, unknown version).
    Malformed,
    /// The tag does not verify: forged, tampered with, or minted for another session.
    Forged,
    /// Authentic but minted longer ago than the idle timeout (or implausibly far in the future).
    Stale,
}

impl AffinityRejection {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityRejection::Malformed => "malformed",
            AffinityRejection::Forged => "forged",
            AffinityRejection::Stale => "stale",
        }
    }
}

/// The keys that mint and verify affinity cookies.
#[derive(Clone)]
pub struct AffinityKey {
    mac: [u8; 32],
    enc: [u8; 32],
}

impl std::fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AffinityKey { <redacted> }")
    }
}

impl AffinityKey {
    /// The keys derived from `fingerprinter`'s key.
    pub fn derive(fingerprinter: &Fingerprinter) -> Self {
        let key = fingerprinter.key();
        Self {
            mac: blake3::derive_key("sessionwatch 2026 affinity cookie mac key", key),
            enc: blake3::derive_key("sessionwatch 2026 affinity cookie encryption key", key),
        }
    }

    fn tag(&self, fingerprint: Fingerprint, plain: &[u8; PLAIN]) -> [u8; TAG] {
        let mut h = blake3::Hasher::new_keyed(&self.mac);
        h.update(&[VERSION]);
        h.update(&fingerprint.0.to_le_bytes());
        h.update(plain);
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&h.finalize().as_bytes()[..TAG]);
        tag
    }

    fn xor_stream(&self, tag: &[u8; TAG], bytes: &mut [u8; PLAIN]) {
        let mut stream = [0u8; PLAIN];
        blake3::Hasher::new_keyed(&self.enc)
            .update(tag)
            .finalize_xof()
            .fill(&mut stream);
        for (b, s) in bytes.iter_mut().zip(stream) {
            *b ^= s;
        }
    }

    /// The cookie value for the session `fingerprint`.
    pub fn mint(&self, fingerprint: Fingerprint, affinity: &Affinity) -> String {
        let mut plain = [0u8; PLAIN];
        plain[..4].copy_from_slice(&affinity.issuer_tag.to_le_bytes());
        plain[4..12].copy_from_slice(&affinity.issued_at.as_millis().to_le_bytes());
        plain[12..].copy_from_slice(&affinity.minted_at.as_millis().to_le_bytes());
        let tag = self.tag(fingerprint, &plain);
        self.xor_stream(&tag, &mut plain);
        let mut raw = [0u8; RAW];
        raw[0] = VERSION;
        raw[1..1 + PLAIN].copy_from_slice(&plain);
        raw[1 + PLAIN..].copy_from_slice(&tag);
        base64url_encode(&raw)
    }

    /// What `value` says about the session `fingerprint`, if it was minted for it by a replica
    /// with this key no longer ago than `max_age` before `now`.
    pub fn verify(
        &self,
        value: &[u8],
        fingerprint: Fingerprint,
        now: Timestamp,
        max_age: Duration,
    ) -> Result<Affinity, AffinityRejection> {
        let raw = decode(value)?;
        let mut plain = [0u8; PLAIN];
        plain.copy_from_slice(&raw[1..1 + PLAIN]);
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&raw[1 + PLAIN..]);
        self.xor_stream(&tag, &mut plain);
        if !constant_time_eq(&self.tag(fingerprint, &plain), &tag) {
            return Err(AffinityRejection::Forged);
        }
        let (issuer, rest) = plain.split_at(4);
        let (issued, minted) = rest.split_at(8);
        let affinity = Affinity {
            issuer_tag: u32::from_le_bytes([issuer[0], issuer[1], issuer[2], issuer[3]]),
            issued_at: Timestamp::from_millis(le_u64(issued)),
            minted_at: Timestamp::from_millis(le_u64(minted)),
        };
        if now.since(affinity.minted_at) > max_age || affinity.minted_at > now.plus(CLOCK_SKEW) {
            return Err(AffinityRejection::Stale);
        }
        Ok(affinity)
    }
}

/// Checks the shape of a value without any key: whether it could be a cookie this proxy mints.
fn decode(value: &[u8]) -> Result<[u8; RAW], AffinityRejection> {
    let raw = base64url_decode::<RAW>(value).ok_or(AffinityRejection::Malformed)?;
    if raw[0] != VERSION {
        return Err(AffinityRejection::Malformed);
    }
    Ok(raw)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

fn constant_time_eq(a: &[u8; TAG], b: &[u8; TAG]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Unpadded base64url of exactly `N` bytes, canonical (no stray low bits), or `None`.
fn base64url_decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    let mut bits = 0u32;
    let mut have = 0u32;
    let mut len = 0;
    for c in text {
        let v = ALPHABET.iter().position(|a| a == c)?;
        bits = bits << 6 | v as u32;
        have += 6;
        if have >= 8 {
            have -= 8;
            *out.get_mut(len)? = (bits >> have) as u8;
            len += 1;
            bits &= (1 << have) - 1;
        }
    }
    (len == N && bits == 0).then_some(out)
}

/// The value of the first cookie named `name` in the request's `Cookie` headers.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().find_map(|h| {
        h.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            (trim_wsp(&pair[..eq]) == name.as_bytes()).then(|| trim_wsp(&pair[eq + 1..]))
        })
    })
}

/// Removes every cookie named `name` from the request's `Cookie` headers (a header left empty
/// goes); the other pairs pass in their order, each as it came but for the spaces around it.
/// A header marked sensitive (never indexed by HPACK) stays so. Returns whether any was removed.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) -> bool {
    if read_cookie(headers, name).is_none() {
        return false;
    }
    let kept: Vec<http::HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| {
            let pairs: Vec<&[u8]> = h
                .as_bytes()
                .split(|b| *b == b';')
                .filter(|pair| match pair.iter().position(|b| *b == b'=') {
                    Some(eq) => trim_wsp(&pair[..eq]) != name.as_bytes(),
                    None => true,
                })
                .map(trim_wsp)
                .filter(|p| !p.is_empty())
                .collect();
            if pairs.is_empty() {
                return None;
            }
            let mut value = http::HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok()?;
            value.set_sensitive(h.is_sensitive());
            Some(value)
        })
        .collect();
    headers.remove(COOKIE);
    for v in kept {
        headers.append(COOKIE, v);
    }
    true
}

/// The `Set-Cookie` value that gives the client `value`, for `max_age`.
pub fn set_cookie_header(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{}",
        max_age.as_secs().max(1),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the cookie from the client.
pub fn expire_cookie_header(name: &str, secure: bool) -> String {
    format!(
        "{name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}
