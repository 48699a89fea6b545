//! The query policy: what the seed's parameters (`status=503&percentage=5`) set, for every
//! client (the default) or for one address range (a binding). Each is a rule without a
//! match: the same [`Fault`] a document's rules inject, sampled at a share, ending at its
//! `ttl`; beside it, the parameters as last given, which a later `policy=` builds from. The
//! shared state's form (the seed's `kind` and values, as every earlier build wrote them) is
//! [`crate::model::stored`]'s; the query's is [`crate::model::change`]'s.

use crate::faults::abort::Abort;
use crate::faults::body_change::BodyChange;
use crate::faults::bounded_retries::BoundedRetries;
use crate::faults::delay::Delay;
use crate::faults::delay_shape::{DelayShape, ShapeError};
use crate::faults::request_rewrite::RequestRewrite;
use crate::faults::reset::Reset;
use crate::faults::response::Response;
use crate::faults::slow_failure::SlowFailure;
use crate::faults::throttle::{Throttle, ThrottleError};
use crate::faults::truncate::Truncate;
use crate::faults::Fault;
use crate::guard::{Guard, Shown};
use crate::model::duration::Millis;
use crate::model::net::Cidr;
use crate::model::percentage::Percentage;
use crate::model::rules::Rule;
use crate::model::values::HttpStatus;
use std::net::IpAddr;

/// The most per-client bindings kept, so the state stays small to copy between workers.
pub const MAX_CLIENTS: usize = 256;

/// Policy names as `policy=`, `GET /injector` and `x-fault-injected` spell them.
pub const KIND_NAMES: &str = "none, simpleResponse, delayResponse (alias timeoutTest), statusResponse, boundedRetries, resetStream, slowFailure, truncateResponse, throttleResponse, longTailDelay, corruptBody, replaceBody, requestRewrite";

const NONE: &str = "none";
const SIMPLE_RESPONSE: &str = "simpleResponse";
const DELAY_RESPONSE: &str = "delayResponse";
const STATUS_RESPONSE: &str = "statusResponse";
const BOUNDED_RETRIES: &str = "boundedRetries";
const RESET_STREAM: &str = "resetStream";
const SLOW_FAILURE: &str = "slowFailure";
const TRUNCATE_RESPONSE: &str = "truncateResponse";
const THROTTLE_RESPONSE: &str = "throttleResponse";
const LONG_TAIL_DELAY: &str = "longTailDelay";
const CORRUPT_BODY: &str = "corruptBody";
const REPLACE_BODY: &str = "replaceBody";
const REQUEST_REWRITE: &str = crate::faults::request_rewrite::NAME;

/// Every policy name, `none` first.
pub const NAMES: [&str; 13] = [
    NONE,
    SIMPLE_RESPONSE,
    DELAY_RESPONSE,
    STATUS_RESPONSE,
    BOUNDED_RETRIES,
    RESET_STREAM,
    SLOW_FAILURE,
    TRUNCATE_RESPONSE,
    THROTTLE_RESPONSE,
    LONG_TAIL_DELAY,
    CORRUPT_BODY,
    REPLACE_BODY,
    REQUEST_REWRITE,
];

/// The policy a name given to `policy=` means, as its one spelling; `timeoutTest` is
/// `delayResponse`.
pub fn policy_name(given: &str) -> Option<&'static str> {
    match given {
        "timeoutTest" => Some(DELAY_RESPONSE),
        _ => NAMES.iter().find(|n| **n == given).copied(),
    }
}

/// `truncateResponse`'s default: body bytes sent before the reset.
pub const DEFAULT_AFTER_BYTES: u64 = 1000;
/// `throttleResponse`'s default rate: 100 KiB/s.
pub const DEFAULT_BYTES_PER_SECOND: u64 = 102_400;
/// `longTailDelay`'s default median.
pub const DEFAULT_P50: Millis = Millis(100);
/// `longTailDelay`'s default 99th percentile.
pub const DEFAULT_P99: Millis = Millis(2000);
/// `corruptBody`'s default share of bytes, in parts per million: 1%.
pub const DEFAULT_CORRUPT_PPM: u32 = 10_000;

