//! Validated values of the JSON the filter reads (plugin configuration, policy document,
//! shared state): each is a newtype whose `Deserialize` refuses what is out of range with a
//! message naming what is accepted, and the reader that turns serde's refusals into an
//! error with the JSON path of the first bad value (`rules[0].fault.delay.fixed`).

use regex_lite::Regex;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// A bad value in JSON the filter reads: where (a JSON path such as
/// `rules[0].fault.delay`, `$` for the whole) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The JSON path of the value.
    pub path: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl Invalid {
    /// A refusal of the value at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for Invalid {}

/// How an unknown key is reported: the policy document names the key in the path
/// (`rules[0].when: unknown key; accepted: ...`), the plugin configuration in the message
/// (``control: unknown field `tokn`; accepted: ...``), as each always has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownKeys {
    /// In the path.
    InPath,
    /// In the message.
    InMessage,
}

/// Reads `bytes` as a `T`; on error, the path of the first bad value and a message in the
/// filter's own words.
pub fn read<T: DeserializeOwned>(bytes: &[u8], unknown: UnknownKeys) -> Result<T, Invalid> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut deserializer).map_err(|e| refusal::<T>(bytes, &e, unknown))?;
    // Anything but white space after the value.
    deserializer.end().map_err(|e| Invalid::at("$", format!("not JSON: {e}")))?;
    Ok(value)
}

/// serde_json's message without its position.
fn words(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&position).map_or(text.clone(), str::to_string)
}

fn refusal<T: DeserializeOwned>(bytes: &[u8], error: &serde_json::Error, unknown: UnknownKeys) -> Invalid {
    if !error.is_data() {
        return Invalid::at("$", format!("not JSON: {error}"));
    }
    let message = words(error);
    let mut end = offset(bytes, error.line(), error.column());
    // serde_json reports a refused value where it stopped: after the value, or after the
    // bracket that closes the list or object it was last in, or the comma that follows it
    // in a list (read before the refusal came back). Read again without that bracket or
    // comma: if the same refusal comes, the value was before it; if the JSON ends too early
    // instead, the bracket was the value's own (or the comma came before the value).
    if let Some(close) = bytes[..end].iter().rposition(|b| !b.is_ascii_whitespace()).filter(|at| matches!(bytes[*at], b'}' | b']' | b',')) {
        let again = T::deserialize(&mut serde_json::Deserializer::from_slice(&bytes[..close]));
        if again.err().is_some_and(|e| e.is_data() && words(&e) == message) {
            end = close;
        }
    }
    let (mut segments, at_key) = path_at(&bytes[..end]);
    let unknown_key = unknown_field(&message);
    if at_key && unknown_key.is_none() {
        segments.pop();
    }
    let (segments, message) = match (unknown_key, unknown) {
        (Some((_, accepted)), UnknownKeys::InPath) => (segments, format!("unknown key; accepted: {accepted}")),
        (Some((key, accepted)), UnknownKeys::InMessage) => {
            // The path ends at the key; the message names it.
            segments.pop();
            (segments, format!("unknown field `{key}`; accepted: {accepted}"))
        }
        (None, _) => (segments, plain_words(&message)),
    };
    Invalid::at(joined(&segments), message)
}

/// The byte offset of serde_json's `line` and `column` (both counted from 1; column 0 is
/// the start of the line) in `bytes`.
fn offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start = match line {
        0 | 1 => 0,
        _ => bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(line - 2).map_or(bytes.len(), |(at, _)| at + 1),
    };
    line_start.saturating_add(column).min(bytes.len())
}

/// One step of a JSON path.
#[derive(Debug, PartialEq)]
enum Segment {
    /// An object's key.
    Key(String),
    /// A list's index.
    Index(usize),
}

/// `rules[0].fault`, or `$` for the whole.
fn joined(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) if path.is_empty() => path.push_str(key),
            Segment::Key(key) => {
                path.push('.');
                path.push_str(key);
            }
            Segment::Index(index) => path.push_str(&format!("[{index}]")),
        }
    }
    if path.is_empty() {
        path.push('$');
    }
    path
}

