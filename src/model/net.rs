//! Client addresses and CIDR ranges: parsing Envoy's `source.address` and matching.

use crate::model::values::{from_given, Given};
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

impl TryFrom<Given> for Cidr {
    type Error = String;
    fn try_from(given: Given) -> Result<Cidr, String> {
        let Some(text) = given.as_str() else { return Err(given.refused("a string")) };
        Cidr::parse(text).ok_or_else(|| given.refused(ACCEPTED))
    }
}
from_given!(Cidr);

/// The loopback ranges, the control route's default audience.
pub fn loopback() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"].iter().filter_map(|c| Cidr::parse(c)).collect()
}

/// Parses Envoy's `source.address` property: `127.0.0.1:5000`, `[::1]:5000`, or a bare address.
pub fn parse_socket_address(text: &str) -> Option<IpAddr> {
    parse_address_and_port(text).map(|(addr, _)| addr)
}

/// An address as an IPv4 one where it is an IPv4-mapped IPv6 address.
fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// An address and its port (`None` for a bare address).
fn parse_address_and_port(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some((unmapped(addr.ip()), Some(addr.port())));
    }
    text.parse().ok().map(|addr| (unmapped(addr), None))
}

/// Why a request has no client address the filter may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoClient {
    /// Envoy gave no IP address (a Unix socket, an internal listener).
    Missing,
    /// Envoy took the address from `X-Forwarded-For` (it comes with port 0): a listener
    /// without `use_remote_address`, which lets any client name any address.
    Forwarded,
}

/// The request's client: the TCP peer, from Envoy's `source.address`. An address Envoy
/// took from `X-Forwarded-For` has port 0 (a TCP peer never has), and no other property
/// gives the peer there, so such an address is refused rather than trusted.
///
/// With `trusted_hops` (the plugin's `xff_num_trusted_hops`) above 0, the listener is
/// behind that many trusted proxies, and the client is read from `X-Forwarded-For` as
/// Envoy's own `xff_num_trusted_hops` reads it: Envoy (with `use_remote_address`) has
/// appended the peer, so past that entry `trusted_hops - 1` more are skipped and the
/// next one is the client. Where the header has too few entries, or that entry is not an
/// address, the peer is the client, as in Envoy. `forwarded_for` is read only then.
pub fn client(source: Option<&str>, trusted_hops: u32, forwarded_for: impl FnOnce() -> Option<String>) -> Result<IpAddr, NoClient> {
    let (peer, port) = source.and_then(parse_address_and_port).ok_or(NoClient::Missing)?;
    if port == Some(0) {
        return Err(NoClient::Forwarded);
    }
    if trusted_hops == 0 {
        return Ok(peer);
    }
    let header = forwarded_for().unwrap_or_default();
    let entries: Vec<&str> = header.split(',').map(|e| e.trim_matches([' ', '\t'])).collect();
    // Counted without an addition, which could overflow a 32-bit usize (Wasm's).
    let at = entries.len().checked_sub(1).and_then(|last| last.checked_sub(trusted_hops as usize));
    Ok(at.and_then(|i| entries.get(i)?.parse::<IpAddr>().ok()).map_or(peer, unmapped))
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
#[allow(clippy::unwrap_used, clippy::panic)]
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
    fn the_client_is_the_peer_never_a_forwarded_address() {
        let none = || -> Option<String> { panic!("X-Forwarded-For is read only with trusted hops") };
        assert_eq!(client(Some("127.0.0.2:5000"), 0, none), Ok(ip("127.0.0.2")));
        assert_eq!(client(Some("[::1]:5000"), 0, none), Ok(ip("::1")));
        assert_eq!(client(Some("[::ffff:10.0.0.1]:5000"), 0, none), Ok(ip("10.0.0.1")));
        // What Envoy gives from X-Forwarded-For on a listener without use_remote_address.
        assert_eq!(client(Some("127.0.0.1:0"), 0, none), Err(NoClient::Forwarded));
        assert_eq!(client(Some("127.0.0.1:0"), 2, none), Err(NoClient::Forwarded));
        assert_eq!(client(None, 0, none), Err(NoClient::Missing));
        assert_eq!(client(Some("/tmp/envoy.sock"), 0, none), Err(NoClient::Missing));
        assert_eq!(client(Some("envoy://internal"), 1, none), Err(NoClient::Missing));
    }

    #[test]
    fn trusted_hops_read_forwarded_for_as_envoy_does() {
        let xff = |h: &'static str| move || Some(h.to_string());
        let peer = Some("10.9.9.9:4000");
        // One proxy: its entry (the client it saw) comes before the one Envoy appended.
        assert_eq!(client(peer, 1, xff("203.0.113.7,10.9.9.9")), Ok(ip("203.0.113.7")));
        assert_eq!(client(peer, 1, xff("198.51.100.1, 203.0.113.7,10.9.9.9")), Ok(ip("203.0.113.7")));
        assert_eq!(client(peer, 2, xff("198.51.100.1, 203.0.113.7,10.9.9.9")), Ok(ip("198.51.100.1")));
        assert_eq!(client(peer, 1, xff("2001:db8::1,\t10.9.9.9")), Ok(ip("2001:db8::1")));
        // Too few entries, a bad entry, no header: the peer, as in Envoy.
        assert_eq!(client(peer, 2, xff("203.0.113.7,10.9.9.9")), Ok(ip("10.9.9.9")));
        assert_eq!(client(peer, 1, xff("garbage,10.9.9.9")), Ok(ip("10.9.9.9")));
        assert_eq!(client(peer, 1, xff("10.9.9.9")), Ok(ip("10.9.9.9")));
        assert_eq!(client(peer, 1, || None), Ok(ip("10.9.9.9")));
        assert_eq!(client(peer, u32::MAX, xff("1.2.3.4,10.9.9.9")), Ok(ip("10.9.9.9")));
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
