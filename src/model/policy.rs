//! The fault policy: what to inject, how often, and for which clients, as the query
//! parameters edit it. The shared state keeps it with serde's derived form (`"kind":
//! "StatusResponse"`, `"percentage": 500000`), which every earlier build wrote too.

use crate::faults::body_change::BodyChange;
use crate::faults::delay_shape::DelayShape;
use crate::model::duration::{self, Millis};
use crate::guard::{Guard, Shown};
use crate::model::net::Cidr;
use crate::model::percentage::{self, Percentage};
use crate::faults::request_rewrite::RequestRewrite;
use crate::faults::abort::Abort;
use crate::faults::bounded_retries::BoundedRetries;
use crate::faults::delay::Delay;
use crate::faults::reset::Reset;
use crate::faults::response::Response;
use crate::faults::slow_failure::SlowFailure;
use crate::faults::Fault;
use crate::model::rules::Rule;
use crate::faults::throttle::Throttle;
use crate::faults::truncate::Truncate;
use crate::model::values::HttpStatus;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The most per-client bindings kept, so the state stays small to copy between workers.
pub const MAX_CLIENTS: usize = 256;

/// Which fault a policy injects. Named for what it does; the control API's names
/// (`statusResponse`...) are [`PolicyKind::name`], and the shared state's are the seed's
/// variant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    /// No fault: every request passes.
    None,
    /// Answered locally with the configured canned response (`simpleResponse`).
    #[serde(rename = "SimpleResponse")]
    Response,
    /// Held for the policy's delay, then forwarded (`delayResponse`).
    #[serde(rename = "DelayResponse")]
    Delay,
    /// Answered locally with the policy's status (`statusResponse`).
    #[serde(rename = "StatusResponse")]
    Abort,
    /// The first N attempts of a request identity fail, the next one passes.
    BoundedRetries,
    /// The stream is reset without an answer, after `after` (`resetStream`).
    ResetStream,
    /// Held for the policy's delay, then answered with its status (`slowFailure`).
    SlowFailure,
    /// The response is cut after `after_bytes` body bytes (`truncateResponse`).
    TruncateResponse,
    /// The response body is released at `bytes_per_second` (`throttleResponse`).
    ThrottleResponse,
    /// Held for a delay drawn through `p50` and `p99` (`longTailDelay`).
    LongTailDelay,
    /// A share `corrupt` of the response body's bytes is changed (`corruptBody`).
    CorruptBody,
    /// The response body is replaced by the canned response's (`replaceBody`).
    ReplaceBody,
    /// The request is changed before it goes upstream (`requestRewrite`).
    RequestRewrite,
}

/// Policy names as the control API and `x-fault-injected` spell them.
pub const KIND_NAMES: &str = "none, simpleResponse, delayResponse (alias timeoutTest), statusResponse, boundedRetries, resetStream, slowFailure, truncateResponse, throttleResponse, longTailDelay, corruptBody, replaceBody, requestRewrite";

impl PolicyKind {
    /// Reads a policy name as given in `policy=`.
    pub fn parse(name: &str) -> Option<PolicyKind> {
        Some(match name {
            "none" => PolicyKind::None,
            "simpleResponse" => PolicyKind::Response,
            "delayResponse" | "timeoutTest" => PolicyKind::Delay,
            "statusResponse" => PolicyKind::Abort,
            "boundedRetries" => PolicyKind::BoundedRetries,
            "resetStream" => PolicyKind::ResetStream,
            "slowFailure" => PolicyKind::SlowFailure,
            "truncateResponse" => PolicyKind::TruncateResponse,
            "throttleResponse" => PolicyKind::ThrottleResponse,
            "longTailDelay" => PolicyKind::LongTailDelay,
            "corruptBody" => PolicyKind::CorruptBody,
            "replaceBody" => PolicyKind::ReplaceBody,
            crate::faults::request_rewrite::NAME => PolicyKind::RequestRewrite,
            _ => return None,
        })
    }

