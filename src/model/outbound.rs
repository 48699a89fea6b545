//! The outbound direction: a listener that sees the app's own calls to its dependencies
//! (`direction: outbound` in its configuration) applies only the rules that say
//! `"direction": "outbound"`, which can match the destination by host (`match.host`, read
//! from `:authority`) or address (`match.destinations`). One policy serves both directions:
//! `?host=payments&status=503` (or `?dest=10.0.0.0/8&...`) on the control route is the
//! client binding's twin, stored as the outbound rule for that one destination.

use crate::model::net::Cidr;
use crate::model::values::{from_given, from_object, Given, Pattern, Text};
use serde::{Deserialize, Serialize, Serializer};

/// Which side of the app a listener (or a rule) is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Requests that reach the app (the default, and every rule without `direction`).
    #[default]
    Inbound,
    /// The app's own requests to its dependencies.
    Outbound,
}

impl Direction {
    /// True for the default direction, which the document does not write out.
    pub fn is_inbound(&self) -> bool {
        *self == Direction::Inbound
    }
}

impl Serialize for Direction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.is_inbound() { "inbound" } else { "outbound" })
    }
}

impl TryFrom<Given> for Direction {
    type Error = String;
    fn try_from(given: Given) -> Result<Direction, String> {
        match given.as_str() {
            Some("inbound") => Ok(Direction::Inbound),
            Some("outbound") => Ok(Direction::Outbound),
            _ => Err(given.refused("\"inbound\" or \"outbound\"")),
        }
    }
}
from_given!(Direction);

/// How the destination host (`:authority` without its port, lowercase) is matched.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostMatch {
    /// The whole host, such as `payments`.
    Exact(String),
    /// Its end, such as `.svc.cluster.local`.
    Suffix(String),
    /// A regular expression over the whole host.
    Regex(Pattern),
}

/// A host condition as written: one of its forms.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    exact: Option<Text>,
    suffix: Option<Text>,
    regex: Option<Pattern>,
}

impl TryFrom<HostSpec> for HostMatch {
    type Error = &'static str;
    fn try_from(spec: HostSpec) -> Result<HostMatch, &'static str> {
        match (spec.exact, spec.suffix, spec.regex) {
            (Some(Text(h)), None, None) => Ok(HostMatch::Exact(h.to_ascii_lowercase())),
            (None, Some(Text(s)), None) => Ok(HostMatch::Suffix(s.to_ascii_lowercase())),
            (None, None, Some(r)) => Ok(HostMatch::Regex(r)),
            _ => Err("give exactly one of exact, suffix, regex"),
        }
    }
}
from_object!(HostMatch, HostSpec);

impl HostMatch {
    /// True when `authority` (`payments:8080`, `[::1]:80`, `Payments`) names a matching host.
    pub fn matches(&self, authority: &str) -> bool {
        let host = host_of(authority).to_ascii_lowercase();
        match self {
            HostMatch::Exact(h) => host == *h,
            HostMatch::Suffix(s) => host.ends_with(s.as_str()),
            HostMatch::Regex(r) => r.matches(&host),
        }
    }
}

/// The host part of an authority: without its port, and without the brackets of an IPv6
/// address.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// One destination of the control route's `host=` or `dest=`.
#[derive(Clone, Debug, PartialEq)]
pub enum Destination {
    /// Calls whose host is exactly this one.
    Host(String),
    /// Calls to an address in this range.
    Addresses(Cidr),
}

/// What `host=` accepts.
pub const HOST_ACCEPTED: &str = "a host name such as payments or payments.shop.svc.cluster.local (no port)";

impl Destination {
    /// Reads `host=`: letters, digits, '.', '-' and '_', lowercased.
    pub fn host(text: &str) -> Option<Destination> {
        let ok = (1..=253).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
        ok.then(|| Destination::Host(text.to_ascii_lowercase()))
    }

}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn host(json: &str) -> HostMatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_host_is_matched_without_its_port_and_case() {
        let exact = host(r#"{"exact": "Payments"}"#);
        for yes in ["payments", "payments:8080", "PAYMENTS:80"] {
            assert!(exact.matches(yes), "{yes}");
        }
        for no in ["payments.shop", "xpayments", "catalog:8080", ""] {
            assert!(!exact.matches(no), "{no}");
        }
        let suffix = host(r#"{"suffix": ".svc.cluster.local"}"#);
        assert!(suffix.matches("payments.shop.svc.cluster.local:8080"));
        assert!(!suffix.matches("payments"));
        let regex = host(r#"{"regex": "pay(ments|pal)"}"#);
        assert!(regex.matches("paypal:443") && regex.matches("payments") && !regex.matches("payments2"));
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("10.0.0.1:8080"), "10.0.0.1");
        assert_eq!(host_of("payments:"), "payments");
    }

    #[test]
    fn a_host_condition_needs_exactly_one_form() {
        for bad in [r#"{}"#, r#"{"exact": "a", "suffix": "b"}"#, r#"{"prefix": "a"}"#, r#"{"regex": "("}"#, r#""payments""#] {
            assert!(serde_json::from_str::<HostMatch>(bad).is_err(), "{bad}");
        }
        // The error names the path of the bad value inside the host condition.
        for (host, error) in [
            (r#"{"exact": 7}"#, "rules[1].match.host.exact: 7 is a number; expected a string"),
            (r#"{"regex": "("}"#, r#"rules[1].match.host.regex: "(" is not accepted; expected a regular expression"#),
            (r#"{"prefix": "a"}"#, "rules[1].match.host.prefix: unknown key; accepted: exact, suffix, regex"),
            (r#"{"exact": "a", "suffix": "b"}"#, "rules[1].match.host: give exactly one of exact, suffix, regex"),
            (r#""payments""#, r#"rules[1].match.host: "payments" is a string; expected an object"#),
        ] {
            let rule = format!(r#"{{"direction": "outbound", "match": {{"host": {host}}}, "fault": {{"abort": {{"status": 503}}}}}}"#);
            let doc = format!(r#"{{"rules": [{{"fault": {{"abort": {{"status": 500}}}}}}, {rule}]}}"#);
            let message = crate::model::document::parse(doc.as_bytes(), 0).unwrap_err().to_string();
            assert!(message.starts_with(error), "{host}: {message}");
        }
        let doc = br#"{"rules": [{"direction": "sideways", "fault": {"abort": {"status": 503}}}]}"#;
        let message = crate::model::document::parse(doc, 0).unwrap_err().to_string();
        assert!(message.starts_with("rules[0].direction: "), "{message}");
        assert!(message.contains(r#""inbound" or "outbound""#), "{message}");
    }
}
