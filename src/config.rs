//! Plugin configuration: Envoy's `configuration` string or Istio's `pluginConfig`, read
//! once at configure time into typed values, refused whole with the key that is wrong. Its
//! start policy is a policy document's three fields, `rules`, `policy` and `clients`.

use crate::model::document::{Document, Params};
use crate::model::duration::{self, Millis};
use crate::guard::Guard;
use crate::model::net::{self, Cidr};
use crate::model::outbound::Direction;
use crate::model::policy::{Canned, State};
use crate::faults::retries::{self, Limits};
use crate::model::rules::RuleSpec;
use crate::model::values::{self, from_given, Given, HeaderName, HttpStatus, Invalid, Object, Text, UnknownKeys};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// Why a plugin configuration was refused: the key (or JSON path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Invalid);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin configuration: ")?;
        if self.0.path != "$" {
            write!(f, "{}: ", self.0.path)?;
        }
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ConfigError {}

/// A refusal of `key`'s value `value`, quoted as given.
fn bad(key: &str, value: &str, accepted: &str) -> ConfigError {
    let value: String = value.chars().take(64).collect();
    ConfigError(Invalid::at(key, format!("'{value}' is not accepted; expected {accepted}")))
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
    /// Host names (lower case, without port) a browser's call may name in `Host`, besides
    /// IP literals and `localhost`: anything else may be a DNS-rebinding page's own name.
    pub allowed_hosts: Vec<String>,
    /// A bearer token required, if set.
    pub token: Option<String>,
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
    /// The canned response of `simpleResponse`.
    pub simple_response: Canned,
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
    /// Kubelet probes (`User-Agent: kube-probe/...`) pass untouched whatever the policy
    /// (`probes.pass`, on by default), so a fault does not get the pod restarted.
    pub pass_probes: bool,
    /// Which requests this listener sees: inbound (the default), or the app's own calls
    /// (outbound), which only outbound rules fault. An outbound listener has no control
    /// route and no start policy of its own: it shares the inbound side's policy.
    pub direction: Direction,
    /// The proxies in front of this listener whose `X-Forwarded-For` entries are trusted,
    /// as Envoy's `xff_num_trusted_hops`; 0 (the default): the client is the TCP peer.
    pub xff_num_trusted_hops: u32,
    /// Envoy's fault filter (`envoy.filters.http.fault` acting on requests marked
    /// `x-fault-injector-envoy-fault`, with `header_delay`, `header_abort` and a
    /// `response_rate_limit` of `header_limit`) follows this one on the listener: it paces
    /// throttled bodies and holds, then aborts, slow failures and resets after a delay (an
    /// abort before its time waits for it here), and every request loses the mark its
    /// client sent (`delays::MARK`). Off, throttles are refused, and this filter holds
    /// slow failures and resets on its own timer.
    pub envoy_fault_filter: bool,
    /// Plain delays (and `delay_shape`s) are handed to Envoy's fault filter too, which holds
    /// them on its own timers, as precisely as its own delays and as early: its timers run
    /// from the event loop's cached time, and a request it lets go goes upstream at once,
    /// so some of its holds end before their time (a third to a half, by up to 4 ms, on
    /// libevent's coarse clock). Off (the default), this filter holds them and never
    /// releases one early. Needs `envoy_fault_filter`.
    pub envoy_fault_filter_delays: bool,
}

const DEFAULT_BODY: &str = "fault-injector: simple response\n";
const DEFAULT_MAX_ENTRIES: u64 = 10_000;
const MAX_VERSION_LEN: usize = 64;
const FILTER_STATE_ACCEPTED: &str = "a filter-state key of 1 to 128 letters, digits, '.', '_' or '-', such as fault_injector.control";
const CIDR_ACCEPTED: &str = "a list of addresses or CIDRs such as [\"10.0.0.0/8\"]";
const HOST_ACCEPTED: &str = "a host name without port, of letters, digits, '.' and '-', such as injector.example.internal";
const TOKEN_ACCEPTED: &str = "a token of visible characters, without leading or trailing whitespace";

