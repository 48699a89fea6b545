//! What the filter keeps in proxy-wasm shared data under `fault_injector.state`: the policy
//! state, with the plugin configuration it started from. Written with serde in the form
//! every earlier build wrote, so that a new build reads the state an old one left, and an
//! old one (after a rollback) reads what a new one wrote: a query policy is kept as its
//! `kind` and the values last given (`{"kind": "StatusResponse", "percentage": 500000,
//! "delay": 10000, "status": 500, "retries": 10}`), its end beside it (`default_expiry`,
//! a binding's `expiry`). This is the only place that form is read or written.

use crate::config::Config;
use crate::faults::request_rewrite::RequestRewrite;
use crate::guard::{Guard, Shown};
use crate::model::duration::{self, Millis};
use crate::model::net::Cidr;
use crate::model::percentage::{self, Percentage};
use crate::model::policy::{policy_name, Binding, Canned, KindParameters, Settings, Seed, State};
use crate::model::rules::Rule;
use crate::model::sampling::identity_hash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which plugin configuration the shared policy was last started from. A configuration
/// installs its start policy once, when its origin differs from the stored one, however
/// many workers and listeners configure with it; `GET /injector` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// A hash of the configuration's bytes, so any edit makes a new origin.
    pub id: u64,
    /// The configuration's `version` label, if it has one.
    #[serde(default)]
    pub version: Option<String>,
}

impl Origin {
    /// The origin of a configuration parsed from `bytes`.
    pub fn of(bytes: &[u8], config: &Config) -> Origin {
        Origin { id: identity_hash(&[bytes]), version: config.version.clone() }
    }

    /// The form `GET /injector` shows: the id in hex, and the label.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({"id": format!("{:016x}", self.id), "version": self.version})
    }
}

/// The state as stored, with the configuration whose start it came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The configuration the state started from; the default one when missing.
    #[serde(default)]
    pub origin: Origin,
    /// The policy state.
    pub state: State,
}

impl Stored {
    /// The bytes stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads what is stored; `None` when it is not a stored state (missing or unreadable).
    pub fn decode(bytes: &[u8]) -> Option<Stored> {
        // Through the same reader as the inputs: one copy of each type's deserializer in
        // the module instead of two.
        crate::model::values::read(bytes, crate::model::values::UnknownKeys::InMessage).ok()
    }
}

/// A query policy as stored: its kind (the policy's name, capitalized: `StatusResponse`)
/// and every value, in the members and order earlier builds wrote.
#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    kind: String,
    #[serde(with = "percentage::ppm")]
    percentage: Percentage,
    #[serde(with = "duration::whole_ms")]
    delay: Millis,
    status: u16,
    retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p50: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p99: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    corrupt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "stored_rewrite")]
    rewrite: Option<RequestRewrite>,
}

/// Reads a stored rewrite through the fault's own checks.
fn stored_rewrite<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<RequestRewrite>, D::Error> {
    RequestRewrite::deserialize(deserializer).map(Some)
}

/// When a `ttl` change ends. (Earlier builds stored a `revert` policy here too; it is read
/// and ignored.)
#[derive(Serialize, Deserialize)]
struct Expiry {
    until_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredBinding {
    clients: Cidr,
    policy: StoredPolicy,
    #[serde(default)]
    expiry: Option<Expiry>,
}

#[derive(Serialize, Deserialize)]
struct StoredState {
    #[serde(default)]
    rules: Vec<Rule>,
    default: StoredPolicy,
    #[serde(default)]
    default_expiry: Option<Expiry>,
    bindings: Vec<StoredBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guard: Option<Guard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    halted: Option<Shown>,
}

impl StoredPolicy {
    fn of(seed: &Seed) -> (StoredPolicy, Option<Expiry>) {
        let g = seed.given.clone();
        let mut kind = seed.name().to_string();
        if let Some(first) = kind.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let policy = StoredPolicy {
            kind,
            percentage: g.percentage,
            delay: g.delay,
            status: g.status,
            retries: g.retries,
            after: g.by_kind.after,
            after_bytes: g.by_kind.after_bytes,
            bytes_per_second: g.by_kind.bytes_per_second,
            p50: g.by_kind.p50,
            p99: g.by_kind.p99,
            corrupt: g.by_kind.corrupt,
            rewrite: g.by_kind.rewrite,
        };
        (policy, seed.until_ms.map(|until_ms| Expiry { until_ms }))
    }