/// The path of the value that `bytes`, a prefix of a JSON text, ends in or just after,
/// found by scanning the JSON, and whether it ends at a key whose value has not begun.
/// Own code rather than serde_path_to_error, which tracks the path while reading: its
/// wrapper around every visitor and seed made this module 549,523 bytes, over its limit of
/// 512 KiB (524,288), against 493,875 without it (both measured on 2026-12-02); the
/// position of serde_json's error gives the same path.
fn path_at(bytes: &[u8]) -> (Vec<Segment>, bool) {
    enum Frame {
        Object { key: Option<String>, wants_key: bool },
        List(usize),
    }
    let end = bytes.len();
    let mut stack: Vec<Frame> = Vec::new();
    let mut at = 0;
    while at < end {
        let byte = bytes[at];
        match byte {
            b'{' => stack.push(Frame::Object { key: None, wants_key: true }),
            b'[' => stack.push(Frame::List(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key, wants_key }) => (*key, *wants_key) = (None, true),
                Some(Frame::List(index)) => *index += 1,
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { wants_key, .. }) = stack.last_mut() {
                    *wants_key = false;
                }
            }
            b'"' => {
                let mut close = at + 1;
                while close < bytes.len() && bytes[close] != b'"' {
                    close += if bytes[close] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object { key, wants_key: true }) = stack.last_mut() {
                    *key = bytes.get(at..=close).and_then(|quoted| serde_json::from_slice(quoted).ok());
                }
                at = close;
            }
            _ => {}
        }
        at += 1;
    }
    // A key read but not yet followed by its value is where the error was found; it is part
    // of the path only when the key itself is refused as unknown.
    let pending = matches!(stack.last(), Some(Frame::Object { key: Some(_), wants_key: true }));
    let segments = stack
        .into_iter()
        .filter_map(|frame| match frame {
            Frame::Object { key, .. } => key.map(Segment::Key),
            Frame::List(index) => Some(Segment::Index(index)),
        })
        .collect();
    (segments, pending)
}

/// serde's ``unknown field `k`, expected one of `a`, `b` `` as the key and `a, b`.
fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once("`, expected ")?;
    let expected = expected.strip_prefix("one of ").unwrap_or(expected).replace("` or `", ", ").replace('`', "");
    Some((key.to_string(), expected))
}

/// serde's own messages in the filter's words: `invalid value: string "x", expected a
/// duration` becomes `"x" is not accepted; expected a duration`, and a value of the wrong
/// JSON type says its type: `invalid type: string "5", expected u64` becomes `"5" is a
/// string; expected a whole number`.
fn plain_words(message: &str) -> String {
    let wrong_type = message.starts_with("invalid type: ");
    let body = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "));
    if let Some((given, expected)) = body.and_then(|b| b.split_once(", expected ")) {
        let kind = given.split(' ').next().unwrap_or(given);
        let given = match given {
            "sequence" => "a list",
            "map" => "an object",
            g => g.split_once(" `").map_or_else(|| g.split_once(' ').map_or(g, |(_, v)| v), |(_, v)| v.trim_end_matches('`')),
        };
        let expected = match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
            "f32" | "f64" => "a number",
            "a sequence" => "a list",
            e => e,
        };
        let kind = match kind {
            "string" => Some("a string"),
            "integer" | "floating" => Some("a number"),
            "boolean" => Some("a boolean"),
            _ => None,
        };
        // The type, where it is the reason: not for 1.5 where a whole number is expected.
        let kind = kind.filter(|k| !(*k == "a number" && expected.contains("number")));
        return match kind.filter(|_| wrong_type && given != "a list" && given != "an object") {
            Some(kind) => format!("{given} is {kind}; expected {expected}"),
            None => format!("{given} is not accepted; expected {expected}"),
        };
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        return format!("needs '{field}'");
    }
    message.to_string()
}

