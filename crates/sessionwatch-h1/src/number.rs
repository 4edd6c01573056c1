//! The numbers of HTTP/1.1 framing, both ways: `Content-Length` in decimal, chunk sizes in
//! hexadecimal. Written without formatting machinery (no allocation), read strictly (digits only,
//! no sign, no blanks, no overflow).

/// Append `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A `Content-Length` value: digits only, at most 19 of them (so it fits a `u64`).
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Append `n` in lower-case hexadecimal (a chunk size).
pub(crate) fn push_hex(out: &mut Vec<u8>, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((n >> (4 * i)) & 0xf) as usize]);
    }
}

/// A chunk size: hex digits in either case, at most 15 of them (so any size fits a `u64` with
/// room to count in).
pub(crate) fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(n * 16 + u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_and_read() {
        for n in [0u64, 7, 10, 15, 16, 255, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            out.clear();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
        assert_eq!(parse_decimal(b"0042"), Some(42));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1 ",
            b"12345678901234567890",
            b"0x1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn chunk_sizes_read_back_what_was_written() {
        for n in [0u64, 1, 9, 10, 0xabc, 0xfff_ffff_ffff_ffff] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(parse_hex(&out), Some(n));
            assert_eq!(parse_hex(out.to_ascii_uppercase().as_slice()), Some(n));
        }
        assert_eq!(parse_hex(b"000000000000010"), Some(16));
        for bad in [&b""[..], b"1234567890abcdef", b"-1", b"1 ", b"0x1", b"g"] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
    }
}
