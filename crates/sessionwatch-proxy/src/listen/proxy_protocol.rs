//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a load balancer such as AWS
//! NLB or HAProxy puts before a connection's first bytes to say whom the connection is from.
//! Sans-I/O: [`parse`] looks at the bytes read so far and says whether they hold a whole header,
//! could still become one, or never will.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A version 2 header's fixed start.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header's start.
const V1_START: &[u8] = b"PROXY ";
/// The longest version 1 header, `\r\n` included (the spec's limit).
const V1_MAX: usize = 107;
/// The longest version 2 header taken, addresses and TLVs included. The format allows 64 KiB;
/// what load balancers send (addresses, a VPC endpoint id, a TLS summary) is a few hundred
/// bytes, and this bounds what a connection may make the proxy hold before its first request.
pub(crate) const V2_MAX: usize = 16 + 1024;

/// A whole header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The connection's real source, or `None` when the header gives none to use (a v2 `LOCAL`
    /// connection, such as the balancer's own health check; v1 `UNKNOWN`; a v2 family other
    /// than TCP over IPv4 or IPv6): then the connection's own peer address stands.
    pub source: Option<SocketAddr>,
    /// The header's length: the connection's own bytes start after it.
    pub len: usize,
}

/// What the bytes read so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole header.
    Header(Header),
    /// A header's start: read more.
    Partial,
    /// Not a header, nor the start of one.
    Invalid(&'static str),
}

/// Read a header from the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    if starts_like(buf, V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Parsed::Partial;
        }
        return v2(buf);
    }
    if starts_like(buf, V1_START) {
        if buf.len() < V1_START.len() {
            return Parsed::Partial;
        }
        return v1(buf);
    }
    Parsed::Invalid("not a PROXY protocol header")
}

/// Whether `buf` and `start` agree on their common length.
fn starts_like(buf: &[u8], start: &[u8]) -> bool {
    let n = buf.len().min(start.len());
    buf[..n] == start[..n]
}

/// `PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n`, or `PROXY UNKNOWN ...\r\n`.
fn v1(buf: &[u8]) -> Parsed {
    let within = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = within.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("a version 1 header longer than 107 bytes")
        } else {
            Parsed::Partial
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[V1_START.len()..end]) else {
        return Parsed::Invalid("a version 1 header that is not ASCII");
    };
    let mut fields = line.split(' ');
    let family = fields.next();
    if family == Some("UNKNOWN") {
        // The rest may be anything, and is ignored (the spec says so).
        return Parsed::Header(Header { source: None, len });
    }
    let v4 = match family {
        Some("TCP4") => true,
        Some("TCP6") => false,
        _ => return Parsed::Invalid("a version 1 header with an unknown protocol"),
    };
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Parsed::Invalid("a version 1 header without its four fields");
    };
    let (Some(ip), Some(_), Some(port), Some(_)) = (
        v1_ip(src, v4),
        v1_ip(dst, v4),
        v1_port(sport),
        v1_port(dport),
    ) else {
        return Parsed::Invalid("a version 1 header with a bad address or port");
    };
    Parsed::Header(Header {
        source: Some(SocketAddr::new(ip, port)),
        len,
    })
}

fn v1_ip(text: &str, v4: bool) -> Option<IpAddr> {
    if v4 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// Decimal digits only (Rust's parser would take a `+`), no leading zero, at most 65535.
fn v1_port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    if digits && canonical {
        text.parse().ok()
    } else {
        None
    }
}

/// The binary header: signature, version and command, family and transport, length, then the
/// addresses and TLVs.
fn v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Partial;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("a version 2 signature with another version");
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Parsed::Invalid("a version 2 header longer than the proxy takes");
    }
    if buf.len() < len {
        return Parsed::Partial;
    }
    let body = &buf[16..len];
    let addresses = match (family, body.len()) {
        (0x1, 12..) => 12,
        (0x2, 36..) => 36,
        (0x3, 216..) => 216,
        (0x0, _) => 0,
        (0x1..=0x3, _) => return Parsed::Invalid("a version 2 header too short for its addresses"),
        _ => return Parsed::Invalid("a version 2 header with an unknown address family"),
    };
    if !tlvs_fit(&body[addresses..]) {
        return Parsed::Invalid("a version 2 header whose TLVs overrun it");
    }
    let source = match (command, family, transport) {
        // LOCAL: the balancer's own connection; whatever addresses it carries are ignored.
        (0x0, _, _) => None,
        (0x1, 0x1, 0x1) => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (0x1, 0x2, 0x1) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        // UNSPEC, UNIX, or a transport other than TCP: nothing the proxy can use as a client.
        (0x1, _, _) => None,
        _ => return Parsed::Invalid("a version 2 header with an unknown command"),
    };
    Parsed::Header(Header { source, len })
}

