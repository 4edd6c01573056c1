//! `[listen] trusted_proxies` and `proxy_protocol`: which peers' forwarded headers (and PROXY
//! protocol headers) the proxy believes.

use std::net::IpAddr;

use super::Issues;
use super::fields::p;
use super::file::FileConfig;

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    /// The block's first address (no bits set past the prefix).
    base: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl Cidr {
    /// `text` as a block; `Err` says what is wrong with it.
    fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, n)) => (a, Some(n)),
            None => (text, None),
        };
        let base: IpAddr = addr.parse().map_err(|_| {
            format!("{text:?} is not a CIDR: write e.g. \"10.0.0.0/8\", \"2001:db8::/32\" or one address")
        })?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8`'s parser would take "+8".
            Some(n) => match n.parse::<u8>() {
                Ok(len) if len <= max && n.bytes().all(|b| b.is_ascii_digit()) => len,
                _ => {
                    return Err(format!(
                        "{text:?}: the prefix length must be from 0 to {max}"
                    ));
                }
            },
        };
        let block = Self { base, prefix };
        if block.masked(base) != bits(base) {
            let first = block.first();
            return Err(format!(
                "{text:?} has bits set past the /{prefix}: did you mean \"{first}/{prefix}\"?"
            ));
        }
        Ok(block)
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.base.is_ipv4() && self.masked(ip) == bits(self.base)
    }

    fn mask(&self) -> u128 {
        let host_bits = u32::from(if self.base.is_ipv4() { 32 } else { 128 } - self.prefix);
        let all = if self.base.is_ipv4() {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        // A shift by all 128 bits (an IPv6 /0) overflows: such a block keeps no bit.
        all & all.checked_shl(host_bits).unwrap_or(0)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        bits(ip) & self.mask()
    }

    fn first(&self) -> IpAddr {
        let v = self.masked(self.base);
        match self.base {
            // Masked to 32 bits above: the conversion keeps every bit.
            IpAddr::V4(_) => IpAddr::from(u32::try_from(v).unwrap_or(0).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(v.to_be_bytes()),
        }
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The peers whose forwarded headers are believed (`listen.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// What the listener believes of its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ForwardedConfig {
    /// Peers whose `X-Forwarded-*` (and PROXY protocol headers) are believed.
    pub trusted: TrustedProxies,
    /// Every connection starts with a PROXY protocol (v1 or v2) header, from a trusted proxy.
    pub proxy_protocol: bool,
}

/// `[listen] trusted_proxies` and `proxy_protocol`, checked together.
pub(super) fn forwarded(issues: &mut Issues, raw: &FileConfig) -> ForwardedConfig {
    let listen = raw.listen.as_ref();
    let mut trusted = Vec::new();
    for (i, text) in listen
        .and_then(|l| l.trusted_proxies.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        match Cidr::parse(text) {
            Ok(c) => trusted.push(c),
            Err(why) => issues.push(p("listen").key("trusted_proxies").index(i), why),
        }
    }
    let proxy_protocol = listen.and_then(|l| l.proxy_protocol).unwrap_or(false);
    let no_list = listen
        .and_then(|l| l.trusted_proxies.as_ref())
        .is_none_or(Vec::is_empty);
    if proxy_protocol && no_list {
        issues.push(
            p("listen").key("proxy_protocol"),
            "needs trusted_proxies: the load balancers allowed to send PROXY headers",
        );
    }
    ForwardedConfig {
        trusted: TrustedProxies(trusted),
        proxy_protocol,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn blocks_hold_their_addresses_and_no_others() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains(ip("10.255.1.2")));
        assert!(!ten.contains(ip("11.0.0.1")));
        // A dual-stack listener sees IPv4 clients as mapped IPv6 addresses.
        assert!(ten.contains(ip("::ffff:10.1.2.3")));
        assert!(!ten.contains(ip("::a01:203")));
        let one = cidr("127.0.0.1");
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("::/0").contains(ip("::1")));
        assert!(cidr("::1/128").contains(ip("::1")));
    }

    #[test]
    fn a_bad_block_is_refused_with_why() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "ten",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = Cidr::parse("10.1.2.3/8").unwrap_err();
        assert!(err.contains("\"10.0.0.0/8\""), "{err}");
    }

    fn parse(listen: &str) -> Result<Config, String> {
        let toml = format!(
            "[listen]\n{listen}\n[session]\ncookies = [{{ name = \"sid\" }}]\n\
             [[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n"
        );
        Config::parse(&toml, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_listen_section_names_the_bad_entry() {
        let err = parse("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300/32\"]").unwrap_err();
        assert!(err.contains("t.toml:2:"), "{err}");
        assert!(err.contains("listen.trusted_proxies[1]"), "{err}");
        let ok = parse("trusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\nproxy_protocol = true")
            .unwrap();
        assert!(ok.forwarded.proxy_protocol);
        assert!(ok.forwarded.trusted.contains("fd12::1".parse().unwrap()));
        assert!(!ok.forwarded.trusted.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies() {
        for listen in [
            "proxy_protocol = true",
            "proxy_protocol = true\ntrusted_proxies = []",
        ] {
            let err = parse(listen).unwrap_err();
            assert!(err.contains("listen.proxy_protocol"), "{err}");
        }
        let default = parse("").unwrap();
        assert_eq!(default.forwarded, ForwardedConfig::default());
    }
}
