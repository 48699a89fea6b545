//! Plugin configuration: Envoy's `configuration` string or Istio's `pluginConfig`, parsed
//! once at configure time into typed values, refused whole with the key that is wrong.

use crate::duration::{self, Millis};
use crate::net::{self, Cidr};
use crate::policy::State;
use crate::query::{Call, ControlError};
use crate::retries::{self, Limits};
use crate::rules::{self, DocError, Rule};
use crate::sampling::identity_hash;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Why a plugin configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// Not JSON, an unknown key, or a value of the wrong type (serde names unknown keys).
    Json(serde_json::Error),
    /// A policy value the control API would refuse too.
    Policy {
        /// Where in the configuration.
        key: String,
        /// Why.
        error: ControlError,
    },
    /// A bad start rule, with its JSON path.
    Document(DocError),
    /// Any other bad value.
    BadValue {
        /// The key.
        key: &'static str,
        /// What was given.
        value: String,
        /// What is accepted.
        accepted: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Json(e) => write!(f, "invalid plugin configuration: {e}"),
            ConfigError::Policy { key, error } => write!(f, "invalid plugin configuration: {key}: {error}"),
            ConfigError::Document(e) => write!(f, "invalid plugin configuration: {e}"),
            ConfigError::BadValue { key, value, accepted } => {
                write!(f, "invalid plugin configuration: {key}: '{value}' is not accepted; expected {accepted}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Option<String>,
    #[serde(default)]
    policy: Map<String, Value>,
    #[serde(default)]
    clients: Vec<Map<String, Value>>,
    #[serde(default)]
    simple_response: RawResponse,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    bounded_retries: RawRetries,
    max_active_delays: Option<u64>,
    rules: Option<Value>,
    #[serde(default)]
    header_faults: RawHeaderFaults,
    sample_by: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeaderFaults {
    enabled: Option<bool>,
    max_delay: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    status: Option<u16>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    enabled: Option<bool>,
    path: Option<String>,
    port: Option<u64>,
    filter_state: Option<String>,
    post_documents: Option<bool>,
    allowed_cidrs: Option<Vec<String>>,
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetries {
    window: Option<String>,
    max_entries: Option<usize>,
}

/// The canned response of `simpleResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleResponse {
    /// Its status (200 by default).
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
}

/// Who may use the control route, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    /// Off: this listener passes the control path through to the upstream.
    pub enabled: bool,
    /// The path of the control route (`/injector`).
    pub path: String,
    /// If set, only requests that arrived at this local port are control calls, so one
    /// configuration serves a data listener (whose `/injector` is the app's) and a
    /// control listener.
    pub port: Option<u16>,
    /// If set, only requests on connections that carry this filter-state object are control
    /// calls. Envoy's `set_filter_state` network filter puts it on the control listener's
    /// connections; the data listener's requests then skip the control route after one
    /// cheap lookup that finds nothing, where `port` needs `:path` copied into the module
    /// for every request (BENCHMARKS.md).
    pub filter_state: Option<String>,
    /// `POST /injector` reads its body. Envoy gives a Wasm filter the body only after the
    /// next filter has seen the headers, so this needs Envoy's buffer filter right after
    /// this one on the control route; without it the request would reach the upstream.
    pub post_documents: bool,
    /// Client ranges allowed (loopback by default).
    pub allowed: Vec<Cidr>,
    /// A bearer token required, if set.
    pub token: Option<String>,
}

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
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "id": format!("{:016x}", self.id), "version": self.version })
    }
}

/// Faults requests ask for themselves (`x-fault-*` headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderFaults {
    /// Off by default: only a configuration can let requests fault themselves.
    pub enabled: bool,
    /// The longest `x-fault-delay-ms` honoured.
    pub max_delay: Millis,
}

/// The whole configuration, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// A label of the user's choosing, shown by `GET /injector` to tell which
    /// configuration is in force.
    pub version: Option<String>,
    /// The policy state at start and after `reset`.
    pub start: State,
    /// The canned response.
    pub simple_response: SimpleResponse,
    /// The control route.
    pub control: Control,
    /// The bounded-retry table's limits.
    pub retry_limits: Limits,
    /// The most requests held at once in the whole Envoy; past it, requests pass untouched.
    pub max_active_delays: u64,
    /// Faults requests ask for themselves.
    pub header_faults: HeaderFaults,
    /// A request header whose value samples the default and per-client policies, so the
    /// same value is always in or always out; at random when unset or absent.
    pub sample_by: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        // An empty object always parses; the fallback only keeps this free of panics.
        Config::parse(b"").unwrap_or_else(|_| Config {
            version: None,
            start: State::default(),
            simple_response: SimpleResponse { status: 200, headers: Vec::new(), body: String::new() },
            control: Control { enabled: true, path: "/injector".into(), port: None, filter_state: None, post_documents: false, allowed: net::loopback(), token: None },
            retry_limits: Limits { window_ms: 60_000, per_shard: 1 },
            max_active_delays: DEFAULT_MAX_ACTIVE_DELAYS,
            header_faults: HeaderFaults { enabled: false, max_delay: Millis(10_000) },
            sample_by: None,
        })
    }
}

