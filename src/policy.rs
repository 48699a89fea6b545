//! The fault policy: what to inject, how often, and for which clients.

use crate::duration::Millis;
use crate::net::Cidr;
use crate::percentage::Percentage;
use crate::rules::Rule;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The most per-client bindings kept, so the state stays small to copy between workers.
pub const MAX_CLIENTS: usize = 256;

/// What a sampled request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// One policy: the fault kind and every parameter, kept even while another kind is active
/// so that `policy=delayResponse` reuses the last `timeout` given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        map.insert("policy".into(), self.kind.name().into());
        map.insert("percentage".into(), self.percentage.as_f64().into());
        map.insert("timeout".into(), self.delay.to_string().into());
        map.insert("status".into(), self.status.into());
        map.insert("boundedRetries".into(), self.retries.into());
        map
    }
}

/// A change made with `ttl`: when it ends, and what comes back then (`None`: no binding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    /// When the change ends, in milliseconds since the epoch.
    pub until_ms: u64,
    /// The policy in force before the change.
    pub revert: Option<Policy>,
}

/// A policy bound to a client address range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The clients this policy is for.
    pub clients: String,
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
    pub fn to_json(&self, now_ms: u64) -> serde_json::Value {
        let with_ttl = |policy: &Policy, expiry: &Option<Expiry>| {
            let mut map = policy.to_json();
            if let Some(e) = expiry {
                map.insert("ttl".into(), Millis(e.until_ms.saturating_sub(now_ms)).to_string().into());
            }
            map
        };
        let clients: Vec<serde_json::Value> = self
            .bindings
            .iter()
            .map(|b| {
                let mut map = serde_json::Map::new();
                map.insert("ip".into(), b.clients.clone().into());
                map.extend(with_ttl(&b.policy, &b.expiry));
                serde_json::Value::Object(map)
            })
            .collect();
        let rules: Vec<serde_json::Value> = self.rules.iter().map(|r| r.to_json(now_ms)).collect();
        serde_json::json!({ "rules": rules, "policy": with_ttl(&self.default, &self.default_expiry), "clients": clients })
    }

    /// The compact form shared between workers.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the shared form back; `None` when it is absent or unreadable.
    pub fn decode(bytes: &[u8]) -> Option<State> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        assert_eq!(state.to_json(400)["policy"]["ttl"], "600ms");
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
    }

    #[test]
    fn json_view_uses_control_names() {
        let json = State::default().to_json(0);
        assert_eq!(json["policy"]["policy"], "none");
        assert_eq!(json["policy"]["percentage"], 20.0);
        assert_eq!(json["policy"]["timeout"], "10s");
        assert_eq!(json["policy"]["status"], 503);
        assert_eq!(json["policy"]["boundedRetries"], 10);
    }
}
