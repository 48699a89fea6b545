//! Rules of the JSON policy document: which requests a rule is for (`match`), what they
//! get (`fault`), how many (`percentage`, optionally sampled by a header) and for how long
//! (`ttl`). The first matching rule wins. Rules are read from JSON with the path of the
//! first bad value in the error, and written back in the same shape.

use crate::duration::{self, Millis};
use crate::net::{self, Cidr};
use crate::percentage::{self, Percentage};
use crate::json::{self, Map, Number, Value};
use regex_lite::Regex;
use std::fmt;
use std::net::IpAddr;

/// The most rules a document may hold, so the shared state stays small.
pub const MAX_RULES: usize = 64;
const MAX_PATTERN_LEN: usize = 512;
const STATUS_ACCEPTED: &str = "an HTTP status from 200 to 599";
const GRPC_ACCEPTED: &str = "a gRPC status code from 0 to 16";
const FAULTS: &str = "one of delay, abort, response, bounded_retries, response_delay, response_rewrite";

/// A bad value in a policy document: where (a JSON path such as `rules[0].fault.delay`)
/// and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocError {
    /// The JSON path of the value.
    pub path: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for DocError {}

fn error(path: &str, message: impl Into<String>) -> DocError {
    DocError { path: path.to_string(), message: message.into() }
}

fn bad(path: &str, value: &Value, accepted: &str) -> DocError {
    error(path, format!("{} is not accepted; expected {accepted}", value.shown()))
}

/// A regular expression, kept with its source so it can be shared and shown again.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source`; the whole value must match (as Envoy's `safe_regex` does).
    pub fn new(source: &str) -> Option<Pattern> {
        if source.len() > MAX_PATTERN_LEN {
            return None;
        }
        let regex = Regex::new(&format!("^(?:{source})$")).ok()?;
        Some(Pattern { source: source.to_string(), regex })
    }

    /// True when the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

/// How a request's path (without its query) is matched.
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Its beginning.
    Prefix(String),
    /// A regular expression over the whole path.
    Regex(Pattern),
}

/// How a header's value is matched.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueMatch {
    /// The whole value.
    Exact(String),
    /// Present (`true`) or absent (`false`), whatever its value.
    Present(bool),
    /// A regular expression over the whole value.
    Regex(Pattern),
}

/// A header condition.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatch {
    /// The header name, lowercase.
    pub name: String,
    /// The condition on its value.
    pub value: ValueMatch,
}

/// Which requests a rule is for; every condition given must hold, none given matches all.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Match {
    /// The path condition.
    pub path: Option<PathMatch>,
    /// The method, exactly (`POST`).
    pub method: Option<String>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
    /// Client address ranges (Envoy's `source.address`); any one of them.
    pub clients: Vec<String>,
}

/// What a rule reads of a request, asked only as its conditions need.
pub trait RequestView {
    /// The path, without the query.
    fn path(&mut self) -> String;
    /// The method.
    fn method(&mut self) -> String;
    /// A request header's value.
    fn header(&mut self, name: &str) -> Option<String>;
    /// The client's address.
    fn client(&mut self) -> Option<IpAddr>;
}

impl Match {
    /// True when every condition holds for the request.
    pub fn matches(&self, request: &mut dyn RequestView) -> bool {
        if let Some(path_match) = &self.path {
            let path = request.path();
            let hit = match path_match {
                PathMatch::Exact(p) => path == *p,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
                PathMatch::Regex(r) => r.matches(&path),
            };
            if !hit {
                return false;
            }
        }
        if self.method.as_ref().is_some_and(|m| *m != request.method()) {
            return false;
        }
        for header in &self.headers {
            let value = request.header(&header.name);
            let hit = match (&header.value, value) {
                (ValueMatch::Present(want), v) => *want == v.is_some(),
                (ValueMatch::Exact(want), Some(v)) => v == *want,
                (ValueMatch::Regex(r), Some(v)) => r.matches(&v),
                (_, None) => false,
            };
            if !hit {
                return false;
            }
        }
        if !self.clients.is_empty() {
            let Some(ip) = request.client() else { return false };
            if !self.clients.iter().filter_map(|c| Cidr::parse(c)).any(|c| c.contains(ip)) {
                return false;
            }
        }
        true
    }

