//! Rules of the JSON policy document: which requests a rule is for (`match`), what they
//! get (`fault`), how many (`percentage`, optionally sampled by a header) and for how long
//! (`ttl`). The first matching rule wins. The types read and write the document's own
//! shape with serde; the shared state keeps rules in that shape too, with `until_ms`.

use crate::faults::Fault;
use crate::model::duration::{self, Millis};
use crate::model::net::Cidr;
use crate::model::outbound::{Direction, HostMatch};
use crate::model::percentage::Percentage;
use crate::model::values::{self, from_given, from_object, Given, HeaderName, Pattern, Text};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The most rules a document may hold, so the shared state stays small.
pub const MAX_RULES: usize = 64;

/// How a request's path (without its query) is matched.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Its beginning.
    Prefix(String),
    /// A regular expression over the whole path.
    Regex(Pattern),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathSpec {
    exact: Option<Text>,
    prefix: Option<Text>,
    regex: Option<Pattern>,
}

impl TryFrom<PathSpec> for PathMatch {
    type Error = &'static str;
    fn try_from(spec: PathSpec) -> Result<PathMatch, &'static str> {
        match (spec.exact, spec.prefix, spec.regex) {
            (Some(Text(p)), None, None) => Ok(PathMatch::Exact(p)),
            (None, Some(Text(p)), None) => Ok(PathMatch::Prefix(p)),
            (None, None, Some(r)) => Ok(PathMatch::Regex(r)),
            _ => Err("give exactly one of exact, prefix, regex"),
        }
    }
}
from_object!(PathMatch, PathSpec);

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
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(into = "HeaderSpec")]
pub struct HeaderMatch {
    /// The header name, lowercase.
    pub name: HeaderName,
    /// The condition on its value.
    pub value: ValueMatch,
}

/// A header condition as written: its name and one condition.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSpec {
    name: Option<HeaderName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exact: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    present: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<Pattern>,
}

impl From<HeaderMatch> for HeaderSpec {
    fn from(h: HeaderMatch) -> HeaderSpec {
        let mut spec = HeaderSpec { name: Some(h.name), exact: None, present: None, regex: None };
        match h.value {
            ValueMatch::Exact(v) => spec.exact = Some(Text(v)),
            ValueMatch::Present(b) => spec.present = Some(b),
            ValueMatch::Regex(r) => spec.regex = Some(r),
        }
        spec
    }
}

impl TryFrom<HeaderSpec> for HeaderMatch {
    type Error = &'static str;
    fn try_from(spec: HeaderSpec) -> Result<HeaderMatch, &'static str> {
        let name = spec.name.ok_or("a header condition needs a name")?;
        let value = match (spec.exact, spec.present, spec.regex) {
            (Some(Text(v)), None, None) => ValueMatch::Exact(v),
            (None, Some(b), None) => ValueMatch::Present(b),
            (None, None, Some(r)) => ValueMatch::Regex(r),
            _ => return Err("give exactly one of exact, present, regex"),
        };
        Ok(HeaderMatch { name, value })
    }
}
from_object!(HeaderMatch, HeaderSpec);

/// A method in capitals, such as `POST`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Method(String);

impl TryFrom<Given> for Method {
    type Error = String;
    fn try_from(given: Given) -> Result<Method, String> {
        match given.as_str() {
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Method(m.to_string())),
            _ => Err(given.refused("a method in capitals, such as POST")),
        }
    }
}
from_given!(Method);

/// Which requests a rule is for; every condition given must hold, none given matches all.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// The method, exactly (`POST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "values::list_of_objects")]
    pub headers: Vec<HeaderMatch>,
    /// Client address ranges (Envoy's `source.address`); any one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<Cidr>,
    /// The destination host (`:authority` without its port), for outbound rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostMatch>,
    /// Destination address ranges (Envoy's `destination.address`: the address the app
    /// called, for outbound rules of a capturing listener); any one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<Cidr>,
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
    /// The address the request was sent to.
    fn destination(&mut self) -> Option<IpAddr>;
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
        if self.method.as_ref().is_some_and(|m| m.0 != request.method()) {
            return false;
        }
        for header in &self.headers {
            let value = request.header(header.name.as_str());
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
            if !self.clients.iter().any(|c| c.contains(ip)) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            if !request.header(":authority").is_some_and(|a| host.matches(&a)) {
                return false;
            }
        }
        if !self.destinations.is_empty() {
            let Some(ip) = request.destination() else { return false };
            if !self.destinations.iter().any(|c| c.contains(ip)) {
                return false;
            }
        }
        true
    }

    /// True when it has no condition (and matches every request).
    pub fn is_empty(&self) -> bool {
        *self == Match::default()
    }
}