/// A value as JSON, cut after 64 characters, for error messages: a huge value gets a short
/// answer. A whole number too large for 64 bits is written whole (`18446744073709551616`,
/// not `1.8446744073709552e+19`), as it was most likely written.
pub fn shown(value: &serde_json::Value) -> String {
    let mut text = match value {
        serde_json::Value::Number(n) => number_text(n),
        other => other.to_string(),
    };
    if let Some((cut, _)) = text.char_indices().nth(64) {
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// A JSON number as the query would give it: without an exponent (`1.25e1` is `12.5`),
/// for the readers of decimals such as percentages and durations.
pub fn number_text(number: &serde_json::Number) -> String {
    match number.as_f64() {
        // Whole: every digit (`{:.0}`), where `to_string` would end in zeros it made up.
        Some(f) if number.is_f64() && f.fract() == 0.0 && f.abs() < 1e30 => format!("{f:.0}"),
        Some(f) if number.is_f64() => f.to_string(),
        _ => number.to_string(),
    }
}

/// The refusal of `value`: what it is and what is accepted; where a string is expected, a
/// value of another JSON type says which (`3 is a number; expected a string`).
pub fn not_accepted(value: &serde_json::Value, accepted: &str) -> String {
    match kind_of(value).filter(|_| accepted == "a string" && !value.is_string()) {
        Some(kind) => format!("{} is {kind}; expected a string", shown(value)),
        None => format!("{} is not accepted; expected {accepted}", shown(value)),
    }
}

/// A JSON value's type, as an error names it; `None` for null, which says it itself.
fn kind_of(value: &serde_json::Value) -> Option<&'static str> {
    Some(match value {
        serde_json::Value::Null => return None,
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    })
}

/// The refusal of `value` where a number is expected: a value of another JSON type says
/// which (`"503" is a string; expected a number: an HTTP status ...`).
pub fn number_expected(value: &serde_json::Value, accepted: &str) -> String {
    match kind_of(value).filter(|_| !value.is_number()) {
        Some(kind) => format!("{} is {kind}; expected a number: {accepted}", shown(value)),
        None if value.is_null() => format!("null is not accepted; expected a number: {accepted}"),
        None => not_accepted(value, accepted),
    }
}

/// Reads a JSON object, and only an object, as `T`: serde's derived structs also take a
/// list of their fields in order, which no document here means.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    struct OnlyObject<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyObject<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_map(OnlyObject(PhantomData))
}

/// Reads a JSON list of objects (and only objects) as `T`s.
pub fn list_of_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    struct Objects<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Objects<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of objects")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(Object(item)) = seq.next_element::<Object<T>>()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Objects(PhantomData))
}

/// A `T` read from a JSON object only (see [`object`]).
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object(deserializer).map(Object)
    }
}

