//! A destination binding: `?host=payments&status=503` (or `?dest=10.0.0.0/8&...`) on the
//! control route is the client binding's twin for an outbound listener, stored as the
//! outbound rule for that one destination (see [`crate::model::outbound`]).

use crate::faults::Fault;
use crate::model::change::{Call, ControlError};
use crate::model::outbound::{Destination, Direction, HostMatch};
use crate::model::policy::{Canned, Settings, Seed, State};
use crate::model::rules::{Match, Rule, MAX_RULES};
use crate::faults::body_change::BodyChange;

/// The match of the rule a destination's binding is.
fn matcher(destination: &Destination) -> Match {
    match destination {
        Destination::Host(h) => Match { host: Some(HostMatch::Exact(h.clone())), ..Match::default() },
        Destination::Addresses(c) => Match { destinations: vec![*c], ..Match::default() },
    }
}

/// The query policy an outbound rule is, for a binding's values not given again to keep
/// theirs; `base` (the default policy) gives the values its fault does not say. `None` for
/// a fault no query policy says (a response delay or rewrite).
fn seed_of(rule: &Rule, base: &Seed) -> Option<Seed> {
    let mut given = Settings { percentage: rule.percentage, ..base.given.clone() };
    match &rule.fault {
        Fault::Abort(abort) => given.status = abort.status.0,
        Fault::Delay(delay) => given.delay = delay.fixed,
        Fault::BoundedRetries(b) => (given.retries, given.status) = (b.retries, b.status.0),
        Fault::Response(_) | Fault::BodyChange(BodyChange::Replace { .. }) => {}
        Fault::Reset(reset) => given.by_kind.after = Some(reset.after),
        Fault::SlowFailure(slow) => (given.delay, given.status) = (slow.delay.fixed, slow.abort.status.0),
        Fault::Truncate(t) => given.by_kind.after_bytes = Some(t.after_bytes),
        Fault::Throttle(t) => given.by_kind.bytes_per_second = Some(t.bytes_per_second()),
        Fault::DelayShape(shape) => (given.by_kind.p50, given.by_kind.p99) = (Some(shape.at_rank(0.5)), Some(shape.at_rank(0.99))),
        Fault::BodyChange(BodyChange::Corrupt { ppm }) => given.by_kind.corrupt = Some(*ppm),
        Fault::RequestRewrite(rewrite) => given.by_kind.rewrite = Some(rewrite.clone()),
        Fault::ResponseDelay(_) | Fault::ResponseRewrite(_) => return None,
    }
    Some(Seed { fault: Some(rule.fault.clone()), until_ms: None, given })
}

/// Applies a control call's change to the binding of `destination` (its outbound rule) in
/// `state` at `now_ms`: `reset` drops it first; values edit its policy, which starts from
/// the default policy's values as a client binding's does; `ttl` ends it by itself. A
/// binding whose policy becomes `none` is removed. `canned` is `simpleResponse`'s answer.
pub fn apply(call: &Call, destination: &Destination, canned: &Canned, state: &State, now_ms: u64) -> Result<State, ControlError> {
    let mut next = state.clone();
    next.settle(now_ms);
    let matcher = matcher(destination);
    let at = next.rules.iter().position(|r| r.direction == Direction::Outbound && r.matcher == matcher);
    let existing = at.map(|i| next.rules.remove(i));
    if !call.has_values() {
        // `reset` alone: the binding is gone.
        return Ok(next);
    }
    let kept = existing.filter(|_| !call.reset);
    // A write without `ttl` replaces the binding and its end: no end is inherited.
    let until_ms = call.ttl.map(|ttl| now_ms.saturating_add(ttl.0));
    let (fault, percentage) = match kept.as_ref().map(|r| (r, seed_of(r, &next.default))) {
        // A fault no query policy says (a response delay or rewrite) is kept unless the call
        // names another; only its share changes.
        Some((rule, None)) if call.kind.is_none() => (rule.fault.clone(), call.percentage.unwrap_or(rule.percentage)),
        kept => {
            let mut seed = kept.and_then(|(_, s)| s).unwrap_or_else(|| Seed { until_ms: None, ..next.default.clone() });
            call.edit(&mut seed, canned, until_ms)?;
            let Some(fault) = seed.fault else { return Ok(next) };
            (fault, seed.given.percentage)
        }
    };
    if next.rules.len() >= MAX_RULES {
        return Err(ControlError::TooManyRules);
    }
    let rule = Rule { name: None, direction: Direction::Outbound, matcher, fault, percentage, sample_by: None, until_ms };
    next.rules.insert(at.unwrap_or(0), rule);
    Ok(next)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::duration::Millis;
    use crate::model::net::Cidr;
    use crate::model::percentage::Percentage;
    use crate::model::values::HttpStatus;

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
        assert_eq!(r.fault, Fault::Abort(crate::faults::abort::Abort::status(HttpStatus(503))));
        assert_eq!(r.percentage, Percentage(1_000_000));
        assert_eq!(s.default.name(), "none", "the default policy is the inbound one, untouched");
        // Values not given keep theirs; another destination is another rule, first.
        let s = call(&s, "host=payments&percentage=50", 0).unwrap();
        assert_eq!((s.rules.len(), s.rules[0].percentage), (1, Percentage(500_000)));
        assert_eq!(s.rules[0].fault, Fault::Abort(crate::faults::abort::Abort::status(HttpStatus(503))));
        let s = call(&s, "dest=10.0.0.0/8&timeout=250ms", 0).unwrap();
        assert_eq!(s.rules.len(), 2);
        assert_eq!(s.rules[0].matcher.destinations, vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        assert_eq!(s.rules[0].fault, Fault::Delay(crate::faults::delay::Delay::fixed(Millis(250))));
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
    fn a_fault_without_a_query_policy_is_kept_not_dropped() {
        let doc = br#"{"rules": [{"direction": "outbound", "match": {"host": {"exact": "payments"}}, "fault": {"response_delay": {"fixed": "300ms"}}}]}"#;
        let state = crate::model::document::parse(doc, 0).unwrap();
        let s = call(&state, "host=payments&percentage=50", 0).unwrap();
        assert_eq!((&s.rules[0].fault, s.rules[0].percentage), (&state.rules[0].fault, Percentage(500_000)));
        let s = call(&state, "host=payments&status=503", 0).unwrap();
        assert_eq!(s.rules[0].fault, Fault::Abort(crate::faults::abort::Abort::status(HttpStatus(503))));
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