    fn is_empty(&self) -> bool {
        *self == Match::default()
    }
}

/// What a matched, sampled request gets.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Held for `fixed` plus a uniform share of `jitter`, then forwarded.
    Delay {
        /// The fixed part.
        fixed: Millis,
        /// The most added at random.
        jitter: Millis,
    },
    /// Answered locally. gRPC callers get HTTP 200 with `grpc-status` (the code given, or
    /// the one the gRPC spec maps `status` to).
    Abort {
        /// The HTTP status.
        status: u16,
        /// The gRPC status code for gRPC callers.
        grpc_status: Option<u8>,
    },
    /// Answered locally with a canned response; gRPC callers get `grpc_status` if set.
    Response {
        /// Its status.
        status: u16,
        /// Its headers.
        headers: Vec<(String, String)>,
        /// Its body.
        body: String,
        /// The gRPC status code for gRPC callers.
        grpc_status: Option<u8>,
    },
    /// The first `retries` attempts of a request identity fail with `status`.
    BoundedRetries {
        /// Attempts that fail before one passes.
        retries: u32,
        /// Their status.
        status: u16,
    },
    /// The upstream's response headers are held for `fixed` before going on.
    ResponseDelay {
        /// How long.
        fixed: Millis,
    },
    /// The upstream's response is changed on its way back.
    ResponseRewrite {
        /// A new status.
        status: Option<u16>,
        /// Headers set (replacing any of the same name).
        add_headers: Vec<(String, String)>,
        /// Headers removed.
        remove_headers: Vec<String>,
    },
}

/// One rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Which requests.
    pub matcher: Match,
    /// What they get.
    pub fault: Fault,
    /// The share of matched requests that get it.
    pub percentage: Percentage,
    /// A request header whose value decides the sampling, so the same value (a user, a
    /// request id) is always in or always out; random when absent.
    pub sample_by: Option<String>,
    /// When the rule ends by itself (`ttl`), in milliseconds since the epoch.
    pub until_ms: Option<u64>,
}

/// The first rule that matches the request, if any.
pub fn first_match<'a>(rules: &'a [Rule], request: &mut dyn RequestView) -> Option<&'a Rule> {
    rules.iter().find(|r| r.matcher.matches(request))
}

// ---------------------------------------------------------------- reading a document

fn object<'a>(path: &str, value: &'a Value) -> Result<&'a Map, DocError> {
    value.as_object().ok_or_else(|| bad(path, value, "an object"))
}

fn only_keys(path: &str, map: &Map, keys: &[&str]) -> Result<(), DocError> {
    match map.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(error(&format!("{path}.{k}"), format!("unknown key; accepted: {}", keys.join(", ")))),
        None => Ok(()),
    }
}

fn string<'a>(path: &str, value: &'a Value) -> Result<&'a str, DocError> {
    value.as_str().ok_or_else(|| bad(path, value, "a string"))
}

fn millis(path: &str, value: &Value) -> Result<Millis, DocError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.plain().unwrap_or_default(),
        _ => String::new(),
    };
    duration::parse(&text).ok_or_else(|| bad(path, value, duration::ACCEPTED))
}

fn status(path: &str, value: &Value) -> Result<u16, DocError> {
    value
        .as_u64()
        .filter(|s| (200..=599).contains(s))
        .map(|s| s as u16)
        .ok_or_else(|| bad(path, value, STATUS_ACCEPTED))
}

fn grpc_status(path: &str, value: &Value) -> Result<u8, DocError> {
    value.as_u64().filter(|s| *s <= 16).map(|s| s as u8).ok_or_else(|| bad(path, value, GRPC_ACCEPTED))
}