/// The seed's parameters as last given, kept while another fault (or none) is in force so
/// that `policy=delayResponse` reuses the last `timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The share of requests (or, for bounded retries, of request identities) sampled.
    pub percentage: Percentage,
    /// `timeout`: how long a delayed request is held.
    pub delay: Millis,
    /// `status`: of `statusResponse`, `slowFailure` and failed bounded-retry attempts.
    pub status: u16,
    /// `boundedRetries`: how many attempts of one identity fail before one passes.
    pub retries: u32,
    /// The parameters only some kinds take.
    pub by_kind: KindParameters,
}

/// The parameters only some kinds of fault take, each as last given (absent: the kind's
/// default): in a policy's [`Settings`], and in a control call, whose given ones
/// [`KindParameters::overlay`] puts on them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindParameters {
    /// `after` (`resetStream`; default 0).
    pub after: Option<Millis>,
    /// `afterBytes` (`truncateResponse`; default 1000).
    pub after_bytes: Option<u64>,
    /// `bytesPerSecond` (`throttleResponse`; default 102400, 100 KiB/s).
    pub bytes_per_second: Option<u64>,
    /// `p50` (`longTailDelay`; default 100ms).
    pub p50: Option<Millis>,
    /// `p99` (`longTailDelay`; default 2s).
    pub p99: Option<Millis>,
    /// `corrupt` (`corruptBody`), in parts per million (default 1%).
    pub corrupt: Option<u32>,
    /// `path`, `method`, `setHeaders`, `removeHeaders`, `query` (`requestRewrite`; no
    /// default: at least one part).
    pub rewrite: Option<RequestRewrite>,
}

impl KindParameters {
    /// Takes the ones `given` has; a request rewrite takes the parts given.
    pub fn overlay(&mut self, given: &KindParameters) {
        self.after = given.after.or(self.after);
        self.after_bytes = given.after_bytes.or(self.after_bytes);
        self.bytes_per_second = given.bytes_per_second.or(self.bytes_per_second);
        self.p50 = given.p50.or(self.p50);
        self.p99 = given.p99.or(self.p99);
        self.corrupt = given.corrupt.or(self.corrupt);
        if let Some(change) = &given.rewrite {
            self.rewrite = Some(self.rewrite.take().unwrap_or_default().with(change));
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            percentage: Percentage::DEFAULT,
            delay: Millis(10_000),
            status: 503,
            retries: 10,
            by_kind: KindParameters::default(),
        }
    }
}

/// The canned response `simpleResponse` answers with, and `replaceBody` sends (plugin
/// configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canned {
    /// Its status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
}

impl Default for Canned {
    fn default() -> Self {
        Canned { status: 200, headers: Vec::new(), body: "fault-injector: simple response\n".into() }
    }
}

/// Why the values given make no fault of the policy named.
#[derive(Clone, Debug, PartialEq)]
pub enum Unbuilt {
    /// `longTailDelay` percentiles that do not rise.
    Shape(ShapeError),
    /// `throttleResponse` at a rate out of range.
    Throttle(ThrottleError),
    /// `requestRewrite` without anything to change.
    Rewrite,
}

/// A rule without a match: the query policy in force for its clients.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Seed {
    /// The fault, sampled at `given.percentage`; `None` under `policy=none`.
    pub fault: Option<Fault>,
    /// When it ends by itself (`ttl`), in milliseconds since the epoch.
    pub until_ms: Option<u64>,
    /// The parameters as last given.
    pub given: Settings,
}

impl Seed {
    /// The share sampled.
    pub fn percentage(&self) -> Percentage {
        self.given.percentage
    }

