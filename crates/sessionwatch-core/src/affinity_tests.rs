use std::time::Duration;

use http::HeaderMap;
use http::header::COOKIE;

use crate::affinity::*;
use crate::{BackendId, Fingerprint, Fingerprinter, Timestamp};

const IDLE: Duration = Duration::from_secs(1200);

fn key() -> AffinityKey {
    AffinityKey::derive(&Fingerprinter::from_secret(b"fleet secret 0123456789"))
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(1_795_478_400_000 + secs * 1000)
}

fn minted(issuer_tag: u32) -> Affinity {
    Affinity {
        issuer_tag,
        issued_at: at(0),
        minted_at: at(5),
    }
}

const FP: Fingerprint = Fingerprint(0x0123_4567_89ab_cdef_0011_2233_4455_6677);

#[test]
fn a_minted_cookie_verifies_for_its_session_on_any_replica_with_the_key() {
    let a = minted(3);
    let value = key().mint(FP, &a);
    assert_eq!(value.len(), 50);
    // Another replica: its own key object, derived from the same secret.
    assert_eq!(key().verify(value.as_bytes(), FP, at(60), IDLE), Ok(a));
    assert_eq!(a.issuer_tag, 3);
    assert_eq!(a.record(BackendId(7)).issuer, BackendId(7));
    assert!(a.record(BackendId(7)).presented);
}

#[test]
fn another_key_or_another_session_is_forged() {
    let value = key().mint(FP, &minted(1));
    let other = AffinityKey::derive(&Fingerprinter::from_secret(b"another secret 01234"));
    assert_eq!(
        other.verify(value.as_bytes(), FP, at(60), IDLE),
        Err(AffinityRejection::Forged)
    );
    assert_eq!(
        key().verify(value.as_bytes(), Fingerprint(FP.0 ^ 1), at(60), IDLE),
        Err(AffinityRejection::Forged)
    );
}

#[test]
fn every_tampered_byte_is_rejected() {
    let k = key();
    let value = k.mint(FP, &minted(1));
    for i in 0..value.len() {
        for replacement in [b'A', b'z', b'-', b'_', b'0'] {
            let mut bytes = value.clone().into_bytes();
            if bytes[i] == replacement {
                continue;
            }
            bytes[i] = replacement;
            assert!(
                k.verify(&bytes, FP, at(60), IDLE).is_err(),
                "byte {i} changed to {replacement} still verified"
            );
        }
    }
}

#[test]
fn a_cookie_older_than_the_idle_timeout_or_from_the_future_is_stale() {
    let k = key();
    let value = k.mint(FP, &minted(1));
    assert!(k.verify(value.as_bytes(), FP, at(5 + 1200), IDLE).is_ok());
    assert_eq!(
        k.verify(value.as_bytes(), FP, at(5 + 1201), IDLE),
        Err(AffinityRejection::Stale)
    );
    let ahead = Affinity {
        minted_at: at(3600),
        ..minted(1)
    };
    assert_eq!(
        k.verify(k.mint(FP, &ahead).as_bytes(), FP, at(0), IDLE),
        Err(AffinityRejection::Stale)
    );
}

#[test]
fn malformed_values_are_told_apart() {
    let k = key();
    let good = k.mint(FP, &minted(1));
    for bad in [
        &b""[..],
        b"swaff",
        &good.as_bytes()[..46],
        format!("{good}A").as_bytes(),
        good.replace(&good[3..4], "+").as_bytes(),
        good.replace(&good[3..4], "=").as_bytes(),
    ] {
        assert_eq!(
            k.verify(bad, FP, at(60), IDLE),
            Err(AffinityRejection::Malformed),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A value of the right shape with another version byte.
    let mut raw = good.into_bytes();
    raw[0] = b'B';
    assert_eq!(
        k.verify(&raw, FP, at(60), IDLE),
        Err(AffinityRejection::Malformed)
    );
}

#[test]
fn the_issuer_cannot_be_read_from_the_cookie() {
    let k = key();
    // The same issuer, minted for two sessions at the same instants: no byte in common beyond
    // chance, so nothing in the value stands for the backend.
    let a = k.mint(Fingerprint(1), &minted(0)).into_bytes();
    let b = k.mint(Fingerprint(2), &minted(0)).into_bytes();
    let same = a.iter().zip(&b).skip(1).filter(|(x, y)| x == y).count();
    assert!(same < 8, "{same} of 49 characters in common");
    // Two issuers for one session: the values differ throughout, not in one spot.
    let c = k.mint(Fingerprint(1), &minted(1)).into_bytes();
    let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(differ > 30, "only {differ} characters differ");
}

#[test]
fn base64url_round_trips_and_rejects_non_canonical_text() {
    for issuer_tag in [0u32, 1, 255, 0xdead_beef, u32::MAX] {
        let a = Affinity {
            issuer_tag,
            ..minted(0)
        };
        assert_eq!(
            key().verify(key().mint(FP, &a).as_bytes(), FP, at(6), IDLE),
            Ok(a)
        );
    }
    // The last character carries two unused bits: set them and the text is not canonical.
    let good = key().mint(FP, &minted(1));
    let last = good.as_bytes()[49];
    let pos = ALPHABET_FOR_TEST.iter().position(|c| *c == last).unwrap();
    let mut odd = good.into_bytes();
    odd[49] = ALPHABET_FOR_TEST[pos ^ 1];
    assert_eq!(
        key().verify(&odd, FP, at(6), IDLE),
        Err(AffinityRejection::Malformed)
    );
}

const ALPHABET_FOR_TEST: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn cookies(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(COOKIE, v.parse().unwrap());
    }
    h
}

#[test]
fn the_affinity_cookie_is_read_and_stripped_leaving_the_others_as_they_were() {
    let mut h = cookies(&["a=1; swaff=XYZ ; b=2", "swaff=second", "swaff=only"]);
    assert_eq!(read_cookie(&h, "swaff"), Some(&b"XYZ"[..]));
    assert!(strip_cookie(&mut h, "swaff"));
    let left: Vec<_> = h
        .get_all(COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(left, ["a=1; b=2"]);
    assert_eq!(read_cookie(&h, "swaff"), None);
    // A name that merely contains it, or a bare word, stays.
    let mut h = cookies(&["xswaff=1; swaffx=2; swaff"]);
    assert!(!strip_cookie(&mut h, "swaff"));
    assert_eq!(h.get(COOKIE).unwrap(), "xswaff=1; swaffx=2; swaff");
}

#[test]
fn the_set_cookie_lines_carry_the_attributes() {
    assert_eq!(
        set_cookie_header("swaff", "v", IDLE, false),
        "swaff=v; Max-Age=1200; Path=/; HttpOnly; SameSite=Lax"
    );
    assert!(set_cookie_header("swaff", "v", IDLE, true).ends_with("; Secure"));
    assert_eq!(
        expire_cookie_header("swaff", false),
        "swaff=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
    );
}

#[test]
fn a_sensitive_cookie_header_stays_sensitive_when_stripped() {
    let mut value: http::HeaderValue = "a=1; swaff=x".parse().unwrap();
    value.set_sensitive(true);
    let mut h = HeaderMap::new();
    h.insert(COOKIE, value);
    assert!(strip_cookie(&mut h, "swaff"));
    assert_eq!(h.get(COOKIE).unwrap(), "a=1");
    assert!(h.get(COOKIE).unwrap().is_sensitive());
}
