//! The fault policy: what to inject, how often, and for which clients.

use crate::duration::Millis;
use crate::json::{self, Map, Value};
use crate::net::Cidr;
use crate::percentage::Percentage;
use crate::rules::Rule;
use std::net::IpAddr;

/// The most per-client bindings kept, so the state stays small to copy between workers.
pub const MAX_CLIENTS: usize = 256;

/// What a sampled request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No fault: every request passes.
    None,
    /// Answered locally with the configured canned response.
    SimpleResponse,
    /// Held for the policy's delay, then forwarded.
    DelayResponse,
    /// Answered locally with the policy's status.
    StatusResponse,
    /// The first N attempts of a request identity fail, the next one passes.
    BoundedRetries,
}

/// Policy names as the control API and `x-fault-injected` spell them.
pub const KIND_NAMES: &str = "none, simpleResponse, delayResponse (alias timeoutTest), statusResponse, boundedRetries";

impl FaultKind {
    /// Reads a policy name as given in `policy=`.
    pub fn parse(name: &str) -> Option<FaultKind> {
        Some(match name {
            "none" => FaultKind::None,
            "simpleResponse" => FaultKind::SimpleResponse,
            "delayResponse" | "timeoutTest" => FaultKind::DelayResponse,
            "statusResponse" => FaultKind::StatusResponse,
            "boundedRetries" => FaultKind::BoundedRetries,
            _ => return None,
        })
    }

    /// The policy's name, as shown in `GET /injector`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::None => "none",
            FaultKind::SimpleResponse => "simpleResponse",
            FaultKind::DelayResponse => "delayResponse",
            FaultKind::StatusResponse => "statusResponse",
            FaultKind::BoundedRetries => "boundedRetries",
        }
    }

    /// The name in the shared state: the variant's own, as the state has always been stored,
    /// so a state written by an earlier build of this module still reads.
    fn stored_name(self) -> &'static str {
        match self {
            FaultKind::None => "None",
            FaultKind::SimpleResponse => "SimpleResponse",
            FaultKind::DelayResponse => "DelayResponse",
            FaultKind::StatusResponse => "StatusResponse",
            FaultKind::BoundedRetries => "BoundedRetries",
        }
    }

    fn from_stored_name(name: &str) -> Option<FaultKind> {
        [FaultKind::None, FaultKind::SimpleResponse, FaultKind::DelayResponse, FaultKind::StatusResponse, FaultKind::BoundedRetries]
            .into_iter()
            .find(|k| k.stored_name() == name)
    }
}

/// One policy: the fault kind and every parameter, kept even while another kind is active
/// so that `policy=delayResponse` reuses the last `timeout` given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The fault in force.
    pub kind: FaultKind,
    /// The share of requests (or, for bounded retries, of request identities) sampled.
    pub percentage: Percentage,
    /// How long a delayed request is held.
    pub delay: Millis,
    /// The status of `statusResponse` and of failed bounded-retry attempts.
    pub status: u16,
    /// How many attempts of one identity fail before one passes.
    pub retries: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            kind: FaultKind::None,
            percentage: Percentage::DEFAULT,
            delay: Millis(10_000),
            status: 503,
            retries: 10,
        }
    }
}

impl Policy {
    /// The policy as JSON, with the control API's parameter names so it can be sent back.
    pub fn to_json(&self) -> Map {
        let mut map = Map::new();
        map.insert("policy", self.kind.name().into());
        map.insert("percentage", self.percentage.to_json());
        map.insert("timeout", self.delay.to_string().into());
        map.insert("status", self.status.into());
        map.insert("boundedRetries", self.retries.into());
        map
    }

    /// The form shared between workers.
    pub fn to_stored(&self) -> Value {
        json::object([
            ("kind", self.kind.stored_name().into()),
            ("percentage", self.percentage.0.into()),
            ("delay", self.delay.0.into()),
            ("status", self.status.into()),
            ("retries", self.retries.into()),
        ])
    }

