//! Client addresses and CIDR ranges: parsing Envoy's `source.address` and matching.

use crate::values::{from_value, not_accepted};
use serde::{Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// What an address text is accepted as, for error messages.
pub const ACCEPTED: &str = "an IPv4 or IPv6 address, or a CIDR such as 10.1.0.0/16";

/// An address range: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.1.2.3` (a single address) or `10.1.0.0/16`. Host bits are cleared.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse::<u8>().ok()?
            }
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then(|| Cidr { network: mask(addr, prefix), prefix })
    }

    /// True when `addr` lies in this range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }

    /// The prefix length, so that narrower ranges can win over wider ones.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Written as its text, `10.0.0.0/8`.
impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl TryFrom<&serde_json::Value> for Cidr {
    type Error = String;
    fn try_from(value: &serde_json::Value) -> Result<Cidr, String> {
        let Some(text) = value.as_str() else { return Err(not_accepted(value, "a string")) };
        Cidr::parse(text).ok_or_else(|| not_accepted(value, ACCEPTED))
    }
}
from_value!(Cidr);

/// The loopback ranges, the control route's default audience.
pub fn loopback() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"].iter().filter_map(|c| Cidr::parse(c)).collect()
}

/// Parses Envoy's `source.address` property: `127.0.0.1:5000`, `[::1]:5000`, or a bare address.
pub fn parse_socket_address(text: &str) -> Option<IpAddr> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    let addr: IpAddr = text.parse().ok()?;
    Some(match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    })
}

/// Parses Envoy's `destination.port` property, which arrives as a little-endian 64-bit
/// integer.
pub fn parse_port_property(bytes: &[u8]) -> Option<u16> {
    let raw: [u8; 8] = bytes.try_into().ok()?;
    u16::try_from(i64::from_le_bytes(raw)).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn port_property() {
        assert_eq!(parse_port_property(&8282i64.to_le_bytes()), Some(8282));
        assert_eq!(parse_port_property(&(-1i64).to_le_bytes()), None);
        assert_eq!(parse_port_property(&70_000i64.to_le_bytes()), None);
        assert_eq!(parse_port_property(b"8282"), None);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_address_and_ranges() {
        let one = Cidr::parse("10.1.2.3").unwrap();
        assert_eq!(one.to_string(), "10.1.2.3/32");
        assert!(one.contains(ip("10.1.2.3")));
        assert!(!one.contains(ip("10.1.2.4")));
        let range = Cidr::parse("10.1.2.99/24");
        assert_eq!(range.map(|c| c.to_string()), Some("10.1.2.0/24".into()));
        assert!(range.is_some_and(|c| c.contains(ip("10.1.2.200")) && !c.contains(ip("10.1.3.1"))));
        assert!(Cidr::parse("::1").is_some_and(|c| c.contains(ip("::1")) && !c.contains(ip("127.0.0.1"))));
        assert!(Cidr::parse("0.0.0.0/0").is_some_and(|c| c.contains(ip("8.8.8.8"))));
    }

    #[test]
    fn refuses_bad_addresses() {
        for text in ["", "10.1.2", "10.1.2.3/33", "10.1.2.3/", "10.1.2.3/a", "::1/129", "host", "10.1.2.3/-1"] {
            assert_eq!(Cidr::parse(text), None, "{text}");
        }
    }

    #[test]
    fn socket_addresses_from_envoy() {
        assert_eq!(parse_socket_address("127.0.0.2:5000"), Some(ip("127.0.0.2")));
        assert_eq!(parse_socket_address("[::1]:5000"), Some(ip("::1")));
        assert_eq!(parse_socket_address("10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(parse_socket_address("::ffff:10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(parse_socket_address("nonsense"), None);
    }
}
