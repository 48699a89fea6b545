//! Plugin configuration: Envoy's `configuration` string or Istio's `pluginConfig`, parsed
//! once at configure time into typed values, refused whole with the key that is wrong.

use crate::duration::{self, Millis};
use crate::net::{self, Cidr};
use crate::policy::State;
use crate::query::{Call, ControlError};
use crate::retries::{self, Limits};
use crate::rules::{self, DocError, Rule};
use crate::json::{self, JsonError, Map, Value};
use crate::sampling::identity_hash;
use std::fmt;

/// Why a plugin configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// Not JSON.
    Json(JsonError),
    /// A key the configuration does not have.
    UnknownKey {
        /// The object holding it (`control`), empty at the top.
        object: &'static str,
        /// The key.
        key: String,
        /// The keys that object accepts.
        accepted: &'static [&'static str],
    },
    /// A value of the wrong JSON type.
    WrongType {
        /// The key (`control.port`, `clients[0]`).
        key: String,
        /// What was given, as JSON.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
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
        write!(f, "invalid plugin configuration: ")?;
        match self {
            ConfigError::Json(e) => write!(f, "not JSON: {e}"),
            ConfigError::UnknownKey { object, key, accepted } => {
                if !object.is_empty() {
                    write!(f, "{object}: ")?;
                }
                // Quoted and cut as JSON shows it, then unquoted: a key may be anything.
                let shown = Value::from(key.as_str()).shown();
                let shown = shown.strip_prefix('"').unwrap_or(&shown);
                let shown = shown.strip_suffix('"').unwrap_or(shown);
                write!(f, "unknown field `{shown}`; accepted: {}", accepted.join(", "))
            }
            ConfigError::WrongType { key, value, expected } => write!(f, "{key}: {value} is not accepted; expected {expected}"),
            ConfigError::Policy { key, error } => write!(f, "{key}: {error}"),
            ConfigError::Document(e) => write!(f, "{e}"),
            ConfigError::BadValue { key, value, accepted } => write!(f, "{key}: '{value}' is not accepted; expected {accepted}"),
        }
    }
}

impl std::error::Error for ConfigError {}

const KEYS: &[&str] = &[
    "version",
    "policy",
    "clients",
    "simple_response",
    "control",
    "bounded_retries",
    "max_active_delays",
    "rules",
    "header_faults",
    "sample_by",
    "stats_flush",
];
const RESPONSE_KEYS: &[&str] = &["status", "headers", "body"];
const CONTROL_KEYS: &[&str] = &["enabled", "path", "port", "filter_state", "post_documents", "allowed_cidrs", "token"];
const RETRIES_KEYS: &[&str] = &["window", "max_entries"];
const HEADER_FAULTS_KEYS: &[&str] = &["enabled", "max_delay"];

fn wrong(key: String, value: &Value, expected: &'static str) -> ConfigError {
    ConfigError::WrongType { key, value: value.shown(), expected }
}

/// One object of the configuration (the top, or `control`...), read key by key. A key
/// left out takes its default; so does `null`, except where an object or list is wanted.
struct Section<'a> {
    name: &'static str,
    map: Option<&'a Map>,
}

impl<'a> Section<'a> {
    /// The object `value` (none: every key left out), refused whole if it has a key not
    /// in `keys`.
    fn of(name: &'static str, value: Option<&'a Value>, keys: &'static [&'static str]) -> Result<Section<'a>, ConfigError> {
        let Some(value) = value else { return Ok(Section { name, map: None }) };
        let map = value.as_object().ok_or_else(|| wrong(name.to_string(), value, "an object"))?;
        if let Some(key) = map.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(ConfigError::UnknownKey { object: name, key: key.clone(), accepted: keys });
        }
        Ok(Section { name, map: Some(map) })
    }

    /// The section's member `key`, as the key is named in errors.
    fn path(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    /// The member, `null` included.
    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key)
    }

    /// The member, `null` being left out.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.raw(key).filter(|v| !v.is_null())
    }

    fn read<T>(&self, key: &str, expected: &'static str, read: impl Fn(&'a Value) -> Option<T>) -> Result<Option<T>, ConfigError> {
        self.get(key).map(|v| read(v).ok_or_else(|| wrong(self.path(key), v, expected))).transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.read(key, "a string", |v| v.as_str().map(str::to_string))
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.read(key, "true or false", Value::as_bool)
    }

    fn whole(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.read(key, "a whole number", Value::as_u64)
    }

    /// A list whose items `item` reads, each named `key[i]` in errors.
    fn list<T>(&self, key: &str, expected: &'static str, item: impl Fn(&Value) -> Option<T>) -> Result<Option<Vec<T>>, ConfigError> {
        let Some(list) = self.read(key, "a list", Value::as_array)? else { return Ok(None) };
        let read = |(i, v): (usize, &Value)| item(v).ok_or_else(|| wrong(format!("{}[{i}]", self.path(key)), v, expected));
        list.iter().enumerate().map(read).collect::<Result<_, _>>().map(Some)
    }

    /// An object or list with a default: absent is `None`, but `null` is refused.
    fn required_kind(&self, key: &str, expected: &'static str, is_kind: fn(&Value) -> bool) -> Result<Option<&'a Value>, ConfigError> {
        match self.raw(key) {
            Some(v) if !is_kind(v) => Err(wrong(self.path(key), v, expected)),
            other => Ok(other),
        }
    }
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// A hash of the configuration's bytes, so any edit makes a new origin.
    pub id: u64,
    /// The configuration's `version` label, if it has one.
    pub version: Option<String>,
}