    /// Reads the shared form back; `None` when anything is missing or out of range.
    pub fn from_stored(value: &Value) -> Option<Policy> {
        let number = |key| value.get(key).and_then(Value::as_u64);
        Some(Policy {
            kind: FaultKind::from_stored_name(value.get("kind")?.as_str()?)?,
            percentage: Percentage(number("percentage")?.try_into().ok()?),
            delay: Millis(number("delay")?),
            status: number("status")?.try_into().ok()?,
            retries: number("retries")?.try_into().ok()?,
        })
    }
}

/// Reads an optional member of the shared form: absent or `null` is `Some(None)`, a value
/// `read` refuses is `None`.
fn optional<T>(value: &Value, key: &str, read: impl Fn(&Value) -> Option<T>) -> Option<Option<T>> {
    match value.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => read(v).map(Some),
    }
}

/// A change made with `ttl`: when it ends, and what comes back then (`None`: no binding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// When the change ends, in milliseconds since the epoch.
    pub until_ms: u64,
    /// The policy in force before the change.
    pub revert: Option<Policy>,
}

impl Expiry {
    /// The form shared between workers.
    pub fn to_stored(&self) -> Value {
        json::object([("until_ms", self.until_ms.into()), ("revert", self.revert.map(|p| p.to_stored()).into())])
    }

    /// Reads the shared form back.
    pub fn from_stored(value: &Value) -> Option<Expiry> {
        Some(Expiry { until_ms: value.get("until_ms")?.as_u64()?, revert: optional(value, "revert", Policy::from_stored)? })
    }
}

/// A policy bound to a client address range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The clients this policy is for.
    pub clients: String,
    /// Their policy, which wins over the default.
    pub policy: Policy,
    /// Set when the binding was last changed with `ttl`.
    pub expiry: Option<Expiry>,
}

impl Binding {
    /// The form shared between workers.
    pub fn to_stored(&self) -> Value {
        json::object([
            ("clients", self.clients.as_str().into()),
            ("policy", self.policy.to_stored()),
            ("expiry", self.expiry.map(|e| e.to_stored()).into()),
        ])
    }

    /// Reads the shared form back.
    pub fn from_stored(value: &Value) -> Option<Binding> {
        Some(Binding {
            clients: value.get("clients")?.as_str()?.to_string(),
            policy: Policy::from_stored(value.get("policy")?)?,
            expiry: optional(value, "expiry", Expiry::from_stored)?,
        })
    }
}

/// The whole policy state shared by every worker: the rules of the policy document, then
/// the per-client bindings, then the default, in the order a request is checked.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct State {
    /// The document's rules; the first that matches a request decides for it.
    pub rules: Vec<Rule>,
    /// The policy for clients without a binding.
    pub default: Policy,
    /// Set when the default was last changed with `ttl`.
    pub default_expiry: Option<Expiry>,
    /// Per-client policies, narrowest range first.
    pub bindings: Vec<Binding>,
}

impl State {
    /// The policy for a client: the narrowest binding that holds its address, else the default.
    pub fn policy_for(&self, client: Option<IpAddr>) -> &Policy {
        client
            .and_then(|ip| {
                self.bindings
                    .iter()
                    .find(|b| Cidr::parse(&b.clients).is_some_and(|c| c.contains(ip)))
            })
            .map_or(&self.default, |b| &b.policy)
    }

    /// The binding for exactly this range, if any.
    pub fn binding_mut(&mut self, clients: &Cidr) -> Option<&mut Policy> {
        let key = clients.to_string();
        self.bindings.iter_mut().find(|b| b.clients == key).map(|b| &mut b.policy)
    }

    /// The binding's expiry slot for exactly this range, if bound.
    pub fn binding_expiry_mut(&mut self, clients: &Cidr) -> Option<&mut Option<Expiry>> {
        let key = clients.to_string();
        self.bindings.iter_mut().find(|b| b.clients == key).map(|b| &mut b.expiry)
    }

