//! Keyed fingerprints of session values.
//!
//! A raw session value is a bearer credential, so it is hashed with a secret key the moment it is
//! read and never kept. BLAKE3 in keyed mode is a PRF: without the key, a fingerprint neither
//! reveals the value nor lets anyone test a guess against it, and it is fast on short inputs.

use std::fmt;

/// Derives fingerprints from raw cookie values with a secret key.
#[derive(Clone)]
pub struct Fingerprinter {
    key: [u8; 32],
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: never print it.
        f.write_str("Fingerprinter { key: <redacted> }")
    }
}

impl Fingerprinter {
    /// A fingerprinter whose key is derived from any secret (a passphrase or random bytes), so
    /// operators can configure a key of any length.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: blake3::derive_key("sessionwatch 2026 session fingerprint key", secret),
        }
    }

    /// A fingerprinter with exactly this 32-byte key.
    pub fn from_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The key, for deriving the keys of other primitives bound to the same secret (the
    /// affinity cookie's).
    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The fingerprint of `value` as the cookie named `cookie_name`. The name is hashed too, so
    /// the same value in two different cookies gives two fingerprints.
    pub fn fingerprint(&self, cookie_name: &str, value: &[u8]) -> Fingerprint {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(cookie_name.as_bytes());
        hasher.update(&[0]);
        hasher.update(value);
        let hash = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash.as_bytes()[..16]);
        Fingerprint(u128::from_le_bytes(first))
    }
}

/// A keyed 128-bit fingerprint of one session value: the key of the session table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u128);

impl Fingerprint {
    /// The short form written to alert lines and logs.
    pub fn short(self) -> ShortFingerprint {
        ShortFingerprint(self.0 as u64 & 0xffff_ffff_ffff)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// 48 bits of a fingerprint, printed as 12 hex digits: enough to follow one session through an
/// alert log, too short to be a lookup key for anything.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortFingerprint(u64);

impl fmt::Display for ShortFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

impl fmt::Debug for ShortFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_fingerprint_and_key_matters() {
        let a = Fingerprinter::from_secret(b"one");
        let b = Fingerprinter::from_secret(b"two");
        assert_eq!(a.fingerprint("SID", b"v"), a.fingerprint("SID", b"v"));
        assert_ne!(a.fingerprint("SID", b"v"), b.fingerprint("SID", b"v"));
        assert_ne!(a.fingerprint("SID", b"v"), a.fingerprint("OTHER", b"v"));
        assert_ne!(a.fingerprint("SID", b"v"), a.fingerprint("SID", b"w"));
    }

    #[test]
    fn short_form_does_not_contain_the_value() {
        let fp = Fingerprinter::from_secret(b"k").fingerprint("SID", b"0123456789abcdef");
        let short = fp.short().to_string();
        assert_eq!(short.len(), 12);
        assert!(!short.contains("0123456789"));
        assert!(!format!("{fp:?}").contains("0123456789"));
    }
}