/// True for a plausible header name: letters, digits, `-`, `_`, `.`, or a leading `:`.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
}

fn header_name(path: &str, value: &str) -> Result<String, DocError> {
    if is_header_name(value) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(bad(path, &Value::String(value.into()), "a header name (letters, digits, '-', '_')"))
    }
}

fn pattern(path: &str, value: &Value) -> Result<Pattern, DocError> {
    Pattern::new(string(path, value)?).ok_or_else(|| bad(path, value, "a regular expression (RE2-like syntax, up to 512 bytes)"))
}

fn headers_map(path: &str, value: &Value) -> Result<Vec<(String, String)>, DocError> {
    let mut out = Vec::new();
    for (name, v) in object(path, value)?.iter() {
        let here = format!("{path}.{name}");
        out.push((header_name(&here, name)?, string(&here, v)?.to_string()));
    }
    Ok(out)
}

fn one_of<'a>(path: &str, map: &'a Map, keys: &[&'static str]) -> Result<(&'static str, &'a Value), DocError> {
    only_keys(path, map, keys)?;
    let mut given = keys.iter().filter_map(|k| map.get(k).map(|v| (*k, v)));
    match (given.next(), given.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(error(path, format!("give exactly one of {}", keys.join(", ")))),
    }
}

fn read_match(path: &str, value: &Value) -> Result<Match, DocError> {
    let map = object(path, value)?;
    only_keys(path, map, &["path", "method", "headers", "clients"])?;
    let mut m = Match::default();
    if let Some(v) = map.get("path") {
        let here = format!("{path}.path");
        let (kind, v) = one_of(&here, object(&here, v)?, &["exact", "prefix", "regex"])?;
        let here = format!("{here}.{kind}");
        m.path = Some(match kind {
            "exact" => PathMatch::Exact(string(&here, v)?.to_string()),
            "prefix" => PathMatch::Prefix(string(&here, v)?.to_string()),
            _ => PathMatch::Regex(pattern(&here, v)?),
        });
    }
    if let Some(v) = map.get("method") {
        let here = format!("{path}.method");
        let method = string(&here, v)?;
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad(&here, v, "a method in capitals, such as POST"));
        }
        m.method = Some(method.to_string());
    }
    if let Some(v) = map.get("headers") {
        let here = format!("{path}.headers");
        let list = v.as_array().ok_or_else(|| bad(&here, v, "a list of header conditions"))?;
        for (i, h) in list.iter().enumerate() {
            let here = format!("{here}[{i}]");
            let hmap = object(&here, h)?;
            only_keys(&here, hmap, &["name", "exact", "present", "regex"])?;
            let name_value = hmap.get("name").ok_or_else(|| error(&here, "a header condition needs a name"))?;
            let name = header_name(&format!("{here}.name"), string(&format!("{here}.name"), name_value)?)?;
            let rest: Map = hmap.iter().filter(|(k, _)| *k != "name").map(|(k, v)| (k.clone(), v.clone())).collect();
            let (kind, v) = one_of(&here, &rest, &["exact", "present", "regex"])?;
            let at = format!("{here}.{kind}");
            let value = match kind {
                "exact" => ValueMatch::Exact(string(&at, v)?.to_string()),
                "present" => ValueMatch::Present(v.as_bool().ok_or_else(|| bad(&at, v, "true or false"))?),
                _ => ValueMatch::Regex(pattern(&at, v)?),
            };
            m.headers.push(HeaderMatch { name, value });
        }
    }
    if let Some(v) = map.get("clients") {
        let here = format!("{path}.clients");
        let list = v.as_array().ok_or_else(|| bad(&here, v, "a list of addresses or CIDRs"))?;
        for (i, c) in list.iter().enumerate() {
            let at = format!("{here}[{i}]");
            let cidr = Cidr::parse(string(&at, c)?).ok_or_else(|| bad(&at, c, net::ACCEPTED))?;
            m.clients.push(cidr.to_string());
        }
    }
    Ok(m)
}