/// A rule's name: what the access log, the labelled counters and `counts` call it. It goes
/// into a Prometheus label and an Envoy stat name, so it is kept to what survives both, and
/// never reads as another source's label: an index (an unnamed rule's), `header` or `policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RuleName(String);

/// The longest rule name.
pub const MAX_NAME_CHARS: usize = 64;

const NAME_ACCEPTED: &str = "a name of 1 to 64 letters, digits, '-', '_' and '.', beginning and ending with a letter or digit, without '..'; not all digits (an unnamed rule's index is its label), not 'header' or 'policy' (the labels of header faults and the query policy)";

impl RuleName {
    /// The name, lowercase; `None` when it could be taken for another label or would not
    /// survive a stat name (an empty segment between dots is dropped there).
    pub fn new(name: &str) -> Option<RuleName> {
        let bytes = name.as_bytes();
        let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        let fits = bytes.len() <= MAX_NAME_CHARS
            && edge(bytes.first())
            && edge(bytes.last())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
            && !name.contains("..")
            && !bytes.iter().all(u8::is_ascii_digit);
        let name = name.to_ascii_lowercase();
        (fits && name != "header" && name != "policy").then_some(RuleName(name))
    }

    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<Given> for RuleName {
    type Error = String;
    fn try_from(given: Given) -> Result<RuleName, String> {
        let Some(name) = given.as_str() else { return Err(given.refused("a string")) };
        RuleName::new(name).ok_or_else(|| given.refused(NAME_ACCEPTED))
    }
}
from_given!(RuleName);

/// A rule's `ttl`: a duration above 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Ttl(pub Millis);

impl TryFrom<Given> for Ttl {
    type Error = String;
    fn try_from(given: Given) -> Result<Ttl, String> {
        match duration::read(&given)? {
            Millis(0) => Err(given.refused("a duration above 0")),
            ttl => Ok(Ttl(ttl)),
        }
    }
}
from_given!(Ttl);

/// A rule as the policy document writes it: `ttl` is the time it has left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// What the rule is called in errors, answers, the access log and the metrics; its
    /// index in `rules` when absent (see [`RuleName`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<RuleName>,
    /// Which listeners apply it: inbound (the default) or outbound.
    #[serde(default, skip_serializing_if = "Direction::is_inbound")]
    pub direction: Direction,
    /// Which requests.
    #[serde(rename = "match", default, skip_serializing_if = "Match::is_empty", deserialize_with = "values::object")]
    pub matcher: Match,
    /// What they get.
    pub fault: Fault,
    /// The share of matched requests that get it.
    #[serde(default = "Percentage::full")]
    pub percentage: Percentage,
    /// A request header whose value decides the sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_by: Option<HeaderName>,
    /// How long the rule has left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
}

/// One rule, as the shared state keeps it: the document's shape with the absolute end
/// time `until_ms` in place of `ttl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// What the rule is called; its index when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<RuleName>,
    /// Which listeners apply it.
    #[serde(default, skip_serializing_if = "Direction::is_inbound")]
    pub direction: Direction,
    /// Which requests.
    #[serde(rename = "match", default, skip_serializing_if = "Match::is_empty")]
    pub matcher: Match,
    /// What they get.
    pub fault: Fault,
    /// The share of matched requests that get it.
    #[serde(default = "Percentage::full")]
    pub percentage: Percentage,
    /// A request header whose value decides the sampling, so the same value (a user, a
    /// request id) is always in or always out; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_by: Option<HeaderName>,
    /// When the rule ends by itself (`ttl`), in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl Rule {
    /// The rule a document's `spec` describes, its `ttl` counted from `now_ms`.
    pub fn new(spec: RuleSpec, now_ms: u64) -> Rule {
        let until_ms = spec.ttl.map(|ttl| now_ms.saturating_add(ttl.0 .0));
        Rule { name: spec.name, direction: spec.direction, matcher: spec.matcher, fault: spec.fault, percentage: spec.percentage, sample_by: spec.sample_by, until_ms }
    }

    /// The rule as a document shows it at `now_ms`; reading it back gives the same rule.
    pub fn spec(&self, now_ms: u64) -> RuleSpec {
        RuleSpec {
            name: self.name.clone(),
            direction: self.direction,
            matcher: self.matcher.clone(),
            fault: self.fault.clone(),
            percentage: self.percentage,
            sample_by: self.sample_by.clone(),
            ttl: self.until_ms.map(|until| Ttl(Millis(until.saturating_sub(now_ms).max(1)))),
        }
    }
}

