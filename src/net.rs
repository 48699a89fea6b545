//! Client addresses and CIDR ranges: parsing Envoy's `source.address` and matching.

use crate::values::{from_value, not_accepted};
use ipnet::IpNet;
use serde::{Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// What an address text is accepted as, for error messages.
pub const ACCEPTED: &str = "an IPv4 or IPv6 address, or a CIDR such as 10.1.0.0/16";

/// An address range: an address and a prefix length, with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Parses `10.1.2.3` (a single address) or `10.1.0.0/16`. Host bits are cleared.
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let net = match text.split_once('/') {
            // ipnet takes any number of digits (`/008`); the control API, up to three.
            Some((_, prefix)) if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) => return None,
            Some(_) => text.parse::<IpNet>().ok()?,
            None => IpNet::from(text.parse::<IpAddr>().ok()?),
        };
        Some(Cidr(net.trunc()))
    }

    /// True when `addr` lies in this range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr)
    }

    /// The prefix length, so that narrower ranges can win over wider ones.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// The range's first address, its host bits cleared.
    pub fn network(&self) -> IpAddr {
        self.0.network()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
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

/// Parses an integer property of Envoy's (`destination.port`, `response.code`), which
/// arrives as a little-endian 64-bit integer.
pub fn parse_integer_property(bytes: &[u8]) -> Option<i64> {
    bytes.try_into().ok().map(i64::from_le_bytes)
}

/// Parses Envoy's `destination.port` property.
pub fn parse_port_property(bytes: &[u8]) -> Option<u16> {
    u16::try_from(parse_integer_property(bytes)?).ok()
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
        for text in ["", "10.1.2", "10.1.2.3/33", "10.1.2.3/", "10.1.2.3/a", "::1/129", "host", "10.1.2.3/-1", "10.0.0.0/0008", "10.0.0.0/ 8"] {
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