    /// The seed stored; `None` for a kind no build knows. A policy that the values make no
    /// fault of (a hand-edited state) injects nothing, as earlier builds did.
    fn seed(self, expiry: Option<Expiry>) -> Option<Seed> {
        let mut kind = self.kind;
        if let Some(first) = kind.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        let name = policy_name(&kind).filter(|n| *n == kind)?;
        let given = Settings {
            percentage: self.percentage,
            delay: self.delay,
            status: self.status,
            retries: self.retries,
            by_kind: KindParameters {
                after: self.after,
                after_bytes: self.after_bytes,
                bytes_per_second: self.bytes_per_second,
                p50: self.p50,
                p99: self.p99,
                corrupt: self.corrupt,
                rewrite: self.rewrite,
            },
        };
        // Built with the default canned response; `State::resolve` puts the configured one in.
        let fault = Seed::build(name, &given, &Canned::default()).ok().flatten();
        Some(Seed { fault, until_ms: expiry.map(|e| e.until_ms), given })
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (default, default_expiry) = StoredPolicy::of(&self.default);
        let bindings = self.bindings.iter().map(|b| {
            let (policy, expiry) = StoredPolicy::of(&b.seed);
            StoredBinding { clients: b.clients, policy, expiry }
        });
        let stored = StoredState {
            rules: self.rules.clone(),
            default,
            default_expiry,
            bindings: bindings.collect(),
            guard: self.guard.clone(),
            halted: self.halted.clone(),
        };
        stored.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredState::deserialize(deserializer)?;
        let unknown = || serde::de::Error::custom("a policy kind this build does not know");
        let default = stored.default.seed(stored.default_expiry).ok_or_else(unknown)?;
        let mut bindings = Vec::with_capacity(stored.bindings.len());
        for b in stored.bindings {
            bindings.push(Binding { clients: b.clients, seed: b.policy.seed(b.expiry).ok_or_else(unknown)? });
        }
        Ok(State { rules: stored.rules, default, bindings, guard: stored.guard, halted: stored.halted })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn any_edit_makes_a_new_origin() {
        let a = br#"{"version": "v1", "policy": {"status": 500}}"#;
        let b = br#"{"version": "v1", "policy": {"status": 500}, "max_active_delays": 5}"#;
        let origin = |bytes: &[u8]| Origin::of(bytes, &Config::parse(bytes).unwrap());
        assert_eq!(origin(a), origin(a));
        assert_ne!(origin(a).id, origin(b).id);
        assert_eq!(origin(a).view()["version"], "v1");
        assert_eq!(origin(a).view()["id"].as_str().map(str::len), Some(16));
    }

    #[test]
    fn stored_form_reads_back_as_earlier_builds_wrote_it() {
        let origin = Origin { id: u64::MAX, version: Some("v\"1".into()) };
        let stored = Stored { origin: origin.clone(), state: State::default() };
        assert_eq!(Stored::decode(&stored.encode()), Some(stored));
        let written = br#"{"origin":{"id":18446744073709551615,"version":"v\"1"},"state":{"rules":[],"default":{"kind":"None","percentage":200000,"delay":10000,"status":503,"retries":10},"default_expiry":null,"bindings":[]}}"#;
        assert_eq!(Stored::decode(written).map(|s| s.origin), Some(origin));
        assert_eq!(Stored::decode(br#"{"state":{"default":{"kind":"None","percentage":200000,"delay":10000,"status":503,"retries":10},"bindings":[]}}"#).map(|s| s.origin), Some(Origin::default()));
        assert_eq!(Stored::decode(b""), None);
    }

    fn decode(bytes: &[u8]) -> Option<State> {
        serde_json::from_slice(bytes).ok()
    }

    #[test]
    fn stored_form_round_trip() {
        let mut state = State::default();
        state.bind(&Cidr::parse("10.0.0.0/8").unwrap(), Seed::default());
        assert_eq!(decode(&serde_json::to_vec(&state).unwrap()), Some(state));
        assert_eq!(decode(b"garbage"), None);
        assert_eq!(decode(b"{}"), None);
        assert_eq!(decode(br#"{"default":{"kind":"Chaos","percentage":0,"delay":0,"status":503,"retries":1},"bindings":[]}"#), None);
    }

    /// A state with every part: a rule with `ttl`, a default and a binding with expiries.
    fn full_state() -> State {
        let text = br#"{"rules": [{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 503, "grpc_status": 14}}, "percentage": 12.5, "ttl": "5m"}],
            "policy": {"status": 500, "percentage": 50, "ttl": "1m"}, "clients": [{"ip": "10.0.0.0/8", "timeout": "250ms"}]}"#;
        let mut state = crate::model::document::parse(text, 1000).unwrap();
        state.binding_mut(&Cidr::parse("10.0.0.0/8").unwrap()).unwrap().until_ms = Some(9000);
        state
    }

    #[test]
    fn stored_form_keeps_every_part() {
        let state = full_state();
        assert!(state.default.until_ms.is_some() && state.rules[0].until_ms.is_some());
        assert_eq!(decode(&serde_json::to_vec(&state).unwrap()), Some(state));
    }

    #[test]
    fn state_stored_by_earlier_builds_still_reads() {
        let stored = br#"{"rules":[{"fault":{"abort":{"grpc_status":14,"status":503}},"match":{"path":{"prefix":"/a"}},"percentage":12.5,"until_ms":301000}],"default":{"kind":"StatusResponse","percentage":500000,"delay":10000,"status":500,"retries":10},"default_expiry":{"until_ms":61000,"revert":{"kind":"None","percentage":200000,"delay":10000,"status":503,"retries":10}},"bindings":[{"clients":"10.0.0.0/8","policy":{"kind":"DelayResponse","percentage":500000,"delay":250,"status":500,"retries":10},"expiry":{"until_ms":9000,"revert":null}}]}"#;
        assert_eq!(decode(stored), Some(full_state()));
        // And this build writes what earlier builds read: the same members, in this order.
        let written = String::from_utf8(serde_json::to_vec(&full_state()).unwrap()).unwrap();
        assert!(written.contains(r#""default":{"kind":"StatusResponse","percentage":500000,"delay":10000,"status":500,"retries":10}"#), "{written}");
        assert!(written.contains(r#""default_expiry":{"until_ms":61000}"#), "{written}");
        for kind in crate::model::policy::NAMES {
            let mut capitalized = kind.to_string();
            capitalized[..1].make_ascii_uppercase();
            let text = format!(r#"{{"default":{{"kind":"{capitalized}","percentage":0,"delay":0,"status":503,"retries":1,"rewrite":{{"path":"/x"}}}},"bindings":[]}}"#);
            assert_eq!(decode(text.as_bytes()).map(|s| s.default.name()), Some(kind), "{text}");
        }
    }
}