/// Where a decision came from: what the access log and the counters name it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// No fault applied: no rule matched and the policy is idle, or a control call.
    Nothing,
    /// The request's own `x-fault-*` headers.
    Header,
    /// The rule at this index in the state's rules (matched, even when sampled out).
    Rule(usize),
    /// The client's policy, or the default.
    Policy,
    /// A tripped guard: the request passed whatever would have applied.
    Halted,
}

/// The first rule of `direction` that matches the request, if any, with its index.
pub fn first_match<'a>(rules: &'a [Rule], direction: Direction, request: &mut dyn RequestView) -> Option<(usize, &'a Rule)> {
    rules.iter().enumerate().find(|(_, r)| r.direction == direction && r.matcher.matches(request))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::percentage::FULL;
    use crate::model::values::HttpStatus;

    #[derive(Default)]
    struct Req {
        path: String,
        method: String,
        headers: Vec<(String, String)>,
        client: Option<IpAddr>,
        destination: Option<IpAddr>,
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
        fn destination(&mut self) -> Option<IpAddr> {
            self.asked.push("destination");
            self.destination
        }
    }

    fn req(method: &str, path: &str) -> Req {
        Req { path: path.into(), method: method.into(), ..Req::default() }
    }

    fn document(rule: &str) -> String {
        format!(r#"{{"rules": [{rule}]}}"#)
    }

    fn rule(text: &str) -> Rule {
        crate::model::document::parse(document(text).as_bytes(), 1000).unwrap().rules.remove(0)
    }

    fn err(text: &str) -> String {
        crate::model::document::parse(document(text).as_bytes(), 1000).unwrap_err().to_string()
    }

    #[test]
    fn checkout_for_one_user() {
        let r = rule(r#"{
            "match": {"path": {"prefix": "/checkout"}, "method": "POST",
                      "headers": [{"name": "X-User", "exact": "alice"}], "clients": ["10.0.0.0/8"]},
            "fault": {"abort": {"status": 503}}
        }"#);
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
        assert_eq!(r.percentage, Percentage(FULL));
    }

    #[test]
    fn path_header_and_client_kinds() {
        let exact = rule(r#"{"match": {"path": {"exact": "/a"}}, "fault": {"abort": {"status": 500}}}"#);
        assert!(exact.matcher.matches(&mut req("GET", "/a")) && !exact.matcher.matches(&mut req("GET", "/ab")));
        let re = rule(r#"{"match": {"path": {"regex": "/items/[0-9]+"}}, "fault": {"abort": {"status": 500}}}"#);
        assert!(re.matcher.matches(&mut req("GET", "/items/12")));
        assert!(!re.matcher.matches(&mut req("GET", "/items/12/x")), "the whole path must match");
        let absent = rule(r#"{"match": {"headers": [{"name": "x-canary", "present": false}]}, "fault": {"abort": {"status": 500}}}"#);
        assert!(absent.matcher.matches(&mut req("GET", "/")));
        let hre = rule(r#"{"match": {"headers": [{"name": "user-agent", "regex": "curl/.*"}]}, "fault": {"abort": {"status": 500}}}"#);
        let mut curl = req("GET", "/");
        curl.headers.push(("user-agent".into(), "curl/8.0".into()));
        assert!(hre.matcher.matches(&mut curl) && !hre.matcher.matches(&mut req("GET", "/")));
        let client = rule(r#"{"match": {"clients": ["127.0.0.2"]}, "fault": {"abort": {"status": 500}}}"#);
        assert!(!client.matcher.matches(&mut req("GET", "/")), "no address, no match");
    }

    #[test]
    fn first_match_wins() {
        let rules = vec![
            rule(r#"{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 501}}}"#),
            rule(r#"{"fault": {"abort": {"status": 502}}}"#),
        ];
        let abort = |status| Fault::Abort(crate::faults::abort::Abort::status(HttpStatus(status)));
        assert_eq!(first_match(&rules, Direction::Inbound, &mut req("GET", "/abc")).unwrap().1.fault, abort(501));
        assert_eq!(first_match(&rules, Direction::Inbound, &mut req("GET", "/b")).unwrap().1.fault, abort(502));
        assert!(first_match(&rules[..1], Direction::Inbound, &mut req("GET", "/b")).is_none());
    }

    #[test]
    fn every_fault_reads_back_the_same() {
        for text in [
            r#"{"fault": {"delay": {"fixed": "2s", "jitter": "250ms"}}, "percentage": 12.5, "sample_by": "X-User-Id"}"#,
            r#"{"fault": {"abort": {"status": 503, "grpc_status": 14}}, "ttl": "5m"}"#,
            r#"{"fault": {"response": {"status": 201, "headers": {"x-a": "b"}, "body": "hi"}}}"#,
            r#"{"fault": {"bounded_retries": {"retries": 2, "status": 500}}}"#,
            r#"{"fault": {"response_delay": {"fixed": "300ms"}}}"#,
            r#"{"fault": {"reset": {}}}"#,
            r#"{"fault": {"reset": {"after": "2s"}}}"#,
            r#"{"fault": {"truncate": {"after_bytes": 1000}}}"#,
            r#"{"fault": {"throttle": {"bytes_per_second": 102400}}}"#,
            r#"{"fault": {"delay_shape": {"p50": "100ms", "p99": "2s"}}}"#,
            r#"{"fault": {"body_change": {"replace": {"body": "x", "content_type": "text/plain"}}}}"#,
            r#"{"fault": {"body_change": {"corrupt": {"percentage": 5}}}}"#,
            r#"{"fault": {"request_rewrite": {"path": "/x", "method": "POST", "set_headers": {"x-a": "1"}, "remove_headers": ["authorization"], "query": {"debug": "1"}}}}"#,
            r#"{"fault": {"delay": {"fixed": "5s", "jitter": "0ms"}, "abort": {"status": 503}}}"#,
            r#"{"fault": {"abort": {"status": 500, "grpc_status": 14}, "delay": {"fixed": "1s"}}}"#,
            r#"{"match": {"path": {"regex": "/x.*"}, "headers": [{"name": "a", "present": true}]},
                   "fault": {"response_rewrite": {"status": 500, "add_headers": {"x-b": "c"}, "remove_headers": ["etag"]}}}"#,
        ] {
            let r = rule(text);
            let shown = serde_json::to_string(&r.spec(1000)).unwrap();
            assert_eq!(rule(&shown), r, "{shown}");
            let stored = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Rule>(&stored).unwrap(), r);
        }
        assert_eq!(rule(r#"{"fault": {"abort": {"status": 503}}, "ttl": "5m"}"#).until_ms, Some(301_000));
    }

    #[test]
    fn rule_names_never_read_as_another_label() {
        for name in ["checkout", "a.b-c_d", "4a", "v1.2", &"x".repeat(MAX_NAME_CHARS)] {
            assert_eq!(rule(&format!(r#"{{"name": "{name}", "fault": {{"abort": {{"status": 500}}}}}}"#)).name.unwrap().as_str(), name);
        }
        for name in ["4", "007", "header", "Policy", "..", "", ".a", "a.", "a..b", "-a", "a b", &"x".repeat(MAX_NAME_CHARS + 1)] {
            let message = err(&format!(r#"{{"name": "{name}", "fault": {{"abort": {{"status": 500}}}}}}"#));
            assert!(message.starts_with("rules[0].name: ") && message.contains("not all digits (an unnamed rule's index"), "{name}: {message}");
            assert!(message.contains("1 to 64") && message.contains("not 'header' or 'policy'"), "{message}");
        }
    }

    #[test]
    fn errors_name_the_json_path() {
        for (text, needle) in [
            (r#"[]"#, "rules[0]: a list is not accepted; expected an object"),
            (r#"{}"#, "rules[0]: needs 'fault'"),
            (r#"{"fault": {}}"#, "rules[0].fault: give one of delay"),
            (r#"{"fault": {"delay": {"fixed": "1s"}, "response": {}}}"#, "rules[0].fault: give one of"),
            (r#"{"fault": {"delay": {"fixed": "1s"}, "abort": {"status": 503}, "reset": {}}}"#, "rules[0].fault: give one of"),
            (r#"{"fault": {"truncate": {"after_bytes": -1}}}"#, "rules[0].fault.truncate.after_bytes: -1 is not accepted; expected a whole number"),
            (r#"{"fault": {"throttle": {"bytes_per_second": 0}}}"#, "rules[0].fault.throttle: bytes_per_second: 0 is not accepted"),
            (r#"{"fault": {"throttle": {"bytes_per_second": "1"}}}"#, "rules[0].fault.throttle.bytes_per_second: \"1\" is a string; expected a whole number"),
            (r#"{"fault": {"truncate": {"after_bytes": 1099511627777}}}"#, "rules[0].fault.truncate: after_bytes: 1099511627777 is not accepted; expected a whole number of bytes from 0 to 1099511627776 (1 TiB)"),
            (r#"{"fault": {"abort": {"status": "503"}}}"#, "rules[0].fault.abort.status: \"503\" is a string; expected a number: an HTTP status"),
            (r#"{"fault": {"abort": {"status": 18446744073709551616}}}"#, "rules[0].fault.abort.status: 18446744073709551616 is not accepted"),
            (r#"{"match": {"path": {"regex": "a("}}, "fault": {"abort": {"status": 500}}}"#, "rules[0].match.path.regex: \"a(\" is not accepted; expected a regular expression (RE2-like syntax, up to 512 bytes): found open group without closing ')'"),
            (r#"{"fault": {"delay_shape": {"p50": "2s", "p99": "1s"}}}"#, "rules[0].fault.delay_shape: p99 must be longer than p50"),
            (r#"{"fault": {"body_change": {"corrupt": {"percentage": 0}}}}"#, "rules[0].fault.body_change: corrupt.percentage: 0 is not accepted"),
            (r#"{"fault": {"reset": {"after": "soon"}}}"#, "rules[0].fault.reset.after"),
            (r#"{"fault": {"delay": {"fixed": "2x"}}}"#, "rules[0].fault.delay.fixed: \"2x\" is not accepted"),
            (r#"{"fault": {"delay": {"fixed": "59m", "jitter": "2m"}}}"#, "rules[0].fault.delay: fixed + jitter"),
            (r#"{"fault": {"abort": {"status": 99}}}"#, "rules[0].fault.abort.status: 99"),
            (r#"{"fault": {"abort": {"grpc_status": 17}}}"#, "rules[0].fault.abort.grpc_status: 17"),
            (r#"{"fault": {"abort": {}}}"#, "rules[0].fault.abort: needs 'status'"),
            (r#"{"fault": {"abort": {"grpc_status": 0}}}"#, "rules[0].fault.abort: grpc_status: 0 (OK) is not a failure"),
            (r#"{"fault": {"abort": {"status": 503, "grpc_status": 0}}}"#, "rules[0].fault.abort: grpc_status: 0 (OK) is not a failure"),
            (r#"{"fault": {"delay": {"fixed": "1s"}, "abort": {"status": 503, "grpc_status": 0}}}"#, "rules[0].fault.abort: grpc_status: 0 (OK)"),
            (r#"{"fault": {"abort": {"status": 500, "x": 1}}}"#, "rules[0].fault.abort.x: unknown key"),
            (r#"{"match": {"path": {"regex": "("}}, "fault": {"abort": {"status": 500}}}"#, "rules[0].match.path.regex"),
            (r#"{"match": {"path": {"exact": "/a", "prefix": "/"}}, "fault": {"abort": {"status": 500}}}"#, "rules[0].match.path: give exactly one"),
            (r#"{"match": {"method": "post"}, "fault": {"abort": {"status": 500}}}"#, "rules[0].match.method"),
            (r#"{"match": {"headers": [{"exact": "a"}]}, "fault": {"abort": {"status": 500}}}"#, "rules[0].match.headers[0]: a header condition needs a name"),
            (r#"{"match": {"headers": [{"name": "a b", "exact": "a"}]}, "fault": {"abort": {"status": 500}}}"#, "rules[0].match.headers[0].name"),
            (r#"{"match": {"clients": ["10.0.0.0/99"]}, "fault": {"abort": {"status": 500}}}"#, "rules[0].match.clients[0]"),
            (r#"{"fault": {"abort": {"status": 500}}, "percentage": 101}"#, "rules[0].percentage: 101"),
            (r#"{"fault": {"abort": {"status": 500}}, "ttl": "0"}"#, "rules[0].ttl"),
            (r#"{"fault": {"abort": {"status": 500}}, "when": 1}"#, "rules[0].when: unknown key"),
            (r#"{"fault": {"response_rewrite": {"remove_headers": [3]}}}"#, "rules[0].fault.response_rewrite.remove_headers[0]"),
            (r#"{"fault": {"response": {"headers": {"a b": "c"}}}}"#, "rules[0].fault.response.headers"),
            (r#"{"fault": {"request_rewrite": {}}}"#, "rules[0].fault.request_rewrite: give at least one of path, method"),
            (r#"{"fault": {"request_rewrite": {"method": "get"}}}"#, "rules[0].fault.request_rewrite: method: \"get\" is not accepted"),
            (r#"{"fault": {"request_rewrite": {"path": 1}}}"#, "rules[0].fault.request_rewrite.path"),
        ] {
            let message = err(text);
            assert!(message.starts_with(needle), "{text}: {message}");
        }
        let too_many = vec![r#"{"fault": {"abort": {"status": 500}}}"#; MAX_RULES + 1].join(",");
        assert!(err(&too_many).starts_with("rules: at most 64"));
    }
}