    /// The policy's name, as shown in `GET /injector` and `x-fault-injected`.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::Response => "simpleResponse",
            PolicyKind::Delay => "delayResponse",
            PolicyKind::Abort => "statusResponse",
            PolicyKind::BoundedRetries => "boundedRetries",
            PolicyKind::ResetStream => "resetStream",
            PolicyKind::SlowFailure => "slowFailure",
            PolicyKind::TruncateResponse => "truncateResponse",
            PolicyKind::ThrottleResponse => "throttleResponse",
            PolicyKind::LongTailDelay => "longTailDelay",
            PolicyKind::CorruptBody => "corruptBody",
            PolicyKind::ReplaceBody => "replaceBody",
            PolicyKind::RequestRewrite => crate::faults::request_rewrite::NAME,
        }
    }
}

/// One policy: the fault kind and every parameter, kept even while another kind is active
/// so that `policy=delayResponse` reuses the last `timeout` given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The fault in force.
    pub kind: PolicyKind,
    /// The share of requests (or, for bounded retries, of request identities) sampled.
    #[serde(with = "percentage::ppm")]
    pub percentage: Percentage,
    /// How long a delayed request is held.
    #[serde(with = "duration::whole_ms")]
    pub delay: Millis,
    /// The status of `statusResponse` and of failed bounded-retry attempts.
    pub status: u16,
    /// How many attempts of one identity fail before one passes.
    pub retries: u32,
    /// `resetStream`: how long the request is held before the reset (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Millis>,
    /// `truncateResponse`: body bytes sent before the reset (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_bytes: Option<u64>,
    /// `throttleResponse`: the rate (default 102400, 100 KiB/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    /// `longTailDelay`: the median delay (default 100ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<Millis>,
    /// `longTailDelay`: the 99th percentile (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<Millis>,
    /// `corruptBody`: the share of bytes changed, in parts per million (default 1%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<u32>,
    /// `requestRewrite`: what the request gets changed (no default: at least one part).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "stored_rewrite")]
    pub rewrite: Option<RequestRewrite>,
}

/// Reads a stored rewrite through the fault's own checks.
fn stored_rewrite<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<RequestRewrite>, D::Error> {
    RequestRewrite::deserialize(deserializer).map(Some)
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

impl Default for Policy {
    fn default() -> Self {
        Policy {
            kind: PolicyKind::None,
            percentage: Percentage::DEFAULT,
            delay: Millis(10_000),
            status: 503,
            retries: 10,
            after: None,
            after_bytes: None,
            bytes_per_second: None,
            p50: None,
            p99: None,
            corrupt: None,
            rewrite: None,
        }
    }
}

/// The canned response `simpleResponse` answers with (plugin configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canned {
    /// Its status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
}

impl Policy {
    /// The fault this policy injects, `None` for none; `canned` is `simpleResponse`'s answer.
    pub fn fault(&self, canned: &Canned) -> Option<Fault> {
        let status = HttpStatus(self.status);
        Some(match self.kind {
            PolicyKind::None => return None,
            PolicyKind::Response => Fault::Response(Response {
                status: HttpStatus(canned.status),
                headers: canned.headers.clone(),
                body: canned.body.clone(),
                grpc_status: None,
            }),
            PolicyKind::Delay => Fault::Delay(Delay::fixed(self.delay)),
            PolicyKind::Abort => Fault::Abort(Abort::status(status)),
            PolicyKind::BoundedRetries => Fault::BoundedRetries(BoundedRetries { retries: self.retries, status }),
            PolicyKind::ResetStream => Fault::Reset(Reset { after: self.after.unwrap_or_default() }),
            PolicyKind::SlowFailure => Fault::SlowFailure(SlowFailure { delay: Delay::fixed(self.delay), abort: Abort::status(status) }),
            PolicyKind::TruncateResponse => {
                Fault::Truncate(Truncate { after_bytes: self.after_bytes.unwrap_or(DEFAULT_AFTER_BYTES) })
            }
            PolicyKind::ThrottleResponse => Fault::Throttle(self.throttle().ok()?),
            PolicyKind::LongTailDelay => Fault::DelayShape(self.shape().ok()?),
            PolicyKind::CorruptBody => Fault::BodyChange(BodyChange::Corrupt { ppm: self.corrupt.unwrap_or(DEFAULT_CORRUPT_PPM) }),
            PolicyKind::ReplaceBody => {
                let content_type = canned.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type"));
                Fault::BodyChange(BodyChange::Replace { body: canned.body.clone(), content_type: content_type.map(|(_, v)| v.clone()) })
            }
            PolicyKind::RequestRewrite => Fault::RequestRewrite(self.rewrite.clone()?),
        })
    }