    /// The policy's name: what `GET /injector` shows and `x-fault-injected` says.
    pub fn name(&self) -> &'static str {
        match &self.fault {
            None => NONE,
            Some(Fault::Response(_)) => SIMPLE_RESPONSE,
            Some(Fault::Delay(_)) => DELAY_RESPONSE,
            Some(Fault::Abort(_)) => STATUS_RESPONSE,
            Some(Fault::BoundedRetries(_)) => BOUNDED_RETRIES,
            Some(Fault::Reset(_)) => RESET_STREAM,
            Some(Fault::SlowFailure(_)) => SLOW_FAILURE,
            Some(Fault::Truncate(_)) => TRUNCATE_RESPONSE,
            Some(Fault::Throttle(_)) => THROTTLE_RESPONSE,
            Some(Fault::DelayShape(_)) => LONG_TAIL_DELAY,
            Some(Fault::BodyChange(BodyChange::Corrupt { .. })) => CORRUPT_BODY,
            Some(Fault::BodyChange(BodyChange::Replace { .. })) => REPLACE_BODY,
            Some(Fault::RequestRewrite(_)) => REQUEST_REWRITE,
            // No policy builds these (see `build`); named as a rule would name them.
            Some(other @ (Fault::ResponseDelay(_) | Fault::ResponseRewrite(_))) => other.label(),
        }
    }

    /// The fault the policy `name` (one of [`NAMES`]) injects with the values `given`;
    /// `canned` is `simpleResponse`'s answer and `replaceBody`'s body.
    pub fn build(name: &str, given: &Settings, canned: &Canned) -> Result<Option<Fault>, Unbuilt> {
        let status = HttpStatus(given.status);
        Ok(Some(match name {
            SIMPLE_RESPONSE => Fault::Response(Response {
                status: HttpStatus(canned.status),
                headers: canned.headers.clone(),
                body: canned.body.clone(),
                grpc_status: None,
            }),
            DELAY_RESPONSE => Fault::Delay(Delay::fixed(given.delay)),
            STATUS_RESPONSE => Fault::Abort(Abort::status(status)),
            BOUNDED_RETRIES => Fault::BoundedRetries(BoundedRetries { retries: given.retries, status }),
            RESET_STREAM => Fault::Reset(Reset { after: given.by_kind.after.unwrap_or_default() }),
            SLOW_FAILURE => Fault::SlowFailure(SlowFailure { delay: Delay::fixed(given.delay), abort: Abort::status(status) }),
            TRUNCATE_RESPONSE => Fault::Truncate(Truncate { after_bytes: given.by_kind.after_bytes.unwrap_or(DEFAULT_AFTER_BYTES) }),
            THROTTLE_RESPONSE => {
                Fault::Throttle(Throttle::at(given.by_kind.bytes_per_second.unwrap_or(DEFAULT_BYTES_PER_SECOND)).map_err(Unbuilt::Throttle)?)
            }
            LONG_TAIL_DELAY => {
                let shape = DelayShape::through(given.by_kind.p50.unwrap_or(DEFAULT_P50), given.by_kind.p99.unwrap_or(DEFAULT_P99));
                Fault::DelayShape(shape.map_err(Unbuilt::Shape)?)
            }
            CORRUPT_BODY => Fault::BodyChange(BodyChange::Corrupt { ppm: given.by_kind.corrupt.unwrap_or(DEFAULT_CORRUPT_PPM) }),
            REPLACE_BODY => {
                let content_type = canned.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type"));
                Fault::BodyChange(BodyChange::Replace { body: canned.body.clone(), content_type: content_type.map(|(_, v)| v.clone()) })
            }
            REQUEST_REWRITE => Fault::RequestRewrite(given.by_kind.rewrite.clone().ok_or(Unbuilt::Rewrite)?),
            _ => return Ok(None),
        }))
    }
}

/// A policy bound to a client address range.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The clients this policy is for.
    pub clients: Cidr,
    /// Their policy, which wins over the default.
    pub seed: Seed,
}