impl Origin {
    /// The origin of a configuration parsed from `bytes`.
    pub fn of(bytes: &[u8], config: &Config) -> Origin {
        Origin { id: identity_hash(&[bytes]), version: config.version.clone() }
    }

    /// The form `GET /injector` shows: the id in hex, and the label.
    pub fn to_json(&self) -> Value {
        json::object([("id", format!("{:016x}", self.id).into()), ("version", self.version.clone().into())])
    }

    /// The form shared between workers, with the state it started.
    pub fn to_stored(&self) -> Value {
        json::object([("id", self.id.into()), ("version", self.version.clone().into())])
    }

    /// Reads the shared form back.
    pub fn from_stored(value: &Value) -> Option<Origin> {
        let version = match value.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_str()?.to_string()),
        };
        Some(Origin { id: value.get("id")?.as_u64()?, version })
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
    /// The longest a worker keeps counter increments before handing them to Envoy:
    /// one host call per counter per flush instead of one per increment.
    pub stats_flush: Millis,
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
            stats_flush: Millis(100),
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
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            json::parse(bytes).map_err(ConfigError::Json)?
        };
        let top = Section::of("", Some(&value), KEYS)?;
        let version = top.string("version")?;
        if let Some(version) = &version {
            if version.is_empty() || version.len() > MAX_VERSION_LEN || version.chars().any(char::is_control) {
                let value = version.chars().take(MAX_VERSION_LEN).collect();
                return Err(ConfigError::BadValue { key: "version", value, accepted: "a label of 1 to 64 printable characters" });
            }
        }
        let no_policy = Map::new();
        let policy = top.required_kind("policy", "an object of control parameters", |v| v.as_object().is_some())?;
        let policy = policy.and_then(Value::as_object).unwrap_or(&no_policy);
        let mut start = State::default();
        start = policy_call("policy", policy, false)?
            .apply(&start, &start, 0)
            .map_err(|error| ConfigError::Policy { key: "policy".into(), error })?;
        let clients = top.required_kind("clients", "a list of objects with 'ip'", |v| v.as_array().is_some())?;
        for (i, client) in clients.and_then(Value::as_array).into_iter().flatten().enumerate() {
            let key = format!("clients[{i}]");
            let client = client.as_object().ok_or_else(|| wrong(key.clone(), client, "an object with 'ip'"))?;
            let call = policy_call(&key, client, true)?;
            start = call.apply(&start, &start, 0).map_err(|error| ConfigError::Policy { key, error })?;
        }
        let response = Section::of("simple_response", top.raw("simple_response"), RESPONSE_KEYS)?;
        let status = response.whole("status")?.unwrap_or(200);
        let status = match u16::try_from(status) {
            Ok(s) if (200..=599).contains(&s) => s,
            _ => {
                let (key, value, accepted) = ("simple_response.status", status.to_string(), "an HTTP status from 200 to 599");
                return Err(ConfigError::BadValue { key, value, accepted });
            }
        };
        // The list has a default, so `null` is refused before its items are read.
        response.required_kind("headers", "a list of [name, value] pairs", |v| v.as_array().is_some())?;
        let pair = |v: &Value| match v.as_array()?.as_slice() {
            [name, value] => Some((name.as_str()?.to_string(), value.as_str()?.to_string())),
            _ => None,
        };
        let headers = response.list("headers", "a [name, value] pair of strings", pair)?.unwrap_or_default();
        let body = response.string("body")?;
        let control = Section::of("control", top.raw("control"), CONTROL_KEYS)?;
        let path = control.string("path")?.unwrap_or_else(|| "/injector".into());
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(ConfigError::BadValue { key: "control.path", value: path, accepted: "a path starting with '/', without '?' or '#'" });
        }
        let allowed = match control.list("allowed_cidrs", "a string", |v| v.as_str().map(str::to_string))? {
            None => net::loopback(),
            Some(list) => list
                .iter()
                .map(|c| Cidr::parse(c).ok_or_else(|| ConfigError::BadValue { key: "control.allowed_cidrs", value: c.clone(), accepted: CIDR_ACCEPTED }))
                .collect::<Result<_, _>>()?,
        };
        let token = control.string("token")?;
        if token.as_deref() == Some("") {
            return Err(ConfigError::BadValue { key: "control.token", value: String::new(), accepted: "a non-empty token" });
        }
        let bounded = Section::of("bounded_retries", top.raw("bounded_retries"), RETRIES_KEYS)?;
        let window = bounded.string("window")?.unwrap_or_else(|| "60s".into());
        let window_ms = match duration::parse(&window) {
            Some(Millis(ms)) if ms > 0 => ms,
            _ => return Err(ConfigError::BadValue { key: "bounded_retries.window", value: window, accepted: duration::ACCEPTED }),
        };
        let max_entries = bounded.whole("max_entries")?.unwrap_or(10_000);
        if !(1..=1_000_000).contains(&max_entries) {
            return Err(ConfigError::BadValue { key: "bounded_retries.max_entries", value: max_entries.to_string(), accepted: "a whole number from 1 to 1000000" });
        }
        let port = match control.whole("port")? {
            None => None,
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => Some(p),
                _ => return Err(ConfigError::BadValue { key: "control.port", value: p.to_string(), accepted: "a port from 1 to 65535" }),
            },
        };
        let filter_state = control.string("filter_state")?;
        if let Some(key) = &filter_state {
            if !is_filter_state_key(key) {
                return Err(ConfigError::BadValue { key: "control.filter_state", value: key.clone(), accepted: FILTER_STATE_ACCEPTED });
            }
        }
        let control = Control {
            enabled: control.boolean("enabled")?.unwrap_or(true),
            path,
            port,
            filter_state,
            post_documents: control.boolean("post_documents")?.unwrap_or(false),
            allowed,
            token,
        };
        let max_active_delays = top.whole("max_active_delays")?.unwrap_or(DEFAULT_MAX_ACTIVE_DELAYS);
        if let Some(rules) = top.get("rules") {
            start.rules = Rule::parse_list("rules", rules, 0).map_err(ConfigError::Document)?;
            if let Some(i) = start.rules.iter().position(|r| r.until_ms.is_some()) {
                let error = DocError { path: format!("rules[{i}].ttl"), message: "a start rule cannot end by itself; give ttl in /injector calls".into() };
                return Err(ConfigError::Document(error));
            }
        }
        let header_faults = Section::of("header_faults", top.raw("header_faults"), HEADER_FAULTS_KEYS)?;
        let max_delay = header_faults.string("max_delay")?.unwrap_or_else(|| "10s".into());
        let max_delay = duration::parse(&max_delay)
            .ok_or(ConfigError::BadValue { key: "header_faults.max_delay", value: max_delay.clone(), accepted: duration::ACCEPTED })?;
        let header_faults = HeaderFaults { enabled: header_faults.boolean("enabled")?.unwrap_or(false), max_delay };
        let sample_by = match top.string("sample_by")? {
            Some(name) if !rules::is_header_name(&name) => {
                return Err(ConfigError::BadValue { key: "sample_by", value: name, accepted: "a header name, such as x-user-id" })
            }
            other => other.map(|n| n.to_ascii_lowercase()),
        };
        let stats_flush = top.string("stats_flush")?.unwrap_or_else(|| "100ms".into());
        let stats_flush = match duration::parse(&stats_flush) {
            Some(Millis(ms)) if (1..=60_000).contains(&ms) => Millis(ms),
            _ => return Err(ConfigError::BadValue { key: "stats_flush", value: stats_flush, accepted: "a duration from 1ms to 60s, such as 100ms" }),
        };
        Ok(Config {
            version,
            start,
            simple_response: SimpleResponse { status, headers, body: body.unwrap_or_else(|| DEFAULT_BODY.into()) },
            control,
            retry_limits: Limits { window_ms, per_shard: (max_entries as usize).div_ceil(retries::SHARDS as usize) },
            max_active_delays,
            header_faults,
            sample_by,
            stats_flush,
        })
    }
}