fn read_fault(path: &str, value: &Value) -> Result<Fault, DocError> {
    let map = object(path, value)?;
    let keys = ["delay", "abort", "response", "bounded_retries", "response_delay", "response_rewrite"];
    let (kind, v) = one_of(path, map, &keys).map_err(|_| error(path, format!("give {FAULTS}")))?;
    let here = format!("{path}.{kind}");
    let body = object(&here, v)?;
    let field = |k: &str| (format!("{here}.{k}"), body.get(k));
    Ok(match kind {
        "delay" | "response_delay" => {
            only_keys(&here, body, if kind == "delay" { &["fixed", "jitter"] } else { &["fixed"] })?;
            let (p, fixed) = field("fixed");
            let fixed = millis(&p, fixed.ok_or_else(|| error(&here, "needs 'fixed', a duration"))?)?;
            if kind == "response_delay" {
                Fault::ResponseDelay { fixed }
            } else {
                let (p, jitter) = field("jitter");
                let jitter = jitter.map(|j| millis(&p, j)).transpose()?.unwrap_or_default();
                if fixed.0 + jitter.0 > duration::MAX_MILLIS {
                    return Err(error(&here, "fixed + jitter must be at most 1h"));
                }
                Fault::Delay { fixed, jitter }
            }
        }
        "abort" => {
            only_keys(&here, body, &["status", "grpc_status"])?;
            let (p, s) = field("status");
            let (pg, g) = field("grpc_status");
            if s.is_none() && g.is_none() {
                return Err(error(&here, "needs 'status' (HTTP) and/or 'grpc_status'"));
            }
            let grpc = g.map(|g| grpc_status(&pg, g)).transpose()?;
            Fault::Abort { status: s.map(|s| status(&p, s)).transpose()?.unwrap_or(503), grpc_status: grpc }
        }
        "response" => {
            only_keys(&here, body, &["status", "headers", "body", "grpc_status"])?;
            let (p, s) = field("status");
            let (ph, h) = field("headers");
            let (pb, b) = field("body");
            let (pg, g) = field("grpc_status");
            Fault::Response {
                status: s.map(|s| status(&p, s)).transpose()?.unwrap_or(200),
                headers: h.map(|h| headers_map(&ph, h)).transpose()?.unwrap_or_default(),
                body: b.map(|b| string(&pb, b).map(str::to_string)).transpose()?.unwrap_or_default(),
                grpc_status: g.map(|g| grpc_status(&pg, g)).transpose()?,
            }
        }
        "bounded_retries" => {
            only_keys(&here, body, &["retries", "status"])?;
            let (p, r) = field("retries");
            let retries = r
                .ok_or_else(|| error(&here, "needs 'retries', the attempts that fail"))
                .and_then(|r| r.as_u64().filter(|n| *n <= 10_000).ok_or_else(|| bad(&p, r, "a whole number from 0 to 10000")))?;
            let (ps, s) = field("status");
            Fault::BoundedRetries { retries: retries as u32, status: s.map(|s| status(&ps, s)).transpose()?.unwrap_or(503) }
        }
        _ => {
            only_keys(&here, body, &["status", "add_headers", "remove_headers"])?;
            let (p, s) = field("status");
            let (pa, a) = field("add_headers");
            let (pr, r) = field("remove_headers");
            let mut remove = Vec::new();
            if let Some(r) = r {
                let list = r.as_array().ok_or_else(|| bad(&pr, r, "a list of header names"))?;
                for (i, name) in list.iter().enumerate() {
                    let at = format!("{pr}[{i}]");
                    remove.push(header_name(&at, string(&at, name)?)?);
                }
            }
            Fault::ResponseRewrite {
                status: s.map(|s| status(&p, s)).transpose()?,
                add_headers: a.map(|a| headers_map(&pa, a)).transpose()?.unwrap_or_default(),
                remove_headers: remove,
            }
        }
    })
}