impl Default for Config {
    /// Every default, as an empty configuration gives them.
    fn default() -> Self {
        Config {
            version: None,
            start: State::default(),
            simple_response: Canned { status: 200, headers: Vec::new(), body: DEFAULT_BODY.into() },
            control: Control { enabled: true, path: "/injector".into(), port: None, filter_state: None, post_documents: false, allowed: net::loopback(), allowed_hosts: Vec::new(), token: None },
            retry_limits: Limits { window_ms: 60_000, per_shard: max_entries_per_shard(DEFAULT_MAX_ENTRIES) },
            max_active_delays: 10_000,
            header_faults: HeaderFaults { enabled: false, max_delay: Millis(10_000) },
            stats_flush: Millis(100),
            sample_by: None,
            pass_probes: true,
            direction: Direction::Inbound,
            xff_num_trusted_hops: 0,
            envoy_fault_filter: false,
            envoy_fault_filter_delays: false,
        }
    }
}

fn max_entries_per_shard(max_entries: u64) -> usize {
    (max_entries as usize).div_ceil(retries::SHARDS as usize)
}

/// A whole number (`max_active_delays`, `port`...), refused in the filter's words.
struct Whole(u64);

impl TryFrom<Given> for Whole {
    type Error = String;
    fn try_from(given: Given) -> Result<Whole, String> {
        given.as_u64().map(Whole).ok_or_else(|| given.refused("a whole number"))
    }
}
from_given!(Whole);

/// A `[name, value]` pair of strings (`simple_response.headers`), read as a list of
/// strings, so a value of another type is refused at its own path (`headers[0][1]`).
#[derive(Deserialize)]
#[serde(try_from = "Vec<Text>")]
struct Pair(String, String);

impl TryFrom<Vec<Text>> for Pair {
    type Error = String;
    fn try_from(texts: Vec<Text>) -> Result<Pair, String> {
        match texts.as_slice() {
            [Text(name), Text(value)] => Ok(Pair(name.clone(), value.clone())),
            _ => Err(format!("{} is not accepted; expected a [name, value] pair of strings", serde_json::to_string(&texts).unwrap_or_default())),
        }
    }
}

/// The start rules, `null` being none.
struct Rules(Vec<RuleSpec>);

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        values::list_of_objects(deserializer).map(Rules)
    }
}