    /// `throttleResponse`'s rate, refused when out of range.
    pub fn throttle(&self) -> Result<Throttle, crate::faults::throttle::ThrottleError> {
        Throttle::at(self.bytes_per_second.unwrap_or(DEFAULT_BYTES_PER_SECOND))
    }

    /// `longTailDelay`'s shape, refused unless p99 is longer than p50.
    pub fn shape(&self) -> Result<DelayShape, crate::faults::delay_shape::ShapeError> {
        DelayShape::through(self.p50.unwrap_or(DEFAULT_P50), self.p99.unwrap_or(DEFAULT_P99))
    }
}

/// A change made with `ttl`: when what it set ends. A TTL only ever removes faults: nothing
/// from before the change comes back then. (Earlier builds stored a `revert` policy here
/// too; it is read and ignored.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    /// When the change ends, in milliseconds since the epoch.
    pub until_ms: u64,
}

/// A policy bound to a client address range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The clients this policy is for.
    pub clients: Cidr,
    /// Their policy, which wins over the default.
    pub policy: Policy,
    /// Set when the binding was last changed with `ttl`.
    #[serde(default)]
    pub expiry: Option<Expiry>,
}

/// The whole policy state shared by every worker: the rules of the policy document, then
/// the per-client bindings, then the default, in the order a request is checked.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    /// The document's rules; the first that matches a request decides for it.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The policy for clients without a binding.
    pub default: Policy,
    /// Set when the default was last changed with `ttl`.
    #[serde(default)]
    pub default_expiry: Option<Expiry>,
    /// Per-client policies, narrowest range first.
    pub bindings: Vec<Binding>,
    /// The stop conditions that halt all injection when the service really fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
    /// Set when a guard condition tripped (which, the share measured, when): every request
    /// passes untouched until a resume or a new policy, and the policy is kept to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Shown>,
}

impl State {
    /// Where a throttle is in force, as a document's JSON path (`rules[0].fault.throttle`,
    /// `policy`, `clients[1]`); `None` when none is. A throttle needs Envoy's fault filter
    /// after this one ([`crate::faults::throttle`]).
    pub fn throttle_at(&self) -> Option<String> {
        let throttles = |p: &Policy| p.kind == PolicyKind::ThrottleResponse;
        if let Some(i) = self.rules.iter().position(|r| matches!(r.fault, Fault::Throttle(_))) {
            return Some(format!("rules[{i}].fault.throttle"));
        }
        if throttles(&self.default) {
            return Some("policy".into());
        }
        self.bindings.iter().position(|b| throttles(&b.policy)).map(|i| format!("clients[{i}]"))
    }

    /// The policy for a client: the narrowest binding that holds its address, else the default.
    pub fn policy_for(&self, client: Option<IpAddr>) -> &Policy {
        client
            .and_then(|ip| self.bindings.iter().find(|b| b.clients.contains(ip)))
            .map_or(&self.default, |b| &b.policy)
    }