impl Rule {
    /// Reads one rule at `path`; `ttl` counts from `now_ms`.
    pub fn parse(path: &str, value: &Value, now_ms: u64) -> Result<Rule, DocError> {
        let map = object(path, value)?;
        only_keys(path, map, &["match", "fault", "percentage", "sample_by", "ttl"])?;
        let matcher = map.get("match").map(|m| read_match(&format!("{path}.match"), m)).transpose()?.unwrap_or_default();
        let fault_value = map.get("fault").ok_or_else(|| error(path, format!("a rule needs a 'fault': {FAULTS}")))?;
        let fault = read_fault(&format!("{path}.fault"), fault_value)?;
        let percentage = match map.get("percentage") {
            None => Percentage(percentage::FULL),
            Some(v) => {
                let p = format!("{path}.percentage");
                Percentage::parse(&v.as_number().and_then(Number::plain).unwrap_or_default()).ok_or_else(|| bad(&p, v, percentage::ACCEPTED))?
            }
        };
        let sample_by = map
            .get("sample_by")
            .map(|v| {
                let p = format!("{path}.sample_by");
                header_name(&p, string(&p, v)?)
            })
            .transpose()?;
        let until_ms = match map.get("ttl") {
            None => None,
            Some(v) => {
                let ttl = millis(&format!("{path}.ttl"), v)?;
                if ttl.0 == 0 {
                    return Err(bad(&format!("{path}.ttl"), v, "a duration above 0"));
                }
                Some(now_ms.saturating_add(ttl.0))
            }
        };
        Ok(Rule { matcher, fault, percentage, sample_by, until_ms })
    }

    /// Reads a list of rules (`rules` in a document).
    pub fn parse_list(path: &str, value: &Value, now_ms: u64) -> Result<Vec<Rule>, DocError> {
        let list = value.as_array().ok_or_else(|| bad(path, value, "a list of rules"))?;
        if list.len() > MAX_RULES {
            return Err(error(path, format!("at most {MAX_RULES} rules")));
        }
        list.iter().enumerate().map(|(i, r)| Rule::parse(&format!("{path}[{i}]"), r, now_ms)).collect()
    }

    /// The rule as a document shows it, `ttl` being the time left at `now_ms`; reading it
    /// back gives the same rule.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let mut map = Map::new();
        if !self.matcher.is_empty() {
            map.insert("match", match_json(&self.matcher));
        }
        map.insert("fault", fault_json(&self.fault));
        map.insert("percentage", self.percentage.to_json());
        if let Some(h) = &self.sample_by {
            map.insert("sample_by", h.as_str().into());
        }
        if let Some(until) = self.until_ms {
            map.insert("ttl", Millis(until.saturating_sub(now_ms).max(1)).to_string().into());
        }
        Value::Object(map)
    }

    /// The form shared between workers: the document's own shape, with the absolute end
    /// time `until_ms` in place of `ttl`, so there is one reader and one writer of rules.
    pub fn to_stored(&self) -> Value {
        let mut value = Rule { until_ms: None, ..self.clone() }.to_json(0);
        if let (Some(until), Some(map)) = (self.until_ms, value.as_object_mut()) {
            map.insert("until_ms", until.into());
        }
        value
    }

    /// Reads the shared form back; `None` when it is not a rule.
    pub fn from_stored(value: &Value) -> Option<Rule> {
        let mut map = value.as_object()?.clone();
        let until_ms = map.remove("until_ms").and_then(|v| v.as_u64());
        let rule = Rule::parse("rule", &Value::Object(map), 0).ok()?;
        Some(Rule { until_ms, ..rule })
    }
}