/// The whole policy state shared by every worker: the rules of the policy document, then
/// the per-client bindings, then the default, in the order a request is checked.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct State {
    /// The document's rules; the first that matches a request decides for it.
    pub rules: Vec<Rule>,
    /// The policy for clients without a binding.
    pub default: Seed,
    /// Per-client policies, narrowest range first.
    pub bindings: Vec<Binding>,
    /// The stop conditions that halt all injection when the service really fails.
    pub guard: Option<Guard>,
    /// Set when a guard condition tripped (which, the share measured, when): every request
    /// passes untouched until a resume or a new policy, and the policy is kept to show.
    pub halted: Option<Shown>,
}

impl State {
    /// Where a throttle is in force, as a document's JSON path (`rules[0].fault.throttle`,
    /// `policy`, `clients[1]`); `None` when none is. A throttle needs Envoy's fault filter
    /// after this one ([`crate::faults::throttle`]).
    pub fn throttle_at(&self) -> Option<String> {
        let throttles = |s: &Seed| matches!(s.fault, Some(Fault::Throttle(_)));
        if let Some(i) = self.rules.iter().position(|r| matches!(r.fault, Fault::Throttle(_))) {
            return Some(format!("rules[{i}].fault.throttle"));
        }
        if throttles(&self.default) {
            return Some("policy".into());
        }
        self.bindings.iter().position(|b| throttles(&b.seed)).map(|i| format!("clients[{i}]"))
    }

    /// The policy for a client: the narrowest binding that holds its address, else the default.
    pub fn policy_for(&self, client: Option<IpAddr>) -> &Seed {
        client.and_then(|ip| self.bindings.iter().find(|b| b.clients.contains(ip))).map_or(&self.default, |b| &b.seed)
    }

    /// The binding for exactly this range, if any.
    pub fn binding_mut(&mut self, clients: &Cidr) -> Option<&mut Seed> {
        self.bindings.iter_mut().find(|b| b.clients == *clients).map(|b| &mut b.seed)
    }

    /// The binding for exactly this range, if any, to read.
    pub fn policy_of(&self, clients: &Cidr) -> Option<&Seed> {
        self.bindings.iter().find(|b| b.clients == *clients).map(|b| &b.seed)
    }

