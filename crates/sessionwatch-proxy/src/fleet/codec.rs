//! How a session record is written in the shared store: a binary key made of the configured
//! prefix and the 16-byte fingerprint (never the session's value), and a 12-byte value.
//!
//! The value is `version (4 bits) | flags (4 bits) || issuer tag (u32) || issued_at (s, u32) ||
//! last_seen - issued_at (s, u24)`, little-endian. Twelve bytes is what Redis stores inline in
//! its smallest allocation next to the key; at 22 bytes every session cost 16 B more. Seconds are
//! precise enough: idle timeouts are minutes, and ages are reported, not compared. A session seen
//! more than 194 days after its issue is written as seen then. The issuer is a tag every
//! replica derives alike from the backend's name (its `BackendId` is this replica's own), so
//! another replica reads it back to its own id, or to nothing when it does not know that backend
//! yet.

use sessionwatch_core::{Fingerprint, SessionRecord, Timestamp};
use sessionwatch_tower::BackendDirectory;

const VERSION: u8 = 2;
/// The length of an encoded value.
pub(crate) const VALUE_LEN: usize = 12;
/// The largest gap between issue and last use the value holds, in seconds.
const MAX_SEEN_AFTER: u32 = (1 << 24) - 1;

const PINNED: u8 = 1;
const LOST: u8 = 2;
const PRESENTED: u8 = 4;

/// The key of `fingerprint` under `prefix`.
pub(crate) fn key(prefix: &[u8], fingerprint: Fingerprint) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 16);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&fingerprint.0.to_be_bytes());
    key
}

/// The stored value of `record`.
pub(crate) fn encode(record: &SessionRecord, issuers: &dyn BackendDirectory) -> [u8; VALUE_LEN] {
    let mut flags = 0;
    for (set, flag) in [
        (record.pinned, PINNED),
        (record.lost, LOST),
        (record.presented, PRESENTED),
    ] {
        if set {
            flags |= flag;
        }
    }
    let secs = |t: Timestamp| u32::try_from(t.as_millis() / 1000).unwrap_or(u32::MAX);
    let issued = secs(record.issued_at);
    let after = secs(record.last_seen)
        .saturating_sub(issued)
        .min(MAX_SEEN_AFTER);
    let mut out = [0u8; VALUE_LEN];
    out[0] = VERSION << 4 | flags;
    out[1..5].copy_from_slice(&issuers.tag(record.issuer).to_le_bytes());
    out[5..9].copy_from_slice(&issued.to_le_bytes());
    out[9..12].copy_from_slice(&after.to_le_bytes()[..3]);
    out
}

/// The record a stored value says, if it is a value this version writes and its issuer is a
/// backend this replica knows. Anything else is no record: never a guess at one.
pub(crate) fn decode(value: &[u8], issuers: &dyn BackendDirectory) -> Option<SessionRecord> {
    let value: &[u8; VALUE_LEN] = value.try_into().ok()?;
    if value[0] >> 4 != VERSION {
        return None;
    }
    let flags = value[0] & 0x0f;
    let tag = u32::from_le_bytes([value[1], value[2], value[3], value[4]]);
    let issued = u64::from(u32::from_le_bytes([value[5], value[6], value[7], value[8]]));
    let after = u64::from(u32::from_le_bytes([value[9], value[10], value[11], 0]));
    Some(SessionRecord {
        issuer: issuers.resolve(tag)?,
        issued_at: Timestamp::from_millis(issued * 1000),
        last_seen: Timestamp::from_millis((issued + after) * 1000),
        pinned: flags & PINNED != 0,
        lost: flags & LOST != 0,
        presented: flags & PRESENTED != 0,
    })
}

#[cfg(test)]
mod tests {
    use sessionwatch_core::BackendId;

    use super::*;

    /// A farm of `.0` backends whose tags are their index plus 100.
    struct Farm(u16);

    impl BackendDirectory for Farm {
        fn tag(&self, id: BackendId) -> u32 {
            u32::from(id.0) + 100
        }

        fn resolve(&self, tag: u32) -> Option<BackendId> {
            let id = u16::try_from(tag.checked_sub(100)?).ok()?;
            (id < self.0).then_some(BackendId(id))
        }
    }

    const TWO: Farm = Farm(2);

    fn record() -> SessionRecord {
        SessionRecord {
            issuer: BackendId(1),
            issued_at: Timestamp::from_millis(1_767_261_600_000),
            last_seen: Timestamp::from_millis(1_767_261_660_000 + 999),
            pinned: true,
            lost: false,
            presented: true,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let value = encode(&record(), &TWO);
        assert_eq!(value.len(), VALUE_LEN);
        // To the second: the last use rounds down.
        let back = decode(&value, &TWO).unwrap();
        assert_eq!(
            back,
            SessionRecord {
                last_seen: Timestamp::from_millis(1_767_261_660_000),
                ..record()
            }
        );
        let plain = SessionRecord::issued(BackendId(0), Timestamp::from_millis(5_000));
        assert_eq!(decode(&encode(&plain, &TWO), &TWO), Some(plain));
        // Seen longer after its issue than the value holds: as seen at the limit.
        let old = SessionRecord {
            last_seen: Timestamp::from_millis(1_767_261_600_000 + 400 * 86_400_000),
            ..record()
        };
        let back = decode(&encode(&old, &TWO), &TWO).unwrap();
        assert_eq!(
            back.last_seen.as_millis() - back.issued_at.as_millis(),
            u64::from(MAX_SEEN_AFTER) * 1000
        );
    }

    #[test]
    fn an_unknown_issuer_a_short_value_or_another_version_is_no_record() {
        let value = encode(&record(), &TWO);
        assert_eq!(decode(&value, &Farm(1)), None);
        assert_eq!(value[1..5], 101u32.to_le_bytes(), "the tag, not the index");
        assert_eq!(decode(&value[..VALUE_LEN - 1], &TWO), None);
        let mut other = value;
        other[0] = 1 << 4;
        assert_eq!(decode(&other, &TWO), None);
        assert_eq!(decode(b"", &TWO), None);
    }

    #[test]
    fn the_key_is_the_prefix_and_the_fingerprint() {
        let f = Fingerprint(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let k = key(b"sw:", f);
        assert_eq!(k.len(), 3 + 16);
        assert!(k.starts_with(b"sw:\x01\x02"));
        assert!(k.ends_with(b"\x0f\x10"));
    }
}
