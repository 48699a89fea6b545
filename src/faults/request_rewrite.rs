//! The `request_rewrite` fault: the request is changed before it goes upstream, as Chaos
//! Mesh's HTTPChaos `replace` does: a new path, method, headers set or removed, query
//! parameters set. Its wire spec (`{"request_rewrite": {...}}`, and the query policy's
//! parameters `path`, `method`, `setHeaders`, `removeHeaders`, `query`), its checks, and
//! what it does to a request's `:path` live here; the glue only hands the edits to Envoy.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// The fault's name in `x-fault-injected`, the access log, the labels and `policy=`.
pub const NAME: &str = "requestRewrite";

/// The query policy's parameters, in the order `GET /injector` shows them.
pub const PARAMETERS: [&str; 5] = ["path", "method", "setHeaders", "removeHeaders", "query"];

/// The most headers set, headers removed, or query parameters set (each).
pub const MAX_ITEMS: usize = 32;
const MAX_PATH: usize = 2048;
const MAX_VALUE: usize = 8192;

const PATH_ACCEPTED: &str = "a path beginning with '/', of visible ASCII without '?' and '#', at most 2048 characters (the query is kept; change it with query)";
const METHOD_ACCEPTED: &str = "a method in capitals, such as POST (at most 32 letters)";
const HEADER_ACCEPTED: &str = "a header name (letters, digits, '-', '_', '.'), not a pseudo-header (':path'...) nor content-length or transfer-encoding, which frame the body";
const VALUE_ACCEPTED: &str = "a value without CR, LF or NUL, at most 8192 bytes";
const QUERY_NAME_ACCEPTED: &str = "a query parameter name of 1 to 256 characters, without control characters";
const SET_HEADERS_ACCEPTED: &str = "name:value pairs separated by ',' (x-a:1,x-b:2), at most 32";
const REMOVE_HEADERS_ACCEPTED: &str = "header names separated by ',' (authorization,cookie), at most 32";
const QUERY_ACCEPTED: &str = "name:value pairs separated by ',' (debug:1,trace:on), at most 32";
const NOTHING: &str = "give at least one of path, method, set_headers, remove_headers, query";

/// What a request gets changed: each part optional, at least one given (checked by
/// [`RequestRewrite::check`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestRewrite {
    /// A new path; the request's query is kept (and changed by `query`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A new method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Headers set, replacing any of the same name; names lowercase.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "crate::model::values::pairs::serialize")]
    pub set_headers: Vec<(String, String)>,
    /// Headers removed; names lowercase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
    /// Query parameters set, replacing any of the same name, percent-encoded when applied.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "crate::model::values::pairs::serialize")]
    pub query: Vec<(String, String)>,
}

/// The fault as the policy document writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestRewriteSpec {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    set_headers: BTreeMap<String, String>,
    #[serde(default)]
    remove_headers: Vec<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
}

impl TryFrom<RequestRewriteSpec> for RequestRewrite {
    type Error = String;
    fn try_from(spec: RequestRewriteSpec) -> Result<RequestRewrite, String> {
        let mut rewrite = RequestRewrite::default();
        if let Some(path) = spec.path {
            rewrite.path = Some(checked_path(&path).ok_or_else(|| refused("path", &path, PATH_ACCEPTED))?);
        }
        if let Some(method) = spec.method {
            rewrite.method = Some(checked_method(&method).ok_or_else(|| refused("method", &method, METHOD_ACCEPTED))?);
        }
        for (name, value) in spec.set_headers {
            rewrite.set_headers.push(checked_header(&name, &value).map_err(|e| format!("set_headers.{e}"))?);
        }
        for name in spec.remove_headers {
            rewrite.remove_headers.push(header_name(&name).ok_or_else(|| refused("remove_headers", &name, HEADER_ACCEPTED))?);
        }
        for (name, value) in spec.query {
            rewrite.query.push(checked_query(&name, &value).map_err(|e| format!("query.{e}"))?);
        }
        rewrite.check().map(|()| rewrite)
    }
}