    /// When the next `ttl` change ends, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        let seeds = std::iter::once(&self.default).chain(self.bindings.iter().map(|b| &b.seed));
        seeds.filter_map(|s| s.until_ms).chain(self.rules.iter().filter_map(|r| r.until_ms)).min()
    }

    /// Ends every `ttl` change due by `now_ms`, and only what it set: a rule goes away, the
    /// default's fault becomes `none` (its values are kept for the next `policy=`), a
    /// binding goes away (its clients are on the default again). No earlier fault comes back.
    pub fn settle(&mut self, now_ms: u64) {
        let due = |until: Option<u64>| until.is_some_and(|until| until <= now_ms);
        self.rules.retain(|r| !due(r.until_ms));
        if due(self.default.until_ms) {
            (self.default.fault, self.default.until_ms) = (None, None);
        }
        self.bindings.retain(|b| !due(b.seed.until_ms));
    }

    /// Adds a binding, keeping the narrowest ranges first.
    pub fn bind(&mut self, clients: &Cidr, seed: Seed) {
        self.bindings.push(Binding { clients: *clients, seed });
        self.bindings.sort_by_key(|b| std::cmp::Reverse(b.clients.prefix()));
    }

    /// Removes the binding for exactly this range.
    pub fn unbind(&mut self, clients: &Cidr) {
        self.bindings.retain(|b| b.clients != *clients);
    }

    /// True when no policy can inject anything, so requests need no further look.
    pub fn is_idle(&self) -> bool {
        self.rules.is_empty() && self.default.fault.is_none() && self.bindings.iter().all(|b| b.seed.fault.is_none())
    }

    /// Puts the configured canned response into the policies that answer with it
    /// (`simpleResponse`, `replaceBody`): a state is read and built with the default one,
    /// which only the plugin configuration changes.
    pub fn resolve(&mut self, canned: &Canned) {
        let seeds = std::iter::once(&mut self.default).chain(self.bindings.iter_mut().map(|b| &mut b.seed));
        for seed in seeds {
            if matches!(seed.fault, Some(Fault::Response(_) | Fault::BodyChange(BodyChange::Replace { .. }))) {
                if let Ok(fault) = Seed::build(seed.name(), &seed.given, canned) {
                    seed.fault = fault;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn abort(status: u16) -> Seed {
        let given = Settings { status, ..Settings::default() };
        Seed { fault: Seed::build(STATUS_RESPONSE, &given, &Canned::default()).unwrap(), until_ms: None, given }
    }

    #[test]
    fn narrowest_binding_wins_over_default() {
        let mut state = State::default();
        state.bind(&Cidr::parse("127.0.0.0/8").unwrap(), abort(503));
        state.bind(&Cidr::parse("127.0.0.3").unwrap(), Seed::default());
        assert_eq!(state.policy_for(Some("127.0.0.2".parse().unwrap())).name(), "statusResponse");
        assert_eq!(state.policy_for(Some("127.0.0.3".parse().unwrap())).name(), "none");
        assert_eq!(state.policy_for(Some("10.0.0.1".parse().unwrap())).name(), "none");
        assert_eq!(state.policy_for(None).name(), "none");
        assert!(!state.is_idle());
    }

    #[test]
    fn ttl_changes_end_by_themselves_and_bring_nothing_back() {
        let ip = Cidr::parse("10.0.0.1").unwrap();
        let mut state = State { default: Seed { until_ms: Some(1000), ..abort(500) }, ..State::default() };
        state.bind(&ip, Seed { until_ms: Some(500), ..abort(500) });
        assert_eq!(state.next_expiry(), Some(500));
        state.settle(499);
        assert_eq!(state.bindings.len(), 1);
        state.settle(500);
        assert!(state.bindings.is_empty());
        assert_eq!(state.default.name(), "statusResponse");
        state.settle(1000);
        // The fault ends; its values stay for the next `policy=`.
        assert_eq!(state, State { default: Seed { fault: None, until_ms: None, ..abort(500) }, ..State::default() });
        assert_eq!(state.next_expiry(), None);
    }

    #[test]
    fn each_policy_is_one_fault_named_as_it_was_asked() {
        let canned = Canned { status: 201, headers: vec![], body: "hi".into() };
        let given = Settings::default();
        let fault = |name| Seed::build(name, &given, &canned).unwrap();
        assert_eq!(fault("none"), None);
        assert_eq!(fault("statusResponse"), Some(Fault::Abort(Abort::status(HttpStatus(503)))));
        assert_eq!(fault("delayResponse"), Some(Fault::Delay(Delay::fixed(Millis(10_000)))));
        assert_eq!(fault("boundedRetries"), Some(Fault::BoundedRetries(BoundedRetries { retries: 10, status: HttpStatus(503) })));
        let response = Fault::Response(Response { status: HttpStatus(201), headers: vec![], body: "hi".into(), grpc_status: None });
        assert_eq!(fault("simpleResponse"), Some(response));
        assert_eq!(Seed::build("requestRewrite", &given, &canned), Err(Unbuilt::Rewrite));
        for name in NAMES.into_iter().filter(|n| *n != "requestRewrite") {
            let seed = Seed { fault: fault(name), until_ms: None, given: given.clone() };
            assert_eq!(seed.name(), name);
        }
        assert_eq!(policy_name("timeoutTest"), Some("delayResponse"));
        assert_eq!(policy_name("chaos"), None);
    }

    #[test]
    fn the_configured_canned_response_is_put_in() {
        let mut state = State::default();
        state.default.fault = Seed::build("simpleResponse", &state.default.given, &Canned::default()).unwrap();
        let canned = Canned { status: 418, headers: vec![("content-type".into(), "text/plain".into())], body: "teapot".into() };
        state.resolve(&canned);
        assert_eq!(state.default.fault, Seed::build("simpleResponse", &Settings::default(), &canned).unwrap());
    }
}