/// Implements `Deserialize` for a domain type read from a wire type (a JSON object only)
/// through its `TryFrom`, whose error is the message at the object's path.
macro_rules! from_object {
    ($domain:ty, $wire:ty) => {
        impl<'de> serde::Deserialize<'de> for $domain {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let wire: $wire = $crate::model::values::object(deserializer)?;
                <$domain>::try_from(wire).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use from_object;

/// Implements `Deserialize` for a value read from any JSON value through `TryFrom<&Value>`,
/// whose error is the message.
macro_rules! from_value {
    ($domain:ty) => {
        impl<'de> serde::Deserialize<'de> for $domain {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = serde_json::Value::deserialize(deserializer)?;
                <$domain>::try_from(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use from_value;

/// What an HTTP status accepts, for error messages.
pub const STATUS_ACCEPTED: &str = "an HTTP status from 200 to 599";
const GRPC_ACCEPTED: &str = "a gRPC status code from 0 to 16";
const HEADER_ACCEPTED: &str = "a header name (letters, digits, '-', '_')";
const PATTERN_ACCEPTED: &str = "a regular expression (RE2-like syntax, up to 512 bytes)";
const PATTERN_TOO_LONG: &str = "longer than 512 bytes";
const MAX_PATTERN_LEN: usize = 512;

/// An HTTP status the filter answers with: 200 to 599.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HttpStatus(pub u16);

impl HttpStatus {
    /// The status, if the filter may answer with it: the one place the range is checked,
    /// for the document, the query, the configuration and the `x-fault-abort-status` header.
    pub fn new(status: u64) -> Option<HttpStatus> {
        u16::try_from(status).ok().filter(|s| (200..=599).contains(s)).map(HttpStatus)
    }
}

impl TryFrom<&serde_json::Value> for HttpStatus {
    type Error = String;
    fn try_from(value: &serde_json::Value) -> Result<HttpStatus, String> {
        value.as_u64().and_then(HttpStatus::new).ok_or_else(|| number_expected(value, STATUS_ACCEPTED))
    }
}
from_value!(HttpStatus);

/// A gRPC status code: 0 to 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct GrpcCode(pub u8);

impl TryFrom<&serde_json::Value> for GrpcCode {
    type Error = String;
    fn try_from(value: &serde_json::Value) -> Result<GrpcCode, String> {
        value.as_u64().filter(|c| *c <= 16).map(|c| GrpcCode(c as u8)).ok_or_else(|| number_expected(value, GRPC_ACCEPTED))
    }
}
from_value!(GrpcCode);

/// A header name, kept lowercase: letters, digits, `-`, `_`, `.`, or a leading `:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HeaderName(String);

impl HeaderName {
    /// The name, lowercase; `None` when it is not a plausible header name.
    pub fn new(name: &str) -> Option<HeaderName> {
        let plausible = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
        plausible.then(|| HeaderName(name.to_ascii_lowercase()))
    }

    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&serde_json::Value> for HeaderName {
    type Error = String;
    fn try_from(value: &serde_json::Value) -> Result<HeaderName, String> {
        let Some(name) = value.as_str() else { return Err(not_accepted(value, "a string")) };
        HeaderName::new(name).ok_or_else(|| not_accepted(value, HEADER_ACCEPTED))
    }
}
from_value!(HeaderName);

/// A regular expression, kept with its source so it can be shared and shown again.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source`; the whole value must match (as Envoy's `safe_regex` does). The
    /// error is the regex engine's own reason (`found open group without closing ')'`).
    pub fn new(source: &str) -> Result<Pattern, String> {
        if source.len() > MAX_PATTERN_LEN {
            return Err(PATTERN_TOO_LONG.to_string());
        }
        let regex = Regex::new(&format!("^(?:{source})$")).map_err(|e| e.to_string())?;
        Ok(Pattern { source: source.to_string(), regex })
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

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl TryFrom<&serde_json::Value> for Pattern {
    type Error = String;
    fn try_from(value: &serde_json::Value) -> Result<Pattern, String> {
        let Some(source) = value.as_str() else { return Err(not_accepted(value, "a string")) };
        Pattern::new(source).map_err(|reason| format!("{}: {reason}", not_accepted(value, PATTERN_ACCEPTED)))
    }
}
from_value!(Pattern);

/// A string, refused with the filter's wording when it is another JSON type.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl TryFrom<&serde_json::Value> for Text {
    type Error = String;
    fn try_from(value: &serde_json::Value) -> Result<Text, String> {
        value.as_str().map(|s| Text(s.to_string())).ok_or_else(|| not_accepted(value, "a string"))
    }
}
from_value!(Text);

/// Serializes `(name, value)` pairs as a JSON object in their order, and reads them back.
pub mod pairs {
    use super::{HeaderName, Text};
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use std::fmt;

    /// Writes the pairs as an object.
    pub fn serialize<S: Serializer>(pairs: &[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(pairs.len()))?;
        for (name, value) in pairs {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }

    /// Reads an object of header names (kept lowercase) to string values.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(name) = HeaderName::new(&key) else {
                        return Err(serde::de::Error::custom(super::not_accepted(&key.into(), super::HEADER_ACCEPTED)));
                    };
                    out.push((name.0, map.next_value::<Text>()?.0));
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        status: Option<HttpStatus>,
        #[serde(default)]
        list: Vec<GrpcCode>,
    }

    fn error(text: &str, unknown: UnknownKeys) -> String {
        read::<Probe>(text.as_bytes(), unknown).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_path_in_the_filter_words() {
        assert_eq!(error(r#"{"status": 99}"#, UnknownKeys::InPath), "status: 99 is not accepted; expected an HTTP status from 200 to 599");
        assert_eq!(error(r#"{"list": [1, 17]}"#, UnknownKeys::InPath), "list[1]: 17 is not accepted; expected a gRPC status code from 0 to 16");
        assert_eq!(error(r#"{"x": 1}"#, UnknownKeys::InPath), "x: unknown key; accepted: status, list");
        assert_eq!(error(r#"{"x": 1}"#, UnknownKeys::InMessage), "$: unknown field `x`; accepted: status, list");
        assert!(error("nope", UnknownKeys::InPath).starts_with("$: not JSON: "));
        assert!(error(r#"{} x"#, UnknownKeys::InPath).starts_with("$: not JSON: "));
        assert_eq!(error(r#"{"list": 3}"#, UnknownKeys::InPath), "list: 3 is a number; expected a list");
    }

    /// An object refused as a whole (`a` must not exceed `b`), as the rules' parts are.
    #[derive(Debug)]
    struct Range;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RangeSpec {
        a: u16,
        b: u16,
    }

    impl TryFrom<RangeSpec> for Range {
        type Error = &'static str;
        fn try_from(spec: RangeSpec) -> Result<Range, &'static str> {
            if spec.a > spec.b { Err("a must not exceed b") } else { Ok(Range) }
        }
    }
    from_object!(Range, RangeSpec);

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        #[serde(default)]
        ranges: Vec<Range>,
        status: Option<HttpStatus>,
    }

    fn nested_error(text: &str) -> String {
        read::<Nested>(text.as_bytes(), UnknownKeys::InPath).unwrap_err().to_string()
    }

    #[test]
    fn the_path_is_the_refused_value_s_wherever_it_stands() {
        let refused = ": a must not exceed b";
        // An object refused as a whole: last in its list, not last, and the list last or not.
        assert_eq!(nested_error(r#"{"ranges": [{"a": 2, "b": 1}]}"#), format!("ranges[0]{refused}"));
        assert_eq!(nested_error(r#"{"ranges": [{"a": 1, "b": 2}, {"a": 2, "b": 1}], "status": 200}"#), format!("ranges[1]{refused}"));
        assert_eq!(nested_error(r#"{"ranges": [{"a": 2, "b": 1}, {"a": 1, "b": 2}]}"#), format!("ranges[0]{refused}"));
        assert_eq!(nested_error(r#"{"ranges": [{"a": 1}]}"#), "ranges[0]: needs 'b'");
        assert_eq!(nested_error(r#"{"ranges": [{"a": 1, "b": 2}, 5]}"#), "ranges[1]: 5 is a number; expected an object");
        // A value after a well-formed object, last or not, on lines of its own.
        assert_eq!(nested_error("{\n  \"ranges\": [{\"a\": 1, \"b\": 2}],\n  \"status\": 99\n}"), "status: 99 is not accepted; expected an HTTP status from 200 to 599");
        assert_eq!(nested_error(r#"{"status": 99, "ranges": []}"#), "status: 99 is not accepted; expected an HTTP status from 200 to 599");
        assert_eq!(nested_error(r#"{"ranges": [{"a": 1, "b": "x"}]}"#), "ranges[0].b: \"x\" is a string; expected a whole number");
        // Keys with escapes and brackets inside strings do not mislead the scan.
        assert_eq!(nested_error(r#"{"ranges": [{"a": 1, "b": 2, "c\"]}": 1}]}"#), "ranges[0].c\"]}: unknown key; accepted: a, b");
        assert_eq!(nested_error(r#"{"ranges": {"a": 1}}"#), "ranges: an object is not accepted; expected a list");
    }

    #[test]
    fn header_names_and_patterns() {
        assert_eq!(HeaderName::new("X-User").unwrap().as_str(), "x-user");
        assert!(HeaderName::new("a b").is_none() && HeaderName::new("").is_none());
        // regex-lite caps a compiled pattern's size and matches in linear time, so a rule
        // cannot make the filter slow; this one would expand a million-fold.
        assert!(Pattern::new("((a{100}){100}){100}").is_err());
        assert_eq!(Pattern::new(&"a".repeat(MAX_PATTERN_LEN + 1)).err().as_deref(), Some("longer than 512 bytes"));
        assert!(Pattern::new("(a*)*b").unwrap().matches("aab"));
    }

    #[test]
    fn a_bad_pattern_says_the_engines_reason() {
        let value = serde_json::json!("a(");
        assert_eq!(
            Pattern::try_from(&value).err().as_deref(),
            Some("\"a(\" is not accepted; expected a regular expression (RE2-like syntax, up to 512 bytes): found open group without closing ')'")
        );
    }

    #[test]
    fn a_value_of_another_type_says_its_type() {
        let status = |v: serde_json::Value| HttpStatus::try_from(&v).err();
        assert_eq!(status(serde_json::json!("503")).as_deref(), Some("\"503\" is a string; expected a number: an HTTP status from 200 to 599"));
        assert_eq!(status(serde_json::json!(true)).as_deref(), Some("true is a boolean; expected a number: an HTTP status from 200 to 599"));
        assert_eq!(status(serde_json::json!(700)).as_deref(), Some("700 is not accepted; expected an HTTP status from 200 to 599"));
        assert_eq!(plain_words("invalid type: string \"5\", expected u64"), "\"5\" is a string; expected a whole number");
        assert_eq!(plain_words("invalid type: integer `5`, expected a string"), "5 is a number; expected a string");
        assert_eq!(plain_words("invalid value: integer `5`, expected a duration"), "5 is not accepted; expected a duration");
    }

    #[test]
    fn a_whole_number_past_64_bits_is_shown_whole() {
        let big: serde_json::Value = serde_json::from_str("18446744073709551616").unwrap();
        assert_eq!(shown(&big), "18446744073709551616");
        assert_eq!(number_expected(&big, "x"), "18446744073709551616 is not accepted; expected x");
        assert_eq!(shown(&serde_json::json!(12.5)), "12.5");
    }

    #[test]
    fn long_values_are_cut() {
        let long = serde_json::Value::String("x".repeat(500));
        assert!(shown(&long).len() < 80 && shown(&long).ends_with("..."));
    }
}