    /// When the next `ttl` change ends, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        let policies = self.default_expiry.iter().chain(self.bindings.iter().filter_map(|b| b.expiry.as_ref())).map(|e| e.until_ms);
        policies.chain(self.rules.iter().filter_map(|r| r.until_ms)).min()
    }

    /// Ends every `ttl` change due by `now_ms`: the default and bindings get their previous
    /// policy back, and bindings that did not exist before go away.
    pub fn settle(&mut self, now_ms: u64) {
        self.rules.retain(|r| r.until_ms.is_none_or(|until| until > now_ms));
        if let Some(expiry) = self.default_expiry.filter(|e| e.until_ms <= now_ms) {
            self.default = expiry.revert.unwrap_or_default();
            self.default_expiry = None;
        }
        self.bindings.retain_mut(|b| match b.expiry.filter(|e| e.until_ms <= now_ms) {
            None => true,
            Some(Expiry { revert: Some(previous), .. }) => {
                b.policy = previous;
                b.expiry = None;
                true
            }
            Some(Expiry { revert: None, .. }) => false,
        });
    }

    /// Adds a binding, keeping the narrowest ranges first.
    pub fn bind(&mut self, clients: &Cidr, policy: Policy) {
        self.bindings.push(Binding { clients: clients.to_string(), policy, expiry: None });
        self.bindings
            .sort_by_key(|b| std::cmp::Reverse(Cidr::parse(&b.clients).map_or(0, |c| c.prefix())));
    }

    /// Removes the binding for exactly this range.
    pub fn unbind(&mut self, clients: &Cidr) {
        let key = clients.to_string();
        self.bindings.retain(|b| b.clients != key);
    }

    /// True when no policy can inject anything, so requests need no further look.
    pub fn is_idle(&self) -> bool {
        self.rules.is_empty() && self.default.kind == FaultKind::None && self.bindings.iter().all(|b| b.policy.kind == FaultKind::None)
    }

    /// The state as `GET /injector` shows it at `now_ms`:
    /// `{"policy": {...}, "clients": [{"ip": ..., ...}]}`, with `ttl` (time left) on changes
    /// that end by themselves.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let with_ttl = |policy: &Policy, expiry: &Option<Expiry>| {
            let mut map = policy.to_json();
            if let Some(e) = expiry {
                map.insert("ttl", Millis(e.until_ms.saturating_sub(now_ms)).to_string().into());
            }
            map
        };
        let clients: Vec<Value> = self
            .bindings
            .iter()
            .map(|b| {
                let mut map = Map::new();
                map.insert("ip", b.clients.as_str().into());
                map.extend(with_ttl(&b.policy, &b.expiry));
                Value::Object(map)
            })
            .collect();
        let rules: Vec<Value> = self.rules.iter().map(|r| r.to_json(now_ms)).collect();
        json::object([
            ("rules", Value::Array(rules)),
            ("policy", with_ttl(&self.default, &self.default_expiry).into()),
            ("clients", Value::Array(clients)),
        ])
    }

    /// The form shared between workers: every field, with rules in the document's shape.
    pub fn to_stored(&self) -> Value {
        json::object([
            ("rules", Value::Array(self.rules.iter().map(Rule::to_stored).collect())),
            ("default", self.default.to_stored()),
            ("default_expiry", self.default_expiry.map(|e| e.to_stored()).into()),
            ("bindings", Value::Array(self.bindings.iter().map(Binding::to_stored).collect())),
        ])
    }

    /// Reads the shared form back; `None` when any part is unreadable.
    pub fn from_stored(value: &Value) -> Option<State> {
        let rules = match value.get("rules") {
            None => &[][..],
            Some(v) => v.as_array()?.as_slice(),
        };
        Some(State {
            rules: rules.iter().map(Rule::from_stored).collect::<Option<_>>()?,
            default: Policy::from_stored(value.get("default")?)?,
            default_expiry: optional(value, "default_expiry", Expiry::from_stored)?,
            bindings: value.get("bindings")?.as_array()?.iter().map(Binding::from_stored).collect::<Option<_>>()?,
        })
    }

    /// The compact form shared between workers.
    pub fn encode(&self) -> Vec<u8> {
        self.to_stored().to_string().into_bytes()
    }

    /// Reads the shared form back; `None` when it is absent or unreadable.
    pub fn decode(bytes: &[u8]) -> Option<State> {
        State::from_stored(&json::parse(bytes).ok()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::json::testing::at;

    #[test]
    fn narrowest_binding_wins_over_default() {
        let mut state = State::default();
        let wide = Policy { kind: FaultKind::StatusResponse, ..Policy::default() };
        let narrow = Policy { kind: FaultKind::None, ..Policy::default() };
        state.bind(&Cidr::parse("127.0.0.0/8").unwrap(), wide);
        state.bind(&Cidr::parse("127.0.0.3").unwrap(), narrow);
        assert_eq!(state.policy_for(Some("127.0.0.2".parse().unwrap())).kind, FaultKind::StatusResponse);
        assert_eq!(state.policy_for(Some("127.0.0.3".parse().unwrap())).kind, FaultKind::None);
        assert_eq!(state.policy_for(Some("10.0.0.1".parse().unwrap())).kind, FaultKind::None);
        assert_eq!(state.policy_for(None).kind, FaultKind::None);
        assert!(!state.is_idle());
    }

    #[test]
    fn ttl_changes_end_by_themselves() {
        let aborting = Policy { kind: FaultKind::StatusResponse, ..Policy::default() };
        let ip = Cidr::parse("10.0.0.1").unwrap();
        let mut state = State { default: aborting, ..State::default() };
        state.default_expiry = Some(Expiry { until_ms: 1000, revert: Some(Policy::default()) });
        state.bind(&ip, aborting);
        *state.binding_expiry_mut(&ip).unwrap() = Some(Expiry { until_ms: 500, revert: None });
        assert_eq!(state.next_expiry(), Some(500));
        assert_eq!(at(&state.to_json(400), "policy.ttl").as_str(), Some("600ms"));
        state.settle(499);
        assert_eq!(state.bindings.len(), 1);
        state.settle(500);
        assert!(state.bindings.is_empty());
        assert_eq!(state.default.kind, FaultKind::StatusResponse);
        state.settle(1000);
        assert_eq!(state, State::default());
        assert_eq!(state.next_expiry(), None);
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut state = State::default();
        state.bind(&Cidr::parse("10.0.0.0/8").unwrap(), Policy::default());
        assert_eq!(State::decode(&state.encode()), Some(state));
        assert_eq!(State::decode(b"garbage"), None);
        assert_eq!(State::decode(b"{}"), None);
    }

    /// A state with every part: a rule with `ttl`, a default and a binding with expiries.
    fn full_state() -> State {
        let document = br#"{"rules": [{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 503, "grpc_status": 14}}, "percentage": 12.5, "ttl": "5m"}],
            "policy": {"status": 500, "percentage": 50, "ttl": "1m"}, "clients": [{"ip": "10.0.0.0/8", "timeout": "250ms"}]}"#;
        let mut state = crate::document::parse(document, 1000).unwrap();
        *state.binding_expiry_mut(&Cidr::parse("10.0.0.0/8").unwrap()).unwrap() = Some(Expiry { until_ms: 9000, revert: None });
        state
    }

    #[test]
    fn stored_form_keeps_every_part() {
        let state = full_state();
        assert!(state.default_expiry.is_some() && state.rules[0].until_ms.is_some());
        assert_eq!(State::from_stored(&state.to_stored()), Some(state.clone()));
        assert_eq!(State::decode(&state.encode()), Some(state));
    }

    #[test]
    fn state_stored_by_earlier_builds_still_reads() {
        let stored = br#"{"rules":[{"fault":{"abort":{"grpc_status":14,"status":503}},"match":{"path":{"prefix":"/a"}},"percentage":12.5,"until_ms":301000}],"default":{"kind":"StatusResponse","percentage":500000,"delay":10000,"status":500,"retries":10},"default_expiry":{"until_ms":61000,"revert":{"kind":"None","percentage":200000,"delay":10000,"status":503,"retries":10}},"bindings":[{"clients":"10.0.0.0/8","policy":{"kind":"DelayResponse","percentage":500000,"delay":250,"status":500,"retries":10},"expiry":{"until_ms":9000,"revert":null}}]}"#;
        assert_eq!(State::decode(stored), Some(full_state()));
    }

    #[test]
    fn json_view_uses_control_names() {
        let json = State::default().to_json(0);
        let policy = r#"{"policy":"none","percentage":20.0,"timeout":"10s","status":503,"boundedRetries":10}"#;
        assert_eq!(json.to_string(), format!(r#"{{"rules":[],"policy":{policy},"clients":[]}}"#));
    }
}