/// The longest `control.filter_state` key accepted.
pub const MAX_FILTER_STATE_KEY: usize = 128;

fn is_filter_state_key(key: &str) -> bool {
    (1..=MAX_FILTER_STATE_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Reads a policy object (`{"policy": "statusResponse", "status": 503}`) through the control
/// API's own parser, so configuration and `/injector` accept the same values.
fn policy_call(key: &str, object: &Map, needs_ip: bool) -> Result<Call, ConfigError> {
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
        assert_eq!(config.stats_flush, Millis(100));
    }

    #[test]
    fn full_configuration() {
        let config = Config::parse(br#"{
            "version": "checkout-slow 2",
            "policy": {"policy": "statusResponse", "status": 500, "percentage": 12.5},
            "clients": [{"ip": "10.0.0.0/8", "timeout": "250ms", "percentage": 100}],
            "simple_response": {"status": 201, "headers": [["x-a", "b"]], "body": "hi"},
            "control": {"enabled": false, "path": "/fault", "port": 8282, "filter_state": "fault_injector.control", "allowed_cidrs": ["10.0.0.0/8"], "token": "s3cret"},
            "bounded_retries": {"window": "10s", "max_entries": 160},
            "stats_flush": "2s"
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
        assert_eq!(config.stats_flush, Millis(2000));
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
        assert_eq!(origin(a).to_json().get("version").and_then(Value::as_str), Some("v1"));
        assert_eq!(origin(a).to_json().get("id").and_then(Value::as_str).map(str::len), Some(16));
    }

    #[test]
    fn origin_stored_form_reads_back() {
        for origin in [Origin::default(), Origin { id: u64::MAX, version: Some("v\"1".into()) }] {
            assert_eq!(Origin::from_stored(&origin.to_stored()), Some(origin));
        }
        // As the state has always been stored.
        let stored = json::parse(br#"{"id":18446744073709551615,"version":"v\"1"}"#).unwrap();
        assert_eq!(Origin::from_stored(&stored), Some(Origin { id: u64::MAX, version: Some("v\"1".into()) }));
    }

    #[test]
    fn each_bad_value_names_its_key() {
        for (text, needle) in [
            ("nonsense", "invalid plugin configuration: not JSON: expected a value at byte 0"),
            (r#"{"policy": {} "x": 1}"#, "not JSON: expected ',' or '}' at byte 14"),
            (r#"{"polcy": {}}"#, "invalid plugin configuration: unknown field `polcy`; accepted: version, policy, clients"),
            (r#"{"control": {"tokn": "x"}}"#, "control: unknown field `tokn`; accepted: enabled, path"),
            (r#"{"control": 1}"#, "control: 1 is not accepted; expected an object"),
            (r#"{"control": null}"#, "control: null is not accepted; expected an object"),
            (r#"{"control": {"enabled": "yes"}}"#, "control.enabled: \"yes\" is not accepted; expected true or false"),
            (r#"{"control": {"allowed_cidrs": "10.0.0.0/8"}}"#, "control.allowed_cidrs: \"10.0.0.0/8\" is not accepted; expected a list"),
            (r#"{"control": {"allowed_cidrs": [1]}}"#, "control.allowed_cidrs[0]: 1 is not accepted; expected a string"),
            (r#"{"policy": []}"#, "policy: [] is not accepted; expected an object of control parameters"),
            (r#"{"clients": {}}"#, "clients: {} is not accepted; expected a list of objects"),
            (r#"{"clients": [1]}"#, "clients[0]: 1 is not accepted; expected an object with 'ip'"),
            (r#"{"simple_response": {"headers": [["a"]]}}"#, "simple_response.headers[0]: [\"a\"] is not accepted"),
            (r#"{"simple_response": {"status": 70000}}"#, "simple_response.status: '70000'"),
            (r#"{"max_active_delays": -1}"#, "max_active_delays: -1 is not accepted; expected a whole number"),
            (r#"{"bounded_retries": {"max_entries": 1.5}}"#, "bounded_retries.max_entries: 1.5 is not accepted"),
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
            (r#"{"version": 3}"#, "version: 3 is not accepted; expected a string"),
            (r#"{"bounded_retries": {"window": "0"}}"#, "bounded_retries.window"),
            (r#"{"stats_flush": "0ms"}"#, "stats_flush: '0ms' is not accepted; expected a duration from 1ms to 60s"),
            (r#"{"stats_flush": "61s"}"#, "stats_flush: '61s'"),
            (r#"{"bounded_retries": {"max_entries": 0}}"#, "bounded_retries.max_entries"),
        ] {
            let message = error_of(text);
            assert!(message.contains(needle), "{text}: {message}");
        }
    }

    #[test]
    fn null_leaves_a_value_out() {
        let config = Config::parse(br#"{"version": null, "rules": null, "control": {"port": null, "allowed_cidrs": null}}"#).unwrap();
        assert_eq!(config, Config::default());
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
            let (window, path) = (Value::from(window), Value::from(path));
            let text = format!(r#"{{"policy": {{"status": {status}, "percentage": {pct:?}}}, "control": {{"path": {path}}}, "bounded_retries": {{"window": {window}}}}}"#);
            if let Err(e) = Config::parse(text.as_bytes()) {
                prop_assert!(e.to_string().starts_with("invalid plugin configuration"));
            }
        }
    }
}