    /// The binding for exactly this range, if any.
    pub fn binding_mut(&mut self, clients: &Cidr) -> Option<&mut Policy> {
        self.bindings.iter_mut().find(|b| b.clients == *clients).map(|b| &mut b.policy)
    }

    /// The binding for exactly this range, if any, to read.
    pub fn policy_of(&self, clients: &Cidr) -> Option<&Policy> {
        self.bindings.iter().find(|b| b.clients == *clients).map(|b| &b.policy)
    }

    /// The binding's expiry slot for exactly this range, if bound.
    pub fn binding_expiry_mut(&mut self, clients: &Cidr) -> Option<&mut Option<Expiry>> {
        self.bindings.iter_mut().find(|b| b.clients == *clients).map(|b| &mut b.expiry)
    }

    /// When the next `ttl` change ends, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        let policies = self.default_expiry.iter().chain(self.bindings.iter().filter_map(|b| b.expiry.as_ref())).map(|e| e.until_ms);
        policies.chain(self.rules.iter().filter_map(|r| r.until_ms)).min()
    }

    /// Ends every `ttl` change due by `now_ms`, and only what it set: a rule goes away, the
    /// default's fault becomes `none` (its values are kept for the next `policy=`), a
    /// binding goes away (its clients are on the default again). No earlier fault comes back.
    pub fn settle(&mut self, now_ms: u64) {
        let due = |expiry: &Option<Expiry>| expiry.is_some_and(|e| e.until_ms <= now_ms);
        self.rules.retain(|r| r.until_ms.is_none_or(|until| until > now_ms));
        if due(&self.default_expiry) {
            self.default.kind = PolicyKind::None;
            self.default_expiry = None;
        }
        self.bindings.retain(|b| !due(&b.expiry));
    }

    /// Adds a binding, keeping the narrowest ranges first.
    pub fn bind(&mut self, clients: &Cidr, policy: Policy) {
        self.bindings.push(Binding { clients: *clients, policy, expiry: None });
        self.bindings.sort_by_key(|b| std::cmp::Reverse(b.clients.prefix()));
    }

    /// Removes the binding for exactly this range.
    pub fn unbind(&mut self, clients: &Cidr) {
        self.bindings.retain(|b| b.clients != *clients);
    }

    /// True when no policy can inject anything, so requests need no further look.
    pub fn is_idle(&self) -> bool {
        self.rules.is_empty() && self.default.kind == PolicyKind::None && self.bindings.iter().all(|b| b.policy.kind == PolicyKind::None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Option<State> {
        serde_json::from_slice(bytes).ok()
    }

    #[test]
    fn narrowest_binding_wins_over_default() {
        let mut state = State::default();
        let wide = Policy { kind: PolicyKind::Abort, ..Policy::default() };
        let narrow = Policy { kind: PolicyKind::None, ..Policy::default() };
        state.bind(&Cidr::parse("127.0.0.0/8").unwrap(), wide);
        state.bind(&Cidr::parse("127.0.0.3").unwrap(), narrow);
        assert_eq!(state.policy_for(Some("127.0.0.2".parse().unwrap())).kind, PolicyKind::Abort);
        assert_eq!(state.policy_for(Some("127.0.0.3".parse().unwrap())).kind, PolicyKind::None);
        assert_eq!(state.policy_for(Some("10.0.0.1".parse().unwrap())).kind, PolicyKind::None);
        assert_eq!(state.policy_for(None).kind, PolicyKind::None);
        assert!(!state.is_idle());
    }

    #[test]
    fn ttl_changes_end_by_themselves_and_bring_nothing_back() {
        let aborting = Policy { kind: PolicyKind::Abort, status: 500, ..Policy::default() };
        let ip = Cidr::parse("10.0.0.1").unwrap();
        let mut state = State { default: aborting.clone(), ..State::default() };
        state.default_expiry = Some(Expiry { until_ms: 1000 });
        state.bind(&ip, aborting.clone());
        *state.binding_expiry_mut(&ip).unwrap() = Some(Expiry { until_ms: 500 });
        assert_eq!(state.next_expiry(), Some(500));
        state.settle(499);
        assert_eq!(state.bindings.len(), 1);
        state.settle(500);
        assert!(state.bindings.is_empty());
        assert_eq!(state.default.kind, PolicyKind::Abort);
        state.settle(1000);
        // The fault ends; its values stay for the next `policy=`.
        assert_eq!(state, State { default: Policy { kind: PolicyKind::None, ..aborting }, ..State::default() });
        assert_eq!(state.next_expiry(), None);
    }

    #[test]
    fn each_policy_is_one_fault() {
        let canned = Canned { status: 201, headers: vec![], body: "hi".into() };
        let policy = |kind| Policy { kind, ..Policy::default() }.fault(&canned);
        assert_eq!(policy(PolicyKind::None), None);
        assert_eq!(policy(PolicyKind::Abort), Some(Fault::Abort(Abort::status(HttpStatus(503)))));
        assert_eq!(policy(PolicyKind::Delay), Some(Fault::Delay(Delay::fixed(Millis(10_000)))));
        assert_eq!(policy(PolicyKind::BoundedRetries), Some(Fault::BoundedRetries(BoundedRetries { retries: 10, status: HttpStatus(503) })));
        let response = Fault::Response(Response { status: HttpStatus(201), headers: vec![], body: "hi".into(), grpc_status: None });
        assert_eq!(policy(PolicyKind::Response), Some(response));
    }

    #[test]
    fn stored_form_round_trip() {
        let mut state = State::default();
        state.bind(&Cidr::parse("10.0.0.0/8").unwrap(), Policy::default());
        assert_eq!(decode(&serde_json::to_vec(&state).unwrap()), Some(state));
        assert_eq!(decode(b"garbage"), None);
        assert_eq!(decode(b"{}"), None);
    }

    /// A state with every part: a rule with `ttl`, a default and a binding with expiries.
    fn full_state() -> State {
        let text = br#"{"rules": [{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 503, "grpc_status": 14}}, "percentage": 12.5, "ttl": "5m"}],
            "policy": {"status": 500, "percentage": 50, "ttl": "1m"}, "clients": [{"ip": "10.0.0.0/8", "timeout": "250ms"}]}"#;
        let mut state = crate::model::document::parse(text, 1000).unwrap();
        *state.binding_expiry_mut(&Cidr::parse("10.0.0.0/8").unwrap()).unwrap() = Some(Expiry { until_ms: 9000 });
        state
    }

    #[test]
    fn stored_form_keeps_every_part() {
        let state = full_state();
        assert!(state.default_expiry.is_some() && state.rules[0].until_ms.is_some());
        assert_eq!(decode(&serde_json::to_vec(&state).unwrap()), Some(state));
    }

    #[test]
    fn state_stored_by_earlier_builds_still_reads() {
        let stored = br#"{"rules":[{"fault":{"abort":{"grpc_status":14,"status":503}},"match":{"path":{"prefix":"/a"}},"percentage":12.5,"until_ms":301000}],"default":{"kind":"StatusResponse","percentage":500000,"delay":10000,"status":500,"retries":10},"default_expiry":{"until_ms":61000,"revert":{"kind":"None","percentage":200000,"delay":10000,"status":503,"retries":10}},"bindings":[{"clients":"10.0.0.0/8","policy":{"kind":"DelayResponse","percentage":500000,"delay":250,"status":500,"retries":10},"expiry":{"until_ms":9000,"revert":null}}]}"#;
        assert_eq!(decode(stored), Some(full_state()));
        // And this build writes what earlier builds read: the same members, in this order.
        let written = String::from_utf8(serde_json::to_vec(&full_state()).unwrap()).unwrap();
        assert!(written.contains(r#""default":{"kind":"StatusResponse","percentage":500000,"delay":10000,"status":500,"retries":10}"#), "{written}");
    }
}
