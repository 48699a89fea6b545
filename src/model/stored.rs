//! What the filter keeps in proxy-wasm shared data under `fault_injector.state`: the policy
//! state, with the plugin configuration it started from. Written with serde in the form
//! every earlier build wrote, so that a new build reads the state an old one left.

use crate::config::Config;
use crate::model::policy::State;
use crate::model::sampling::identity_hash;
use serde::{Deserialize, Serialize};

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
}