const DEFAULT_MAX_ACTIVE_DELAYS: u64 = 10_000;
const MAX_VERSION_LEN: usize = 64;
const DEFAULT_BODY: &str = "fault-injector: simple response\n";
const FILTER_STATE_ACCEPTED: &str = "a filter-state key of 1 to 128 letters, digits, '.', '_' or '-', such as fault_injector.control";
const CIDR_ACCEPTED: &str = "a list of addresses or CIDRs such as [\"10.0.0.0/8\"]";

impl Config {
    /// Parses the configuration bytes; empty bytes mean every default.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: Raw = if bytes.iter().all(u8::is_ascii_whitespace) {
            Raw::default()
        } else {
            serde_json::from_slice(bytes).map_err(ConfigError::Json)?
        };
        if let Some(version) = &raw.version {
            if version.is_empty() || version.len() > MAX_VERSION_LEN || version.chars().any(char::is_control) {
                let value = version.chars().take(MAX_VERSION_LEN).collect();
                return Err(ConfigError::BadValue { key: "version", value, accepted: "a label of 1 to 64 printable characters" });
            }
        }
        let mut start = State::default();
        start = policy_call("policy", &raw.policy, false)?
            .apply(&start, &start, 0)
            .map_err(|error| ConfigError::Policy { key: "policy".into(), error })?;
        for (i, client) in raw.clients.iter().enumerate() {
            let key = format!("clients[{i}]");
            let call = policy_call(&key, client, true)?;
            start = call.apply(&start, &start, 0).map_err(|error| ConfigError::Policy { key, error })?;
        }
        let status = raw.simple_response.status.unwrap_or(200);
        if !(200..=599).contains(&status) {
            return Err(ConfigError::BadValue {
                key: "simple_response.status",
                value: status.to_string(),
                accepted: "an HTTP status from 200 to 599",
            });
        }
        let path = raw.control.path.unwrap_or_else(|| "/injector".into());
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(ConfigError::BadValue { key: "control.path", value: path, accepted: "a path starting with '/', without '?' or '#'" });
        }
        let allowed = match raw.control.allowed_cidrs {
            None => net::loopback(),
            Some(list) => list
                .iter()
                .map(|c| Cidr::parse(c).ok_or_else(|| ConfigError::BadValue { key: "control.allowed_cidrs", value: c.clone(), accepted: CIDR_ACCEPTED }))
                .collect::<Result<_, _>>()?,
        };
        if raw.control.token.as_deref() == Some("") {
            return Err(ConfigError::BadValue { key: "control.token", value: String::new(), accepted: "a non-empty token" });
        }
        let window = raw.bounded_retries.window.unwrap_or_else(|| "60s".into());
        let window_ms = match duration::parse(&window) {
            Some(Millis(ms)) if ms > 0 => ms,
            _ => return Err(ConfigError::BadValue { key: "bounded_retries.window", value: window, accepted: duration::ACCEPTED }),
        };
        let max_entries = raw.bounded_retries.max_entries.unwrap_or(10_000);
        if !(1..=1_000_000).contains(&max_entries) {
            return Err(ConfigError::BadValue { key: "bounded_retries.max_entries", value: max_entries.to_string(), accepted: "a whole number from 1 to 1000000" });
        }
        let port = match raw.control.port {
            None => None,
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => Some(p),
                _ => return Err(ConfigError::BadValue { key: "control.port", value: p.to_string(), accepted: "a port from 1 to 65535" }),
            },
        };
        if let Some(key) = &raw.control.filter_state {
            if !is_filter_state_key(key) {
                return Err(ConfigError::BadValue { key: "control.filter_state", value: key.clone(), accepted: FILTER_STATE_ACCEPTED });
            }
        }
        if let Some(rules) = &raw.rules {
            start.rules = Rule::parse_list("rules", rules, 0).map_err(ConfigError::Document)?;
            if let Some(i) = start.rules.iter().position(|r| r.until_ms.is_some()) {
                let error = DocError { path: format!("rules[{i}].ttl"), message: "a start rule cannot end by itself; give ttl in /injector calls".into() };
                return Err(ConfigError::Document(error));
            }
        }
        let max_delay = raw.header_faults.max_delay.unwrap_or_else(|| "10s".into());
        let max_delay = duration::parse(&max_delay)
            .ok_or(ConfigError::BadValue { key: "header_faults.max_delay", value: max_delay.clone(), accepted: duration::ACCEPTED })?;
        let sample_by = match raw.sample_by {
            Some(name) if !rules::is_header_name(&name) => {
                return Err(ConfigError::BadValue { key: "sample_by", value: name, accepted: "a header name, such as x-user-id" })
            }
            other => other.map(|n| n.to_ascii_lowercase()),
        };
        Ok(Config {
            version: raw.version,
            start,
            simple_response: SimpleResponse {
                status,
                headers: raw.simple_response.headers,
                body: raw.simple_response.body.unwrap_or_else(|| DEFAULT_BODY.into()),
            },
            control: Control { enabled: raw.control.enabled.unwrap_or(true), path, port, filter_state: raw.control.filter_state, post_documents: raw.control.post_documents.unwrap_or(false), allowed, token: raw.control.token },
            retry_limits: Limits { window_ms, per_shard: max_entries.div_ceil(retries::SHARDS as usize) },
            max_active_delays: raw.max_active_delays.unwrap_or(DEFAULT_MAX_ACTIVE_DELAYS),
            header_faults: HeaderFaults { enabled: raw.header_faults.enabled.unwrap_or(false), max_delay },
            sample_by,
        })
    }
}

