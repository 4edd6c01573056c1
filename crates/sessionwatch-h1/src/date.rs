//! The `Date` an answer carries when its origin gave none (RFC 9110 section 6.6.1), formatted at
//! most once a second per thread, so that writing it is a copy of 29 bytes.

use std::cell::Cell;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An IMF-fixdate is always this long: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) const LEN: usize = 29;

/// The epoch: what a clock set before it, or a format that fell short, gives.
const EPOCH: [u8; LEN] = *b"Thu, 01 Jan 1970 00:00:00 GMT";

/// The last second an IMF-fixdate can say (9999-12-31T23:59:59Z); httpdate panics past it.
const LAST: u64 = 253_402_300_799;

thread_local! {
    static CACHED: Cell<(u64, [u8; LEN])> = const { Cell::new((u64::MAX, EPOCH)) };
}

/// Now, as an HTTP date.
pub(crate) fn now() -> [u8; LEN] {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    at(secs)
}

/// `secs` after the epoch as an HTTP date, from this thread's cache when it is the second
/// asked for last.
fn at(secs: u64) -> [u8; LEN] {
    CACHED.with(|cached| {
        let (last, date) = cached.get();
        if last == secs {
            return date;
        }
        let date = format(secs);
        cached.set((secs, date));
        date
    })
}

fn format(secs: u64) -> [u8; LEN] {
    let time = UNIX_EPOCH + Duration::from_secs(secs.min(LAST));
    let mut date = [0u8; LEN];
    let mut room = &mut date[..];
    match write!(room, "{}", httpdate::HttpDate::from(time)) {
        Ok(()) if room.is_empty() => date,
        _ => EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates_of_the_second_asked_for() {
        assert_eq!(&at(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&at(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&at(784_111_778), b"Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(at(0), EPOCH);
        // A clock gone wild gives the last date there is, not a panic.
        assert_eq!(&at(u64::MAX - 1), b"Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn now_reads_the_clock() {
        let date = now();
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&date).unwrap()).unwrap();
        let skew = SystemTime::now().duration_since(parsed).unwrap();
        assert!(skew < Duration::from_secs(5), "{skew:?}");
    }
}