impl crate::faults::Kind for RequestRewrite {
    const NAME: &'static str = "request_rewrite";
    const LABEL: &'static str = NAME;
    const STAT: crate::stats::Stat = crate::stats::Stat::RequestsRewritten;
}

impl<'de> Deserialize<'de> for RequestRewrite {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec: RequestRewriteSpec = crate::model::values::object(deserializer)?;
        RequestRewrite::try_from(spec).map_err(serde::de::Error::custom)
    }
}

fn refused(key: &str, value: &str, accepted: &str) -> String {
    format!("{key}: {} is not accepted; expected {accepted}", crate::model::values::shown(&value.into()))
}

fn checked_path(path: &str) -> Option<String> {
    let fits = path.starts_with('/') && path.len() <= MAX_PATH && path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    fits.then(|| path.to_string())
}

fn checked_method(method: &str) -> Option<String> {
    let fits = !method.is_empty() && method.len() <= 32 && method.bytes().all(|b| b.is_ascii_uppercase());
    fits.then(|| method.to_string())
}

/// A header name the fault may set or remove, lowercase.
fn header_name(name: &str) -> Option<String> {
    let name = crate::model::values::HeaderName::new(name)?.as_str().to_string();
    let framing = name == "content-length" || name == "transfer-encoding";
    (!name.starts_with(':') && !framing).then_some(name)
}

fn checked_value(value: &str) -> bool {
    value.len() <= MAX_VALUE && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn checked_header(name: &str, value: &str) -> Result<(String, String), String> {
    let name = header_name(name).ok_or_else(|| refused("name", name, HEADER_ACCEPTED))?;
    if !checked_value(value) {
        return Err(refused(&name, value, VALUE_ACCEPTED));
    }
    Ok((name, value.to_string()))
}

fn checked_query(name: &str, value: &str) -> Result<(String, String), String> {
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(refused("name", name, QUERY_NAME_ACCEPTED));
    }
    if !checked_value(value) {
        return Err(refused(name, value, VALUE_ACCEPTED));
    }
    Ok((name.to_string(), value.to_string()))
}

impl RequestRewrite {
    /// Refuses a rewrite that changes nothing, or one with too many items.
    pub fn check(&self) -> Result<(), String> {
        if self.path.is_none() && self.method.is_none() && self.set_headers.is_empty() && self.remove_headers.is_empty() && self.query.is_empty() {
            return Err(NOTHING.into());
        }
        for (key, n) in [("set_headers", self.set_headers.len()), ("remove_headers", self.remove_headers.len()), ("query", self.query.len())] {
            if n > MAX_ITEMS {
                return Err(format!("{key}: at most {MAX_ITEMS}"));
            }
        }
        Ok(())
    }