fn is_filter_state_key(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Reads a policy object (`{"policy": "statusResponse", "status": 503}`) through the control
/// API's own parser, so configuration and `/injector` accept the same values.
fn policy_call(key: &str, object: &Map<String, Value>, needs_ip: bool) -> Result<Call, ConfigError> {
    if let Some(name) = object.keys().find(|k| *k == "reset" || *k == "ttl") {
        let error = ControlError::UnknownParameter(name.clone());
        return Err(ConfigError::Policy { key: key.to_string(), error });
    }
    let call = Call::from_object(object).map_err(|(name, error)| {
        let key = name.map_or_else(|| key.to_string(), |n| format!("{key}.{n}"));
        ConfigError::Policy { key, error }
    })?;
    if needs_ip != call.ip.is_some() {
        let error = if needs_ip {
            ControlError::BadValue { parameter: "ip", value: String::new(), accepted: net::ACCEPTED }
        } else {
            ControlError::UnknownParameter("ip".into())
        };
        return Err(ConfigError::Policy { key: key.to_string(), error });
    }
    Ok(call)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::percentage::Percentage;
    use crate::policy::FaultKind;

    fn error_of(text: &str) -> String {
        Config::parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn empty_and_empty_object_are_the_defaults() {
        let config = Config::parse(b"").unwrap();
        assert_eq!(config, Config::parse(b"{}").unwrap());
        assert_eq!(config.start, State::default());
        assert_eq!(config.simple_response.status, 200);
        assert!(config.control.enabled);
        assert_eq!(config.control.path, "/injector");
        assert_eq!(config.control.allowed, net::loopback());
        assert_eq!(config.retry_limits, Limits { window_ms: 60_000, per_shard: 625 });
        assert_eq!(config.max_active_delays, 10_000);
    }

    #[test]
    fn full_configuration() {
        let config = Config::parse(br#"{
            "version": "checkout-slow 2",
            "policy": {"policy": "statusResponse", "status": 500, "percentage": 12.5},
            "clients": [{"ip": "10.0.0.0/8", "timeout": "250ms", "percentage": 100}],
            "simple_response": {"status": 201, "headers": [["x-a", "b"]], "body": "hi"},
            "control": {"enabled": false, "path": "/fault", "port": 8282, "filter_state": "fault_injector.control", "allowed_cidrs": ["10.0.0.0/8"], "token": "s3cret"},
            "bounded_retries": {"window": "10s", "max_entries": 160}
        }"#).unwrap();
        assert_eq!(config.start.default.kind, FaultKind::StatusResponse);
        assert_eq!(config.start.default.percentage, Percentage(125_000));
        let client = config.start.policy_for(Some("10.1.1.1".parse().unwrap()));
        assert_eq!((client.kind, client.delay, client.status), (FaultKind::DelayResponse, Millis(250), 500));
        assert_eq!(config.simple_response.headers, vec![("x-a".to_string(), "b".to_string())]);
        assert!(!config.control.enabled);
        assert_eq!(config.control.token.as_deref(), Some("s3cret"));
        assert_eq!(config.control.port, Some(8282));
        assert_eq!(config.control.filter_state.as_deref(), Some("fault_injector.control"));
        assert_eq!(config.version.as_deref(), Some("checkout-slow 2"));
        assert_eq!(config.retry_limits, Limits { window_ms: 10_000, per_shard: 10 });
    }

    #[test]
    fn rules_header_faults_and_sampling() {
        let config = Config::parse(br#"{
            "rules": [{"match": {"method": "POST"}, "fault": {"abort": {"status": 503}}}],
            "header_faults": {"enabled": true, "max_delay": "2s"},
            "sample_by": "X-User-Id",
            "control": {"post_documents": true}
        }"#).unwrap();
        assert_eq!(config.start.rules.len(), 1);
        assert_eq!(config.header_faults, HeaderFaults { enabled: true, max_delay: Millis(2000) });
        assert_eq!(config.sample_by.as_deref(), Some("x-user-id"));
        assert!(config.control.post_documents);
        let defaults = Config::parse(b"{}").unwrap();
        assert!(!defaults.header_faults.enabled && !defaults.control.post_documents && defaults.sample_by.is_none());
    }

    #[test]
    fn any_edit_makes_a_new_origin() {
        let a = br#"{"version": "v1", "policy": {"status": 500}}"#;
        let b = br#"{"version": "v1", "policy": {"status": 500}, "max_active_delays": 5}"#;
        let origin = |bytes: &[u8]| Origin::of(bytes, &Config::parse(bytes).unwrap());
        assert_eq!(origin(a), origin(a));
        assert_ne!(origin(a).id, origin(b).id);
        assert_eq!(origin(a).to_json()["version"], "v1");
        assert_eq!(origin(a).to_json()["id"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn each_bad_value_names_its_key() {
        for (text, needle) in [
            ("nonsense", "invalid plugin configuration"),
            (r#"{"polcy": {}}"#, "unknown field `polcy`"),
            (r#"{"control": {"tokn": "x"}}"#, "unknown field `tokn`"),
            (r#"{"policy": {"status": 700}}"#, "policy: status: '700'"),
            (r#"{"policy": {"percentage": true}}"#, "policy.percentage"),
            (r#"{"policy": {"ip": "10.0.0.1"}}"#, "policy: unknown parameter 'ip'"),
            (r#"{"clients": [{"status": 500}]}"#, "clients[0]: ip"),
            (r#"{"clients": [{"ip": "nope"}]}"#, "clients[0]: ip: 'nope'"),
            (r#"{"simple_response": {"status": 99}}"#, "simple_response.status"),
            (r#"{"control": {"path": "injector"}}"#, "control.path"),
            (r#"{"control": {"allowed_cidrs": ["10.0.0.0/99"]}}"#, "control.allowed_cidrs: '10.0.0.0/99'"),
            (r#"{"control": {"token": ""}}"#, "control.token"),
            (r#"{"control": {"port": 0}}"#, "control.port: '0'"),
            (r#"{"rules": [{"fault": {"nap": {}}}]}"#, "rules[0].fault: give one of"),
            (r#"{"rules": [{"fault": {"abort": {"status": 503}}, "ttl": "1m"}]}"#, "rules[0].ttl: a start rule cannot end"),
            (r#"{"header_faults": {"max_delay": "2h"}}"#, "header_faults.max_delay"),
            (r#"{"sample_by": "x user"}"#, "sample_by: 'x user'"),
            (r#"{"control": {"port": 70000}}"#, "control.port: '70000'"),
            (r#"{"control": {"filter_state": ""}}"#, "control.filter_state: ''"),
            (r#"{"control": {"filter_state": "a key"}}"#, "control.filter_state: 'a key' is not accepted; expected a filter-state key"),
            (r#"{"version": ""}"#, "version: ''"),
            (r#"{"version": 3}"#, "invalid type: integer `3`, expected a string"),
            (r#"{"bounded_retries": {"window": "0"}}"#, "bounded_retries.window"),
            (r#"{"bounded_retries": {"max_entries": 0}}"#, "bounded_retries.max_entries"),
        ] {
            let message = error_of(text);
            assert!(message.contains(needle), "{text}: {message}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes are a configuration or a clear error; never a panic.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = Config::parse(&bytes) {
                prop_assert!(e.to_string().starts_with("invalid plugin configuration"));
            }
        }

        /// Well-formed JSON with the real keys and arbitrary values.
        #[test]
        fn real_keys_any_values(status in any::<i64>(), pct in any::<f64>(), window in "[ -~]{0,8}", path in "[ -~]{0,8}") {
            let text = serde_json::json!({
                "policy": {"status": status, "percentage": pct},
                "control": {"path": path},
                "bounded_retries": {"window": window},
            }).to_string();
            if let Err(e) = Config::parse(text.as_bytes()) {
                prop_assert!(e.to_string().starts_with("invalid plugin configuration"));
            }
        }
    }
}