/// The configuration as written; [`Config`] is what it means.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    version: Option<Text>,
    #[serde(default)]
    policy: Params,
    #[serde(default)]
    clients: Vec<Params>,
    #[serde(default, deserialize_with = "values::object")]
    simple_response: SimpleResponseSpec,
    #[serde(default, deserialize_with = "values::object")]
    control: ControlSpec,
    #[serde(default, deserialize_with = "values::object")]
    bounded_retries: RetriesSpec,
    max_active_delays: Option<Whole>,
    rules: Option<Rules>,
    #[serde(default, deserialize_with = "values::object")]
    header_faults: HeaderFaultsSpec,
    sample_by: Option<Text>,
    stats_flush: Option<Text>,
    #[serde(default, deserialize_with = "values::object")]
    probes: ProbesSpec,
    direction: Option<Direction>,
    guard: Option<Guard>,
    xff_num_trusted_hops: Option<Whole>,
    envoy_fault_filter: Option<bool>,
    envoy_fault_filter_delays: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimpleResponseSpec {
    status: Option<Whole>,
    #[serde(default)]
    headers: Vec<Pair>,
    body: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSpec {
    enabled: Option<bool>,
    path: Option<Text>,
    port: Option<Whole>,
    filter_state: Option<Text>,
    post_documents: Option<bool>,
    allowed_cidrs: Option<Vec<Text>>,
    allowed_hosts: Option<Vec<Text>>,
    token: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetriesSpec {
    window: Option<Text>,
    max_entries: Option<Whole>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFaultsSpec {
    enabled: Option<bool>,
    max_delay: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbesSpec {
    pass: Option<bool>,
}

impl Config {
    /// Parses the configuration bytes; empty bytes mean every default.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let Object(spec) = values::read::<Object<ConfigSpec>>(bytes, UnknownKeys::InMessage).map_err(ConfigError)?;
        Config::try_from(spec)
    }
}

/// What an outbound configuration may not hold, as the inbound one does: the control route
/// and the start policy, which both directions share.
fn inbound_only(spec: &ConfigSpec) -> Option<&'static str> {
    let control = &spec.control;
    let has_control = control.enabled.is_some() || control.path.is_some() || control.port.is_some() || control.filter_state.is_some()
        || control.post_documents.is_some() || control.allowed_cidrs.is_some() || control.allowed_hosts.is_some() || control.token.is_some();
    [
        ("control", has_control),
        ("policy", spec.policy != Params::default()),
        ("clients", !spec.clients.is_empty()),
        ("rules", spec.rules.as_ref().is_some_and(|Rules(r)| !r.is_empty())),
        ("guard", spec.guard.is_some()),
    ]
    .into_iter()
    .find_map(|(key, given)| given.then_some(key))
}

impl TryFrom<ConfigSpec> for Config {
    type Error = ConfigError;

    fn try_from(spec: ConfigSpec) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if spec.direction == Some(Direction::Outbound) {
            if let Some(key) = inbound_only(&spec) {
                let message = "belongs in the inbound listener's configuration: one control route and one policy serve both directions (give outbound rules \"direction\": \"outbound\" there)";
                return Err(ConfigError(Invalid::at(key, message)));
            }
            config.direction = Direction::Outbound;
        }
        if let Some(Text(version)) = spec.version {
            if version.is_empty() || version.len() > MAX_VERSION_LEN || version.chars().any(char::is_control) {
                return Err(bad("version", &version, "a label of 1 to 64 printable characters"));
            }
            config.version = Some(version);
        }
        config.start = start(spec.policy, spec.clients, spec.rules, spec.guard)?;
        config.envoy_fault_filter = spec.envoy_fault_filter.unwrap_or(false);
        config.envoy_fault_filter_delays = spec.envoy_fault_filter_delays.unwrap_or(false);
        if config.envoy_fault_filter_delays && !config.envoy_fault_filter {
            return Err(bad("envoy_fault_filter_delays", "true", "false, or true with \"envoy_fault_filter\": true (Envoy's fault filter after this one holds the delays)"));
        }
        if let Some(at) = config.start.throttle_at().filter(|_| !config.envoy_fault_filter) {
            return Err(ConfigError(Invalid::at(at, crate::faults::throttle::NO_FAULT_FILTER)));
        }
        let response = spec.simple_response;
        if let Some(Whole(status)) = response.status {
            let status = HttpStatus::new(status).ok_or_else(|| bad("simple_response.status", &status.to_string(), values::STATUS_ACCEPTED))?;
            config.simple_response.status = status.0;
        }
        config.simple_response.headers = response.headers.into_iter().map(|Pair(k, v)| (k, v)).collect();
        if let Some(Text(body)) = response.body {
            config.simple_response.body = body;
        }
        config.start.resolve(&config.simple_response);
        config.control = control(spec.control)?;
        // Outbound, the app's calls to a dependency's own /injector go to the dependency.
        config.control.enabled &= config.direction == Direction::Inbound;
        let bounded = spec.bounded_retries;
        if let Some(Text(window)) = bounded.window {
            config.retry_limits.window_ms = match duration::parse(&window) {
                Some(Millis(ms)) if ms > 0 => ms,
                _ => return Err(bad("bounded_retries.window", &window, duration::ACCEPTED)),
            };
        }
        if let Some(Whole(max_entries)) = bounded.max_entries {
            if !(1..=1_000_000).contains(&max_entries) {
                return Err(bad("bounded_retries.max_entries", &max_entries.to_string(), "a whole number from 1 to 1000000"));
            }
            config.retry_limits.per_shard = max_entries_per_shard(max_entries);
        }
        if let Some(Whole(max)) = spec.max_active_delays {
            config.max_active_delays = max;
        }
        if let Some(enabled) = spec.header_faults.enabled {
            config.header_faults.enabled = enabled;
        }
        if let Some(Text(max_delay)) = spec.header_faults.max_delay {
            config.header_faults.max_delay = duration::parse(&max_delay).ok_or_else(|| bad("header_faults.max_delay", &max_delay, duration::ACCEPTED))?;
        }
        if let Some(Text(name)) = spec.sample_by {
            let header = HeaderName::new(&name).ok_or_else(|| bad("sample_by", &name, "a header name, such as x-user-id"))?;
            config.sample_by = Some(header.as_str().to_string());
        }
        if let Some(Text(flush)) = spec.stats_flush {
            config.stats_flush = match duration::parse(&flush) {
                Some(Millis(ms)) if (1..=60_000).contains(&ms) => Millis(ms),
                _ => return Err(bad("stats_flush", &flush, "a duration from 1ms to 60s, such as 100ms")),
            };
        }
        if let Some(pass) = spec.probes.pass {
            config.pass_probes = pass;
        }
        if let Some(Whole(hops)) = spec.xff_num_trusted_hops {
            config.xff_num_trusted_hops = u32::try_from(hops).map_err(|_| bad("xff_num_trusted_hops", &hops.to_string(), "a whole number from 0 to 4294967295"))?;
        }
        Ok(config)
    }
}

/// The start policy: the document of `rules`, `policy`, `clients` and `guard`, none of
/// which may end by itself.
fn start(policy: Params, clients: Vec<Params>, rules: Option<Rules>, guard: Option<Guard>) -> Result<State, ConfigError> {
    let lasting = |path: String| ConfigError(Invalid::at(path, "a start policy cannot end by itself; give ttl in /injector calls"));
    if policy.get("ttl").is_some() {
        return Err(lasting("policy.ttl".into()));
    }
    if let Some(i) = clients.iter().position(|c| c.get("ttl").is_some()) {
        return Err(lasting(format!("clients[{i}].ttl")));
    }
    let rules = rules.map(|Rules(r)| r).unwrap_or_default();
    if let Some(i) = rules.iter().position(|r| r.ttl.is_some()) {
        return Err(ConfigError(Invalid::at(format!("rules[{i}].ttl"), "a start rule cannot end by itself; give ttl in /injector calls")));
    }
    Document { rules, policy, clients, configuration: None, counts: None, guard, halted: None }.into_state(0).map_err(ConfigError)
}

fn control(spec: ControlSpec) -> Result<Control, ConfigError> {
    let mut control = Config::default().control;
    if let Some(Text(path)) = spec.path {
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(bad("control.path", &path, "a path starting with '/', without '?' or '#'"));
        }
        control.path = path;
    }
    if let Some(list) = spec.allowed_cidrs {
        control.allowed = list.iter().map(|Text(c)| Cidr::parse(c).ok_or_else(|| bad("control.allowed_cidrs", c, CIDR_ACCEPTED))).collect::<Result<_, _>>()?;
    }
    if let Some(list) = spec.allowed_hosts {
        control.allowed_hosts = list.iter().map(|Text(h)| host_name(h).ok_or_else(|| bad("control.allowed_hosts", h, HOST_ACCEPTED))).collect::<Result<_, _>>()?;
    }
    if let Some(Text(token)) = spec.token {
        // Envoy trims a header value's surrounding whitespace and the scheme is followed
        // by spaces, so a token that is blank or starts or ends with whitespace never matches.
        // The message does not quote the token: it is a secret, and this goes to the log.
        if token.trim() != token || token.is_empty() || token.chars().any(char::is_control) {
            let message = format!("a blank token, or one with whitespace or control characters at either end or control characters within, is not accepted; expected {TOKEN_ACCEPTED}");
            return Err(ConfigError(Invalid::at("control.token", message)));
        }
        control.token = Some(token);
    }
    if let Some(Whole(port)) = spec.port {
        control.port = match u16::try_from(port) {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(bad("control.port", &port.to_string(), "a port from 1 to 65535")),
        };
    }
    if let Some(Text(key)) = spec.filter_state {
        if !is_filter_state_key(&key) {
            return Err(bad("control.filter_state", &key, FILTER_STATE_ACCEPTED));
        }
        control.filter_state = Some(key);
    }
    control.enabled = spec.enabled.unwrap_or(control.enabled);
    control.post_documents = spec.post_documents.unwrap_or(control.post_documents);
    Ok(control)
}