    /// Sets query parameter `name` (one of [`PARAMETERS`]) from its text: the parts it
    /// gives replace this rewrite's. Refused with what is accepted.
    pub fn set(&mut self, name: &str, text: &str) -> Result<(), &'static str> {
        let items = |accepted| {
            let items: Vec<&str> = text.split(',').collect();
            if text.is_empty() || items.len() > MAX_ITEMS {
                return Err(accepted);
            }
            Ok(items)
        };
        match name {
            "path" => self.path = Some(checked_path(text).ok_or(PATH_ACCEPTED)?),
            "method" => self.method = Some(checked_method(text).ok_or(METHOD_ACCEPTED)?),
            "setHeaders" => {
                let mut set = Vec::new();
                for item in items(SET_HEADERS_ACCEPTED)? {
                    let (name, value) = item.split_once(':').ok_or(SET_HEADERS_ACCEPTED)?;
                    set.push(checked_header(name, value).map_err(|_| SET_HEADERS_ACCEPTED)?);
                }
                self.set_headers = set;
            }
            "removeHeaders" => {
                let names = items(REMOVE_HEADERS_ACCEPTED)?.into_iter().map(header_name);
                self.remove_headers = names.collect::<Option<_>>().ok_or(REMOVE_HEADERS_ACCEPTED)?;
            }
            _ => {
                let mut set = Vec::new();
                for item in items(QUERY_ACCEPTED)? {
                    let (name, value) = item.split_once(':').ok_or(QUERY_ACCEPTED)?;
                    set.push(checked_query(name, value).map_err(|_| QUERY_ACCEPTED)?);
                }
                self.query = set;
            }
        }
        Ok(())
    }

    /// This rewrite with the parts `change` gives replaced: a query call edits the policy's.
    pub fn with(&self, change: &RequestRewrite) -> RequestRewrite {
        let mut next = self.clone();
        next.path = change.path.clone().or(next.path);
        next.method = change.method.clone().or(next.method);
        for (part, given) in [(&mut next.set_headers, &change.set_headers), (&mut next.query, &change.query)] {
            if !given.is_empty() {
                part.clone_from(given);
            }
        }
        if !change.remove_headers.is_empty() {
            next.remove_headers.clone_from(&change.remove_headers);
        }
        next
    }

    /// The query parameters that show this rewrite, as [`RequestRewrite::set`] reads them.
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let joined = |pairs: &[(String, String)]| pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",");
        let mut shown = Vec::new();
        if let Some(path) = &self.path {
            shown.push((PARAMETERS[0], path.clone()));
        }
        if let Some(method) = &self.method {
            shown.push((PARAMETERS[1], method.clone()));
        }
        if !self.set_headers.is_empty() {
            shown.push((PARAMETERS[2], joined(&self.set_headers)));
        }
        if !self.remove_headers.is_empty() {
            shown.push((PARAMETERS[3], self.remove_headers.join(",")));
        }
        if !self.query.is_empty() {
            shown.push((PARAMETERS[4], joined(&self.query)));
        }
        shown
    }

    /// The request's new `:path` from its current one (`target`, with its query): the new
    /// path, with the query kept but for the parameters set, which come last; `None` when
    /// neither the path nor the query changes.
    pub fn target(&self, target: &str) -> Option<String> {
        if self.path.is_none() && self.query.is_empty() {
            return None;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut out = self.path.as_deref().unwrap_or(path).to_string();
        let set: Vec<String> = self.query.iter().map(|(k, _)| encode(k)).collect();
        let kept = query.split('&').filter(|p| !p.is_empty() && !set.iter().any(|k| p.split('=').next() == Some(k.as_str())));
        let added = self.query.iter().map(|(k, v)| encode(k) + "=" + &encode(v));
        let pieces: Vec<String> = kept.map(str::to_string).chain(added).collect();
        if !pieces.is_empty() {
            out.push('?');
            out.push_str(&pieces.join("&"));
        }
        Some(out)
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters. Five lines here rather than
/// the `percent-encoding` crate: this is its only use.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<RequestRewrite, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_s_example_reads_and_shows_back() {
        let text = r#"{"path": "/x", "method": "POST", "set_headers": {"X-A": "1"}, "remove_headers": ["Authorization"], "query": {"debug": "1"}}"#;
        let rewrite = read(text).unwrap();
        assert_eq!(rewrite.path.as_deref(), Some("/x"));
        assert_eq!(rewrite.set_headers, [("x-a".to_string(), "1".to_string())]);
        assert_eq!(rewrite.remove_headers, ["authorization"]);
        let shown = serde_json::to_string(&rewrite).unwrap();
        assert_eq!(shown, r#"{"path":"/x","method":"POST","set_headers":{"x-a":"1"},"remove_headers":["authorization"],"query":{"debug":"1"}}"#);
        assert_eq!(read(&shown).unwrap(), rewrite);
        assert_eq!(read(r#"{"method": "DELETE"}"#).unwrap().method.as_deref(), Some("DELETE"));
    }

    #[test]
    fn bad_rewrites_say_what_is_accepted() {
        for (text, needle) in [
            (r#"{}"#, "give at least one of path, method, set_headers, remove_headers, query"),
            (r#"{"path": "x"}"#, "path: \"x\" is not accepted; expected a path beginning with '/'"),
            (r#"{"path": "/a?b=1"}"#, "without '?'"),
            (r#"{"path": "/a b"}"#, "path: \"/a b\""),
            (r#"{"method": "post"}"#, "method: \"post\" is not accepted; expected a method in capitals"),
            (r#"{"set_headers": {":path": "/x"}}"#, "set_headers.name: \":path\" is not accepted; expected a header name"),
            (r#"{"set_headers": {"content-length": "1"}}"#, "content-length or transfer-encoding"),
            (r#"{"set_headers": {"x-a": "a\r\nb"}}"#, "set_headers.x-a: \"a\\r\\nb\" is not accepted; expected a value without CR"),
            (r#"{"remove_headers": ["a b"]}"#, "remove_headers: \"a b\" is not accepted"),
            (r#"{"query": {"": "1"}}"#, "query.name: \"\" is not accepted"),
            (r#"{"paths": "/x"}"#, "unknown field `paths`"),
            (r#"{"path": 3}"#, "invalid type"),
        ] {
            let message = read(text).unwrap_err();
            assert!(message.contains(needle), "{text}: {message}");
        }
        let many: Vec<String> = (0..=MAX_ITEMS).map(|i| format!(r#""x-{i}": "1""#)).collect();
        assert!(read(&format!(r#"{{"set_headers": {{{}}}}}"#, many.join(","))).unwrap_err().contains("set_headers: at most 32"));
    }

    #[test]
    fn the_path_and_query_are_rewritten_keeping_the_rest() {
        let rewrite = read(r#"{"path": "/x", "query": {"debug": "1", "who": "a b&c"}}"#).unwrap();
        assert_eq!(rewrite.target("/orig?keep=2&debug=0").as_deref(), Some("/x?keep=2&debug=1&who=a%20b%26c"));
        assert_eq!(rewrite.target("/orig").as_deref(), Some("/x?debug=1&who=a%20b%26c"));
        let path_only = read(r#"{"path": "/x"}"#).unwrap();
        assert_eq!(path_only.target("/orig?a=1").as_deref(), Some("/x?a=1"));
        assert_eq!(read(r#"{"method": "POST"}"#).unwrap().target("/orig?a=1"), None);
    }

    #[test]
    fn query_parameters_edit_a_rewrite_part_by_part() {
        let mut change = RequestRewrite::default();
        change.set("path", "/x").unwrap();
        change.set("setHeaders", "x-a:1,x-b:two:2").unwrap();
        change.set("removeHeaders", "Authorization,cookie").unwrap();
        change.set("query", "debug:1").unwrap();
        assert_eq!(change.set_headers, [("x-a".into(), "1".into()), ("x-b".into(), "two:2".into())]);
        let shown = change.parameters();
        assert_eq!(shown[1], ("setHeaders", "x-a:1,x-b:two:2".to_string()));
        assert_eq!(shown[2], ("removeHeaders", "authorization,cookie".to_string()));
        // What GET shows reads back the same.
        let mut again = RequestRewrite::default();
        for (name, text) in &shown {
            again.set(name, text).unwrap();
        }
        assert_eq!(again, change);
        let mut method = RequestRewrite::default();
        method.set("method", "PUT").unwrap();
        let both = change.with(&method);
        assert_eq!((both.path.as_deref(), both.method.as_deref(), both.query.len()), (Some("/x"), Some("PUT"), 1));
        for (name, text) in [("path", "x"), ("method", "put"), ("setHeaders", "x-a"), ("setHeaders", ""), ("removeHeaders", ":path"), ("query", "=1")] {
            assert!(RequestRewrite::default().set(name, text).is_err(), "{name}={text}");
        }
    }
}
