//! Headers a client could use to pose as someone: removed before anything is forwarded.
//!
//! Names are compared the way the laxest backend would: case-insensitive, with `_` and `-`
//! treated alike (GHSA-vjrc-mh2v-45x6: `X_Forwarded_User` slipped past a proxy that stripped
//! only `X-Forwarded-User`, and a backend that folds `_` into `-` believed it). Forwarding
//! headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `X-Original-URL`, ...) are kept only from
//! trusted proxies (GHSA-7x63-xv5r-3p2x: a client-sent `X-Forwarded-Uri` steered an auth
//! decision); ficus decides on the request it received, never on those headers.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::HeaderName;

/// An address range in CIDR form (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0..={max}"))?,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The form names are compared in: lower case, `_` as `-`.
pub fn normalize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Whether `name` equals `normalized` (lower case, `-`) once normalized, without allocating.
pub fn same_name(name: &str, normalized: &str) -> bool {
    name.len() == normalized.len() && same_prefix(name, normalized)
}

/// Whether `name` starts with `normalized` (lower case, `-`) once normalized, without
/// allocating.
fn same_prefix(name: &str, normalized: &str) -> bool {
    name.len() >= normalized.len()
        && name.bytes().zip(normalized.bytes()).all(|(c, n)| {
            let c = if c == b'_' {
                b'-'
            } else {
                c.to_ascii_lowercase()
            };
            c == n
        })
}

/// Forwarding headers only a trusted proxy may send (`name` in any case, `_` or `-`), compared
/// in place: this runs on every header of every request.
fn is_forwarding(name: &str) -> bool {
    same_prefix(name, "x-forwarded-")
        || [
            "forwarded",
            "x-real-ip",
            "x-original-url",
            "x-original-uri",
            "x-rewrite-url",
            "x-client-ip",
            "true-client-ip",
        ]
        .iter()
        .any(|forwarding| same_name(name, forwarding))
}

/// Removes every header whose normalized name is in `protected` (already normalized), and,
/// unless `trusted`, every forwarding header. Returns how many were removed.
pub fn strip(headers: &mut HeaderMap, protected: &[String], trusted: bool) -> usize {
    // Per request, on every header: compared in place, a list made only when one is found.
    let is_doomed = |name: &HeaderName| {
        let name = name.as_str();
        protected.iter().any(|p| same_name(name, p)) || (!trusted && is_forwarding(name))
    };
    if !headers.keys().any(is_doomed) {
        return 0;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_doomed(name))
        .cloned()
        .collect();
    let count = doomed.len();
    for name in doomed {
        headers.remove(name);
    }
    count
}

/// Removes every header in ficus's own namespace (`x-ficus-*`, in any case, `_` or `-`): ficus
/// sets those itself (the route, side and table it answers with, the identity it verified), so
/// one a client sent is a forgery, whether or not `[auth]` is on. Returns how many were removed.
pub fn strip_own(headers: &mut HeaderMap) -> usize {
    // Per request, on every header: compared in place, a list made only when one is found.
    let own = |name: &HeaderName| same_prefix(name.as_str(), "x-ficus-");
    if !headers.keys().any(own) {
        return 0;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|name| own(name)).cloned().collect();
    let count = doomed.len();
    for name in doomed {
        headers.remove(name);
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains("10.1.2.3".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        assert!(lan.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten").is_err());
    }

    #[test]
    fn strips_every_variant() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-ficus-subject",
            "X-Ficus-Subject",
            "x_ficus_subject",
            "X_FICUS_SUBJECT",
            "x-ficus_subject",
            "x-forwarded-for",
            "X_Forwarded_Uri",
            "forwarded",
            "x-real-ip",
            "x-keep",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        let protected = vec![normalize("X-Ficus-Subject")];
        let mut trusted = headers.clone();
        strip(&mut trusted, &protected, true);
        assert!(trusted.contains_key("x-forwarded-for") && trusted.contains_key("x_forwarded_uri"));
        assert!(!trusted.contains_key("x_ficus_subject"));
        strip(&mut headers, &protected, false);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
    }

    #[test]
    fn ficus_own_namespace_is_stripped_in_every_spelling() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-ficus-route",
            "X-Ficus-Side",
            "x_ficus_table",
            "X_FICUS-anything",
            "x-ficus",
            "x-ficusx",
            "x-keep",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        assert_eq!(strip_own(&mut headers), 4);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["x-ficus", "x-ficusx", "x-keep"]);
    }
}