/// The longest `control.filter_state` key accepted.
pub const MAX_FILTER_STATE_KEY: usize = 128;

/// A `control.allowed_hosts` entry, in lower case, or `None` if it is not a host name.
fn host_name(text: &str) -> Option<String> {
    let ok = (1..=253).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    ok.then(|| text.to_ascii_lowercase())
}

fn is_filter_state_key(key: &str) -> bool {
    (1..=MAX_FILTER_STATE_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::percentage::Percentage;

    fn error_of(text: &str) -> String {
        Config::parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_throttle_needs_envoys_fault_filter_after_this_one() {
        let rule = r#""rules": [{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 503}}}, {"fault": {"throttle": {"bytes_per_second": 102400}}}]"#;
        assert_eq!(
            error_of(&format!("{{{rule}}}")),
            format!("invalid plugin configuration: rules[1].fault.throttle: {}", crate::faults::throttle::NO_FAULT_FILTER)
        );
        let policy = r#""policy": {"policy": "throttleResponse", "percentage": 5}"#;
        assert!(error_of(&format!("{{{policy}}}")).starts_with("invalid plugin configuration: policy: a throttle needs Envoy's fault filter"));
        for text in [format!("{{{rule}, \"envoy_fault_filter\": true}}"), format!("{{{policy}, \"envoy_fault_filter\": true}}")] {
            assert!(Config::parse(text.as_bytes()).unwrap().envoy_fault_filter, "{text}");
        }
        assert!(!Config::default().envoy_fault_filter);
        assert!(error_of(r#"{"envoy_fault_filter": "yes"}"#).contains("envoy_fault_filter"), "{}", error_of(r#"{"envoy_fault_filter": "yes"}"#));
    }

    #[test]
    fn delays_go_to_envoys_fault_filter_only_where_it_follows() {
        assert!(!Config::default().envoy_fault_filter_delays);
        let both = Config::parse(br#"{"envoy_fault_filter": true, "envoy_fault_filter_delays": true}"#).unwrap();
        assert!(both.envoy_fault_filter && both.envoy_fault_filter_delays);
        assert!(!Config::parse(br#"{"envoy_fault_filter": true}"#).unwrap().envoy_fault_filter_delays);
        assert_eq!(
            error_of(r#"{"envoy_fault_filter_delays": true}"#),
            "invalid plugin configuration: envoy_fault_filter_delays: 'true' is not accepted; expected false, or true with \"envoy_fault_filter\": true (Envoy's fault filter after this one holds the delays)"
        );
    }

    #[test]
    fn an_outbound_listener_shares_the_inbound_policy_and_control() {
        let outbound = Config::parse(br#"{"direction": "outbound", "max_active_delays": 5}"#).unwrap();
        assert_eq!(outbound.direction, Direction::Outbound);
        assert!(!outbound.control.enabled);
        assert_eq!(Config::parse(br#"{"direction": "inbound"}"#).unwrap(), Config::default());
        for (text, key) in [
            (r#"{"direction": "outbound", "policy": {"status": 503}}"#, "policy"),
            (r#"{"direction": "outbound", "control": {"port": 8282}}"#, "control"),
            (r#"{"direction": "outbound", "rules": [{"fault": {"abort": {"status": 503}}}]}"#, "rules"),
            (r#"{"direction": "outbound", "clients": [{"ip": "10.0.0.1", "status": 503}]}"#, "clients"),
        ] {
            assert!(error_of(text).starts_with(&format!("invalid plugin configuration: {key}: belongs in the inbound")), "{}", error_of(text));
        }
        assert!(error_of(r#"{"direction": "sideways"}"#).contains("direction"), "{}", error_of(r#"{"direction": "sideways"}"#));
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
        assert!(config.pass_probes);
        assert!(!Config::parse(br#"{"probes": {"pass": false}}"#).unwrap().pass_probes);
    }

    #[test]
    fn full_configuration() {
        let config = Config::parse(br#"{
            "version": "checkout-slow 2",
            "policy": {"policy": "statusResponse", "status": 500, "percentage": 12.5},
            "clients": [{"ip": "10.0.0.0/8", "timeout": "250ms", "percentage": 100}],
            "simple_response": {"status": 201, "headers": [["x-a", "b"]], "body": "hi"},
            "control": {"enabled": false, "path": "/fault", "port": 8282, "filter_state": "fault_injector.control", "allowed_cidrs": ["10.0.0.0/8"], "allowed_hosts": ["Injector.example.internal"], "token": "s3cret"},
            "bounded_retries": {"window": "10s", "max_entries": 160},
            "stats_flush": "2s",
            "xff_num_trusted_hops": 2
        }"#).unwrap();
        assert_eq!(config.start.default.name(), "statusResponse");
        assert_eq!(config.start.default.percentage(), Percentage(125_000));
        let client = config.start.policy_for(Some("10.1.1.1".parse().unwrap()));
        assert_eq!((client.name(), client.given.delay, client.given.status), ("delayResponse", Millis(250), 500));
        assert_eq!(config.simple_response.headers, vec![("x-a".to_string(), "b".to_string())]);
        assert!(!config.control.enabled);
        assert_eq!(config.control.token.as_deref(), Some("s3cret"));
        assert_eq!(config.control.port, Some(8282));
        assert_eq!(config.control.filter_state.as_deref(), Some("fault_injector.control"));
        assert_eq!(config.version.as_deref(), Some("checkout-slow 2"));
        assert_eq!(config.retry_limits, Limits { window_ms: 10_000, per_shard: 10 });
        assert_eq!(config.stats_flush, Millis(2000));
        assert_eq!(config.control.allowed_hosts, vec!["injector.example.internal".to_string()]);
        assert_eq!(config.xff_num_trusted_hops, 2);
        assert_eq!(Config::default().xff_num_trusted_hops, 0);
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
    fn each_bad_value_names_its_key() {
        for (text, needle) in [
            ("nonsense", "invalid plugin configuration: not JSON: expected ident at line 1 column 2"),
            (r#"{"policy": {} "x": 1}"#, "not JSON: expected `,` or `}` at line 1 column 15"),
            (r#"{"polcy": {}}"#, "invalid plugin configuration: unknown field `polcy`; accepted: version, policy, clients"),
            (r#"{"control": {"tokn": "x"}}"#, "control: unknown field `tokn`; accepted: enabled, path"),
            (r#"{"control": 1}"#, "control: 1 is a number; expected an object"),
            (r#"{"control": null}"#, "control: null is not accepted; expected an object"),
            (r#"{"control": {"enabled": "yes"}}"#, "control.enabled: \"yes\" is a string; expected a boolean"),
            (r#"{"control": {"allowed_cidrs": "10.0.0.0/8"}}"#, "control.allowed_cidrs: \"10.0.0.0/8\" is a string; expected a list"),
            (r#"{"control": {"allowed_cidrs": [1]}}"#, "control.allowed_cidrs[0]: 1 is a number; expected a string"),
            (r#"{"policy": []}"#, "policy: a list is not accepted; expected an object of control parameters"),
            (r#"{"clients": {}}"#, "clients: an object is not accepted; expected a list"),
            (r#"{"clients": [1]}"#, "clients[0]: 1 is a number; expected an object of control parameters"),
            (r#"{"simple_response": {"headers": [["a"]]}}"#, "simple_response.headers[0]: [\"a\"] is not accepted"),
            (r#"{"simple_response": {"status": 70000}}"#, "simple_response.status: '70000'"),
            (r#"{"max_active_delays": -1}"#, "max_active_delays: -1 is not accepted; expected a whole number"),
            (r#"{"bounded_retries": {"max_entries": 1.5}}"#, "bounded_retries.max_entries: 1.5 is not accepted"),
            (r#"{"policy": {"status": 700}}"#, "policy: status: '700'"),
            (r#"{"policy": {"percentage": true}}"#, "policy.percentage"),
            (r#"{"policy": {"ip": "10.0.0.1"}}"#, "policy: 'ip' belongs in clients"),
            (r#"{"clients": [{"status": 500}]}"#, "clients[0]: each client needs 'ip'"),
            (r#"{"clients": [{"ip": "nope"}]}"#, "clients[0]: ip: 'nope'"),
            (r#"{"simple_response": {"status": 99}}"#, "simple_response.status"),
            (r#"{"control": {"path": "injector"}}"#, "control.path"),
            (r#"{"control": {"allowed_cidrs": ["10.0.0.0/99"]}}"#, "control.allowed_cidrs: '10.0.0.0/99'"),
            (r#"{"control": {"token": ""}}"#, "control.token: a blank token, or one with whitespace or control characters at either end or control characters within, is not accepted; expected a token of visible characters, without leading or trailing whitespace"),
            (r#"{"control": {"token": " "}}"#, "control.token: a blank token"),
            (r#"{"control": {"token": "\t \n"}}"#, "control.token: a blank token"),
            (r#"{"control": {"token": " s3cret"}}"#, "control.token: a blank token"),
            (r#"{"control": {"token": "s3cret "}}"#, "control.token: a blank token"),
            (r#"{"control": {"token": "s3\u0000cret"}}"#, "control.token: a blank token"),
            (r#"{"control": {"allowed_hosts": ["injector:8282"]}}"#, "control.allowed_hosts: 'injector:8282' is not accepted; expected a host name without port"),
            (r#"{"control": {"allowed_hosts": [""]}}"#, "control.allowed_hosts: '' is not accepted"),
            (r#"{"control": {"allowed_hosts": "injector"}}"#, "control.allowed_hosts: \"injector\" is a string; expected a list"),
            (r#"{"xff_num_trusted_hops": -1}"#, "xff_num_trusted_hops: -1 is not accepted; expected a whole number"),
            (r#"{"xff_num_trusted_hops": 4294967296}"#, "xff_num_trusted_hops: '4294967296' is not accepted; expected a whole number from 0 to 4294967295"),
            (r#"{"control": {"port": 0}}"#, "control.port: '0'"),
            (r#"{"rules": [{"fault": {"nap": {}}}]}"#, "rules[0].fault: give one of"),
            (r#"{"rules": [{"fault": {"abort": {"status": 503}}, "ttl": "1m"}]}"#, "rules[0].ttl: a start rule cannot end"),
            (r#"{"policy": {"status": 503, "ttl": "1m"}}"#, "policy.ttl: a start policy cannot end"),
            (r#"{"probes": {"pass": 1}}"#, "probes.pass: 1 is a number; expected a boolean"),
            (r#"[]"#, "invalid plugin configuration: a list is not accepted; expected an object"),
            (r#"{"header_faults": {"max_delay": "2h"}}"#, "header_faults.max_delay"),
            (r#"{"sample_by": "x user"}"#, "sample_by: 'x user'"),
            (r#"{"control": {"port": 70000}}"#, "control.port: '70000'"),
            (r#"{"control": {"filter_state": ""}}"#, "control.filter_state: ''"),
            (r#"{"control": {"filter_state": "a key"}}"#, "control.filter_state: 'a key' is not accepted; expected a filter-state key"),
            (r#"{"version": ""}"#, "version: ''"),
            (r#"{"version": 3}"#, "version: 3 is a number; expected a string"),
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
    fn a_nested_bad_value_is_named_by_its_path() {
        for (text, error) in [
            (r#"{"simple_response": {"headers": [["x-a", "1"], ["x-b", 2]]}}"#, "simple_response.headers[1][1]: 2 is a number; expected a string"),
            (r#"{"simple_response": {"headers": [["x-a", "1", "x"]]}}"#, r#"simple_response.headers[0]: ["x-a","1","x"] is not accepted; expected a [name, value] pair of strings"#),
            (
                r#"{"rules": [{"fault": {"abort": {"status": 503}}}, {"match": {"clients": ["10.0.0.0/8", "nope"]}, "fault": {"abort": {"status": 503}}}]}"#,
                r#"rules[1].match.clients[1]: "nope" is not accepted; expected "#,
            ),
            (r#"{"rules": [{"fault": {"delay": {"fixed": "soon"}}}]}"#, r#"rules[0].fault.delay.fixed: "soon" is not accepted; expected seconds"#),
            (r#"{"rules": [{"fault": {"abort": {"status": 503}}, "when": 1}]}"#, "rules[0]: unknown field `when`; accepted: name, direction, match"),
            (r#"{"control": {"allowed_cidrs": ["10.0.0.0/8", null]}}"#, "control.allowed_cidrs[1]: null is not accepted; expected a string"),
        ] {
            let message = error_of(text);
            assert!(message.starts_with(&format!("invalid plugin configuration: {error}")), "{text}: {message}");
        }
    }

    #[test]
    fn a_refused_token_is_not_quoted() {
        assert!(!error_of(r#"{"control": {"token": "s3cret "}}"#).contains("s3cret"));
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
            let (window, path) = (serde_json::Value::from(window), serde_json::Value::from(path));
            let text = format!(r#"{{"policy": {{"status": {status}, "percentage": {pct:?}}}, "control": {{"path": {path}}}, "bounded_retries": {{"window": {window}}}}}"#);
            if let Err(e) = Config::parse(text.as_bytes()) {
                prop_assert!(e.to_string().starts_with("invalid plugin configuration"));
            }
        }
    }
}
