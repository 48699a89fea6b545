//! The outbound direction: a listener that sees the app's own calls to its dependencies
//! (`direction: outbound` in its configuration) applies only the rules that say
//! `"direction": "outbound"`, which can match the destination by host (`match.host`, read
//! from `:authority`) or address (`match.destinations`). One policy serves both directions:
//! `?host=payments&status=503` (or `?dest=10.0.0.0/8&...`) on the control route is the
//! client binding's twin, stored as the outbound rule for that one destination.

use crate::faults::body_change::BodyChange;
use crate::model::net::Cidr;
use crate::model::policy::{Canned, Policy, PolicyKind, State};
use crate::control::query::{Call, ControlError};
use crate::model::rules::{Fault, Match, Rule, MAX_RULES};
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

    /// The match of the rule this destination's binding is.
    fn matcher(&self) -> Match {
        match self {
            Destination::Host(h) => Match { host: Some(HostMatch::Exact(h.clone())), ..Match::default() },
            Destination::Addresses(c) => Match { destinations: vec![*c], ..Match::default() },
        }
    }
}

/// The policy an outbound rule's fault and percentage stand for, for a binding's values
/// not given again to keep theirs; `base` gives what the fault does not say.
fn policy_of(rule: &Rule, base: Policy) -> Policy {
    let mut policy = Policy { percentage: rule.percentage, ..base };
    match &rule.fault {
        Fault::Abort { status, .. } => (policy.kind, policy.status) = (PolicyKind::Abort, status.0),
        Fault::Delay { fixed, .. } => (policy.kind, policy.delay) = (PolicyKind::Delay, *fixed),
        Fault::BoundedRetries { retries, status } => {
            (policy.kind, policy.retries, policy.status) = (PolicyKind::BoundedRetries, *retries, status.0)
        }
        Fault::Response { .. } => policy.kind = PolicyKind::Response,
        Fault::Reset { after } => (policy.kind, policy.after) = (PolicyKind::ResetStream, Some(*after)),
        Fault::SlowFailure { delay, abort } => {
            (policy.kind, policy.delay, policy.status) = (PolicyKind::SlowFailure, delay.fixed, abort.status.0)
        }
        Fault::Truncate(t) => (policy.kind, policy.after_bytes) = (PolicyKind::TruncateResponse, Some(t.after_bytes)),
        Fault::Throttle(t) => (policy.kind, policy.bytes_per_second) = (PolicyKind::ThrottleResponse, Some(t.bytes_per_second())),
        Fault::DelayShape(shape) => {
            (policy.kind, policy.p50, policy.p99) = (PolicyKind::LongTailDelay, Some(shape.at_rank(0.5)), Some(shape.at_rank(0.99)))
        }
        Fault::BodyChange(BodyChange::Corrupt { ppm }) => (policy.kind, policy.corrupt) = (PolicyKind::CorruptBody, Some(*ppm)),
        Fault::BodyChange(BodyChange::Replace { .. }) => policy.kind = PolicyKind::ReplaceBody,
        Fault::RequestRewrite(rewrite) => (policy.kind, policy.rewrite) = (PolicyKind::RequestRewrite, Some(rewrite.clone())),
        Fault::ResponseDelay { .. } | Fault::ResponseRewrite { .. } => {}
    }
    policy
}