fn headers_json(headers: &[(String, String)]) -> Value {
    Value::Object(headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

fn match_json(m: &Match) -> Value {
    let mut map = Map::new();
    if let Some(p) = &m.path {
        let (k, v) = match p {
            PathMatch::Exact(s) => ("exact", s),
            PathMatch::Prefix(s) => ("prefix", s),
            PathMatch::Regex(r) => ("regex", &r.source),
        };
        map.insert("path", json::object([(k, v.as_str().into())]));
    }
    if let Some(method) = &m.method {
        map.insert("method", method.as_str().into());
    }
    if !m.headers.is_empty() {
        let list = m.headers.iter().map(|h| {
            let (k, v) = match &h.value {
                ValueMatch::Exact(v) => ("exact", v.as_str().into()),
                ValueMatch::Present(b) => ("present", (*b).into()),
                ValueMatch::Regex(r) => ("regex", r.source.as_str().into()),
            };
            json::object([("name", h.name.as_str().into()), (k, v)])
        });
        map.insert("headers", Value::Array(list.collect()));
    }
    if !m.clients.is_empty() {
        map.insert("clients", m.clients.clone().into());
    }
    Value::Object(map)
}

/// `{kind: {members}}`, with the members given as `Some` only.
fn fault_object<const N: usize>(kind: &str, members: [(&str, Option<Value>); N]) -> Value {
    let body: Map = members.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect();
    json::object([(kind, Value::Object(body))])
}

fn fault_json(fault: &Fault) -> Value {
    match fault {
        Fault::Delay { fixed, jitter } => {
            fault_object("delay", [("fixed", Some(fixed.to_string().into())), ("jitter", Some(jitter.to_string().into()))])
        }
        Fault::Abort { status, grpc_status } => {
            fault_object("abort", [("status", Some((*status).into())), ("grpc_status", grpc_status.map(Value::from))])
        }
        Fault::Response { status, headers, body, grpc_status } => fault_object(
            "response",
            [
                ("status", Some((*status).into())),
                ("headers", Some(headers_json(headers))),
                ("body", Some(body.as_str().into())),
                ("grpc_status", grpc_status.map(Value::from)),
            ],
        ),
        Fault::BoundedRetries { retries, status } => {
            fault_object("bounded_retries", [("retries", Some((*retries).into())), ("status", Some((*status).into()))])
        }
        Fault::ResponseDelay { fixed } => fault_object("response_delay", [("fixed", Some(fixed.to_string().into()))]),
        Fault::ResponseRewrite { status, add_headers, remove_headers } => fault_object(
            "response_rewrite",
            [
                ("status", status.map(Value::from)),
                ("add_headers", Some(headers_json(add_headers))),
                ("remove_headers", Some(remove_headers.clone().into())),
            ],
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::json::testing::json;

    #[derive(Default)]
    struct Req {
        path: String,
        method: String,
        headers: Vec<(String, String)>,
        client: Option<IpAddr>,
        asked: Vec<&'static str>,
    }

    impl RequestView for Req {
        fn path(&mut self) -> String {
            self.asked.push("path");
            self.path.clone()
        }
        fn method(&mut self) -> String {
            self.asked.push("method");
            self.method.clone()
        }
        fn header(&mut self, name: &str) -> Option<String> {
            self.asked.push("header");
            self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        }
        fn client(&mut self) -> Option<IpAddr> {
            self.asked.push("client");
            self.client
        }
    }

    fn req(method: &str, path: &str) -> Req {
        Req { path: path.into(), method: method.into(), ..Req::default() }
    }

    fn rule(v: Value) -> Rule {
        Rule::parse("rules[0]", &v, 1000).unwrap()
    }

    fn err(v: Value) -> String {
        Rule::parse("rules[0]", &v, 1000).unwrap_err().to_string()
    }

    #[test]
    fn checkout_for_one_user() {
        let r = rule(json(r#"{
            "match": {"path": {"prefix": "/checkout"}, "method": "POST",
                      "headers": [{"name": "X-User", "exact": "alice"}], "clients": ["10.0.0.0/8"]},
            "fault": {"abort": {"status": 503}}
        }"#));
        let mut yes = req("POST", "/checkout/42");
        yes.headers.push(("x-user".into(), "alice".into()));
        yes.client = Some("10.1.2.3".parse().unwrap());
        assert!(r.matcher.matches(&mut yes));
        let mut other_user = req("POST", "/checkout/42");
        other_user.headers.push(("x-user".into(), "bob".into()));
        other_user.client = yes.client;
        assert!(!r.matcher.matches(&mut other_user));
        let mut get = req("GET", "/checkout/42");
        assert!(!r.matcher.matches(&mut get));
        // Conditions are checked in order and stop at the first miss: nothing else is read.
        assert_eq!(get.asked, ["path", "method"]);
        assert_eq!(r.percentage, Percentage(percentage::FULL));
    }

    #[test]
    fn path_header_and_client_kinds() {
        let exact = rule(json(r#"{"match": {"path": {"exact": "/a"}}, "fault": {"abort": {"status": 500}}}"#));
        assert!(exact.matcher.matches(&mut req("GET", "/a")) && !exact.matcher.matches(&mut req("GET", "/ab")));
        let re = rule(json(r#"{"match": {"path": {"regex": "/items/[0-9]+"}}, "fault": {"abort": {"status": 500}}}"#));
        assert!(re.matcher.matches(&mut req("GET", "/items/12")));
        assert!(!re.matcher.matches(&mut req("GET", "/items/12/x")), "the whole path must match");
        let absent = rule(json(r#"{"match": {"headers": [{"name": "x-canary", "present": false}]}, "fault": {"abort": {"status": 500}}}"#));
        assert!(absent.matcher.matches(&mut req("GET", "/")));
        let hre = rule(json(r#"{"match": {"headers": [{"name": "user-agent", "regex": "curl/.*"}]}, "fault": {"abort": {"status": 500}}}"#));
        let mut curl = req("GET", "/");
        curl.headers.push(("user-agent".into(), "curl/8.0".into()));
        assert!(hre.matcher.matches(&mut curl) && !hre.matcher.matches(&mut req("GET", "/")));
        let client = rule(json(r#"{"match": {"clients": ["127.0.0.2"]}, "fault": {"abort": {"status": 500}}}"#));
        assert!(!client.matcher.matches(&mut req("GET", "/")), "no address, no match");
    }

    #[test]
    fn first_match_wins() {
        let rules = vec![
            rule(json(r#"{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 501}}}"#)),
            rule(json(r#"{"fault": {"abort": {"status": 502}}}"#)),
        ];
        assert_eq!(first_match(&rules, &mut req("GET", "/abc")).unwrap().fault, Fault::Abort { status: 501, grpc_status: None });
        assert_eq!(first_match(&rules, &mut req("GET", "/b")).unwrap().fault, Fault::Abort { status: 502, grpc_status: None });
        assert!(first_match(&rules[..1], &mut req("GET", "/b")).is_none());
    }

    #[test]
    fn every_fault_reads_back_the_same() {
        for v in [
            json(r#"{"fault": {"delay": {"fixed": "2s", "jitter": "250ms"}}, "percentage": 12.5, "sample_by": "X-User-Id"}"#),
            json(r#"{"fault": {"abort": {"status": 503, "grpc_status": 14}}, "ttl": "5m"}"#),
            json(r#"{"fault": {"response": {"status": 201, "headers": {"x-a": "b"}, "body": "hi"}}}"#),
            json(r#"{"fault": {"bounded_retries": {"retries": 2, "status": 500}}}"#),
            json(r#"{"fault": {"response_delay": {"fixed": "300ms"}}}"#),
            json(r#"{"match": {"path": {"regex": "/x.*"}, "headers": [{"name": "a", "present": true}]},
                   "fault": {"response_rewrite": {"status": 500, "add_headers": {"x-b": "c"}, "remove_headers": ["etag"]}}}"#),
        ] {
            let r = rule(v.clone());
            let shown = r.to_json(1000);
            assert_eq!(Rule::parse("r", &shown, 1000).unwrap(), r, "{shown}");
            let stored = json::parse(r.to_stored().to_string().as_bytes()).unwrap();
            assert_eq!(Rule::from_stored(&stored).unwrap(), r);
        }
        assert_eq!(rule(json(r#"{"fault": {"abort": {"status": 503}}, "ttl": "5m"}"#)).until_ms, Some(301_000));
    }

    #[test]
    fn patterns_too_big_to_compile_are_refused() {
        // regex-lite caps a compiled pattern's size and matches in linear time, so a rule
        // cannot make the filter slow; this one would expand a million-fold.
        assert!(Pattern::new("((a{100}){100}){100}").is_none());
        assert!(Pattern::new(&"a".repeat(MAX_PATTERN_LEN + 1)).is_none());
        assert!(Pattern::new("(a*)*b").unwrap().matches("aab"));
    }

    #[test]
    fn errors_name_the_json_path() {
        for (v, needle) in [
            (json(r#"[]"#), "rules[0]: [] is not accepted; expected an object"),
            (json(r#"{}"#), "rules[0]: a rule needs a 'fault'"),
            (json(r#"{"fault": {}}"#), "rules[0].fault: give one of delay"),
            (json(r#"{"fault": {"delay": {}, "abort": {}}}"#), "rules[0].fault: give one of"),
            (json(r#"{"fault": {"delay": {"fixed": "2x"}}}"#), "rules[0].fault.delay.fixed: \"2x\" is not accepted"),
            (json(r#"{"fault": {"delay": {"fixed": "59m", "jitter": "2m"}}}"#), "rules[0].fault.delay: fixed + jitter"),
            (json(r#"{"fault": {"abort": {"status": 99}}}"#), "rules[0].fault.abort.status: 99"),
            (json(r#"{"fault": {"abort": {"grpc_status": 17}}}"#), "rules[0].fault.abort.grpc_status: 17"),
            (json(r#"{"fault": {"abort": {}}}"#), "rules[0].fault.abort: needs 'status'"),
            (json(r#"{"fault": {"abort": {"status": 500, "x": 1}}}"#), "rules[0].fault.abort.x: unknown key"),
            (json(r#"{"match": {"path": {"regex": "("}}, "fault": {"abort": {"status": 500}}}"#), "rules[0].match.path.regex"),
            (json(r#"{"match": {"path": {"exact": "/a", "prefix": "/"}}, "fault": {"abort": {"status": 500}}}"#), "rules[0].match.path: give exactly one"),
            (json(r#"{"match": {"method": "post"}, "fault": {"abort": {"status": 500}}}"#), "rules[0].match.method"),
            (json(r#"{"match": {"headers": [{"exact": "a"}]}, "fault": {"abort": {"status": 500}}}"#), "rules[0].match.headers[0]: a header condition needs a name"),
            (json(r#"{"match": {"headers": [{"name": "a b", "exact": "a"}]}, "fault": {"abort": {"status": 500}}}"#), "rules[0].match.headers[0].name"),
            (json(r#"{"match": {"clients": ["10.0.0.0/99"]}, "fault": {"abort": {"status": 500}}}"#), "rules[0].match.clients[0]"),
            (json(r#"{"fault": {"abort": {"status": 500}}, "percentage": 101}"#), "rules[0].percentage: 101"),
            (json(r#"{"fault": {"abort": {"status": 500}}, "ttl": "0"}"#), "rules[0].ttl"),
            (json(r#"{"fault": {"abort": {"status": 500}}, "when": 1}"#), "rules[0].when: unknown key"),
            (json(r#"{"fault": {"response_rewrite": {"remove_headers": [3]}}}"#), "rules[0].fault.response_rewrite.remove_headers[0]"),
        ] {
            let message = err(v.clone());
            assert!(message.starts_with(needle), "{v}: {message}");
        }
        let too_many = Value::Array(vec![json(r#"{"fault": {"abort": {"status": 500}}}"#); MAX_RULES + 1]);
        assert!(Rule::parse_list("rules", &too_many, 0).unwrap_err().to_string().starts_with("rules: at most 64"));
    }
}