/// Whether `tlvs` is whole TLVs (type, 16-bit length, value) end to end.
fn tlvs_fit(mut tlvs: &[u8]) -> bool {
    while !tlvs.is_empty() {
        let [_, hi, lo, rest @ ..] = tlvs else {
            return false;
        };
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        if rest.len() < n {
            return false;
        }
        tlvs = &rest[n..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(source: Option<&str>, len: usize) -> Parsed {
        Parsed::Header(Header {
            source: source.map(|s| s.parse().unwrap()),
            len,
        })
    }

    /// A v2 header: command, family and transport byte, the body after the length.
    fn v2_bytes(command: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn inet4_body() -> Vec<u8> {
        let mut b = vec![203, 0, 113, 9, 10, 0, 0, 1];
        b.extend_from_slice(&51000u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    #[test]
    fn version_1_gives_the_source_and_where_the_request_starts() {
        let line = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(line), header(Some("203.0.113.9:51000"), 43));
        let line = b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 443\r\n";
        assert_eq!(parse(line), header(Some("[2001:db8::9]:51000"), line.len()));
        let line = b"PROXY UNKNOWN whatever goes\r\nGET";
        assert_eq!(parse(line), header(None, 29));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), header(None, 15));
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let mut v2 = v2_bytes(0x1, 0x11, &inet4_body());
        let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\n".to_vec();
        for whole in [v1, std::mem::take(&mut v2)] {
            for n in 0..whole.len() {
                assert_eq!(parse(&whole[..n]), Parsed::Partial, "{n} bytes");
            }
            assert!(matches!(parse(&whole), Parsed::Header(_)));
        }
    }

    #[test]
    fn malformed_version_1_headers_are_invalid() {
        for bad in [
            &b"PROXY TCP4 203.0.113.9 10.0.0.1 51000\r\n"[..],
            b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443 x\r\n",
            b"PROXY TCP4 2001:db8::9 10.0.0.1 51000 443\r\n",
            b"PROXY TCP6 203.0.113.9 2001:db8::1 51000 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 +5100 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 0443 443\r\n",
            b"PROXY TCP4  203.0.113.9 10.0.0.1 51000 443\r\n",
            b"PROXY UDP4 203.0.113.9 10.0.0.1 51000 443\r\n",
            b"PROXY TCP4 203.0.113.\xff 10.0.0.1 51000 443\r\n",
            b"PROXY \r\n",
            b"GET / HTTP/1.1\r\n",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX\n",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_version_1_line_past_107_bytes_is_invalid() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
        long.truncate(V1_MAX - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), header(None, V1_MAX));
    }

    #[test]
    fn version_2_gives_the_source_and_skips_tlvs() {
        let mut body = inet4_body();
        // PP2_TYPE_AUTHORITY and an AWS VPC endpoint id.
        body.extend_from_slice(&[0x02, 0, 4]);
        body.extend_from_slice(b"shop");
        body.extend_from_slice(&[0xea, 0, 5, 0x01, b'v', b'p', b'c', b'e']);
        let mut h = v2_bytes(0x1, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&h), header(Some("203.0.113.9:51000"), len));

        let mut v6 = Vec::new();
        v6.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&51000u16.to_be_bytes());
        v6.extend_from_slice(&443u16.to_be_bytes());
        let h = v2_bytes(0x1, 0x21, &v6);
        assert_eq!(parse(&h), header(Some("[2001:db8::9]:51000"), h.len()));
    }

    #[test]
    fn version_2_without_a_usable_source_keeps_the_peer() {
        // LOCAL, with or without addresses.
        let h = v2_bytes(0x0, 0x00, &[]);
        assert_eq!(parse(&h), header(None, 16));
        let h = v2_bytes(0x0, 0x11, &inet4_body());
        assert_eq!(parse(&h), header(None, h.len()));
        // UNIX sockets, UNSPEC, and UDP.
        let h = v2_bytes(0x1, 0x31, &[0; 216]);
        assert_eq!(parse(&h), header(None, h.len()));
        let h = v2_bytes(0x1, 0x00, &[]);
        assert_eq!(parse(&h), header(None, 16));
        let h = v2_bytes(0x1, 0x12, &inet4_body());
        assert_eq!(parse(&h), header(None, h.len()));
    }

    #[test]
    fn malformed_version_2_headers_are_invalid() {
        let mut wrong_version = v2_bytes(0x1, 0x11, &inet4_body());
        wrong_version[12] = 0x11;
        let mut overrun = inet4_body();
        overrun.extend_from_slice(&[0x02, 0, 9, b'x']);
        let mut stub = inet4_body();
        stub.push(0x02);
        for bad in [
            wrong_version,
            v2_bytes(0x2, 0x11, &inet4_body()),
            v2_bytes(0x1, 0x41, &inet4_body()),
            v2_bytes(0x1, 0x11, &inet4_body()[..11]),
            v2_bytes(0x1, 0x21, &[0; 35]),
            v2_bytes(0x1, 0x11, &overrun),
            v2_bytes(0x1, 0x11, &stub),
        ] {
            assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn an_oversized_version_2_header_is_refused_before_it_is_read() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&u16::try_from(V2_MAX - 15).unwrap().to_be_bytes());
        assert!(matches!(parse(&h), Parsed::Invalid(_)));
        // The longest taken: the addresses and one padding TLV (PP2_TYPE_NOOP) filling the rest.
        let mut body = inet4_body();
        let pad = V2_MAX - 16 - body.len() - 3;
        body.push(0x04);
        body.extend_from_slice(&u16::try_from(pad).unwrap().to_be_bytes());
        body.resize(V2_MAX - 16, 0);
        let h = v2_bytes(0x1, 0x11, &body);
        assert_eq!(parse(&h), header(Some("203.0.113.9:51000"), V2_MAX));
    }

    #[test]
    fn no_input_panics() {
        // Every short input and a spread of bytes after each signature: only verdicts, never a
        // panic or an out-of-range length.
        let mut state = 0x9e37_79b9_u32;
        for n in 0..4000 {
            let mut buf = if n % 2 == 0 {
                V2_SIGNATURE.to_vec()
            } else {
                V1_START.to_vec()
            };
            for _ in 0..(n % 120) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                buf.push(state.to_le_bytes()[0]);
            }
            if let Parsed::Header(h) = parse(&buf) {
                assert!(h.len <= buf.len());
            }
        }
    }
}