/// Applies a control call's change to the binding of `destination` (its outbound rule) in
/// `state` at `now_ms`: `reset` drops it first; values edit its policy, which starts from
/// the default policy's values as a client binding's does; `ttl` ends it by itself. A
/// binding whose policy becomes `none` is removed. `canned` is `simpleResponse`'s answer.
pub fn apply(call: &Call, destination: &Destination, canned: &Canned, state: &State, now_ms: u64) -> Result<State, ControlError> {
    let mut next = state.clone();
    next.settle(now_ms);
    let matcher = destination.matcher();
    let at = next.rules.iter().position(|r| r.direction == Direction::Outbound && r.matcher == matcher);
    let existing = at.map(|i| next.rules.remove(i));
    if !call.has_values() {
        // `reset` alone: the binding is gone.
        return Ok(next);
    }
    let kept = existing.filter(|_| !call.reset);
    let mut policy = kept.as_ref().map_or_else(|| next.default.clone(), |r| policy_of(r, next.default.clone()));
    call.set_values(&mut policy);
    let Some(fault) = policy.fault(canned) else { return Ok(next) };
    if next.rules.len() >= MAX_RULES {
        return Err(ControlError::TooManyRules);
    }
    // A write without `ttl` replaces the binding and its end: no end is inherited.
    let until_ms = call.ttl.map(|ttl| now_ms.saturating_add(ttl.0));
    let rule = Rule { name: None, direction: Direction::Outbound, matcher, fault, percentage: policy.percentage, sample_by: None, until_ms };
    next.rules.insert(at.unwrap_or(0), rule);
    Ok(next)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::duration::Millis;
    use crate::model::percentage::Percentage;
    use crate::model::values::HttpStatus;

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

    fn call(state: &State, query: &str, now_ms: u64) -> Result<State, ControlError> {
        let canned = Canned { status: 200, headers: vec![], body: "canned".into() };
        let call = Call::parse_query(query)?;
        match &call.destination {
            Some(d) => apply(&call, d, &canned, state, now_ms),
            None => call.apply(state, &State::default(), now_ms),
        }
    }

    #[test]
    fn a_destination_binding_is_an_outbound_rule() {
        let s = call(&State::default(), "host=Payments&status=503&percentage=100", 0).unwrap();
        assert_eq!(s.rules.len(), 1);
        let r = &s.rules[0];
        assert_eq!(r.direction, Direction::Outbound);
        assert_eq!(r.matcher.host, Some(HostMatch::Exact("payments".into())));
        assert_eq!(r.fault, Fault::Abort { status: HttpStatus(503), grpc_status: None });
        assert_eq!(r.percentage, Percentage(1_000_000));
        assert_eq!(s.default.kind, PolicyKind::None, "the default policy is the inbound one, untouched");
        // Values not given keep theirs; another destination is another rule, first.
        let s = call(&s, "host=payments&percentage=50", 0).unwrap();
        assert_eq!((s.rules.len(), s.rules[0].percentage), (1, Percentage(500_000)));
        assert_eq!(s.rules[0].fault, Fault::Abort { status: HttpStatus(503), grpc_status: None });
        let s = call(&s, "dest=10.0.0.0/8&timeout=250ms", 0).unwrap();
        assert_eq!(s.rules.len(), 2);
        assert_eq!(s.rules[0].matcher.destinations, vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        assert_eq!(s.rules[0].fault, Fault::Delay { fixed: Millis(250), jitter: Millis(0) });
        // Reset removes one binding; policy=none too.
        let s = call(&s, "host=payments&reset", 0).unwrap();
        assert_eq!(s.rules.len(), 1);
        let s = call(&s, "dest=10.0.0.0/8&policy=none", 0).unwrap();
        assert!(s.rules.is_empty());
    }

    #[test]
    fn a_destination_binding_with_ttl_ends_by_itself() {
        let mut s = call(&State::default(), "host=catalog&timeout=1s&percentage=100&ttl=30s", 1000).unwrap();
        assert_eq!(s.rules[0].until_ms, Some(31_000));
        s.settle(31_000);
        assert!(s.rules.is_empty());
        // A later write without ttl replaces the binding and inherits no end.
        let s = call(&State::default(), "host=catalog&timeout=1s&percentage=100&ttl=30s", 1000).unwrap();
        let mut s = call(&s, "host=catalog&status=503", 2000).unwrap();
        assert_eq!(s.rules[0].until_ms, None);
        s.settle(31_000);
        assert_eq!(s.rules.len(), 1);
    }

    #[test]
    fn bad_destinations_are_refused() {
        for (query, needle) in [
            ("host=pay:80&status=503", "host: 'pay:80'"),
            ("dest=10.0.0.0/40&status=503", "dest: '10.0.0.0/40'"),
            ("host=a&dest=10.0.0.1&status=503", "'host' and 'dest'"),
            ("host=a&ip=10.0.0.1&status=503", "'ip' and 'host'"),
        ] {
            let message = call(&State::default(), query, 0).unwrap_err().to_string();
            assert!(message.contains(needle), "{query}: {message}");
        }
    }
}
