//! Validated values of the JSON the filter reads (plugin configuration, policy document,
//! shared state): each is a newtype read straight from one JSON value ([`Given`]) whose
//! `TryFrom` refuses what is out of range with a message naming what is accepted, and the
//! reader ([`read`]) that turns serde's refusals into an error with the JSON path of the
//! first bad value (`rules[0].fault.delay.fixed`), tracked by `serde_path_to_error`.

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

/// Reads `bytes` as a `T`; on error, the path of the first bad value (tracked while
/// reading by `serde_path_to_error`) and a message in the filter's own words.
pub fn read<T: DeserializeOwned>(bytes: &[u8], unknown: UnknownKeys) -> Result<T, Invalid> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| refusal(&e, unknown))?;
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

fn refusal(error: &serde_path_to_error::Error<serde_json::Error>, unknown: UnknownKeys) -> Invalid {
    let inner = error.inner();
    if !inner.is_data() {
        return Invalid::at("$", format!("not JSON: {inner}"));
    }
    let message = words(inner);
    let mut segments: Vec<&serde_path_to_error::Segment> = error.path().iter().collect();
    let message = match (unknown_field(&message), unknown) {
        // The path ends at the unknown key.
        (Some((_, accepted)), UnknownKeys::InPath) => format!("unknown key; accepted: {accepted}"),
        (Some((key, accepted)), UnknownKeys::InMessage) => {
            segments.pop();
            format!("unknown field `{key}`; accepted: {accepted}")
        }
        (None, _) => plain_words(&message),
    };
    Invalid::at(joined(&segments), message)
}

/// `rules[0].fault`, or `$` for the whole.
fn joined(segments: &[&serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => path.push_str(if path.is_empty() { "?" } else { ".?" }),
        }
    }
    if path.is_empty() {
        path.push('$');
    }
    path
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
            e if e.starts_with("struct ") => "an object",
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

/// `text` cut after 64 characters, for error messages: a huge value gets a short answer.
pub fn shown_text(mut text: String) -> String {
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

/// Reads a JSON object, and only an object, as `T`: serde's derived structs also take a
/// list of their fields in order, which no document here means. The struct is asked of the
/// deserializer as a map, which refuses a list; reading the map first and then the struct
/// from it cost 21 KB of module, a copy of serde's map deserializer per type.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    T::deserialize(MapOnly(deserializer))
}

/// A deserializer that reads a struct as a map only.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, _: &'static [&'static str], visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
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

/// One JSON value as a value type reads it, straight from the deserializer: a scalar as
/// it came (no `serde_json::Value` is built for it), or a list or an object, which no
/// value type takes and which is read whole only to be shown in the refusal
/// (`[1] is a list; expected a string`).
#[derive(Debug)]
pub enum Given {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(serde_json::Number),
    /// A string.
    Text(String),
    /// A list or an object, kept only to show it.
    Other(serde_json::Value),
}

impl<'de> Deserialize<'de> for Given {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Given, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Given;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Given, E> {
                Ok(Given::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Given, E> {
                Ok(Given::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Given, E> {
                Ok(Given::Number(n.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Given, E> {
                Ok(Given::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Given, E> {
                // JSON has no NaN or infinity.
                Ok(serde_json::Number::from_f64(n).map_or(Given::Null, Given::Number))
            }
            fn visit_str<E>(self, s: &str) -> Result<Given, E> {
                Ok(Given::Text(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Given, E> {
                Ok(Given::Text(s))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Given, A::Error> {
                serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Given::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Given, A::Error> {
                serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Given::Other)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

impl Given {
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Given::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The whole number, if it is one that fits 64 bits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Given::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// A number as the query would give it (see [`number_text`]).
    pub fn number(&self) -> Option<String> {
        match self {
            Given::Number(n) => Some(number_text(n)),
            _ => None,
        }
    }

    /// The value as JSON, cut after 64 characters, for error messages. A whole number too
    /// large for 64 bits is written whole (`18446744073709551616`, not
    /// `1.8446744073709552e+19`), as it was most likely written.
    pub fn shown(&self) -> String {
        shown_text(match self {
            Given::Null => "null".into(),
            Given::Bool(b) => b.to_string(),
            Given::Number(n) => number_text(n),
            Given::Text(s) => serde_json::to_string(s).unwrap_or_default(),
            Given::Other(value) => value.to_string(),
        })
    }

    /// Its JSON type, as an error names it; `None` for null, which says it itself.
    fn kind(&self) -> Option<&'static str> {
        match self {
            Given::Null => None,
            Given::Bool(_) => Some("a boolean"),
            Given::Number(_) => Some("a number"),
            Given::Text(_) => Some("a string"),
            Given::Other(value) => Some(if value.is_array() { "a list" } else { "an object" }),
        }
    }

    /// The refusal: what it is and what is accepted; where a string is expected, a value
    /// of another JSON type says which (`3 is a number; expected a string`).
    pub fn refused(&self, accepted: &str) -> String {
        match self.kind().filter(|k| accepted == "a string" && *k != "a string") {
            Some(kind) => format!("{} is {kind}; expected a string", self.shown()),
            None => format!("{} is not accepted; expected {accepted}", self.shown()),
        }
    }

    /// The refusal where a number is expected: a value of another JSON type says which
    /// (`"503" is a string; expected a number: an HTTP status ...`).
    pub fn number_expected(&self, accepted: &str) -> String {
        match (self, self.kind()) {
            (Given::Number(_), _) => self.refused(accepted),
            (_, Some(kind)) => format!("{} is {kind}; expected a number: {accepted}", self.shown()),
            (_, None) => format!("null is not accepted; expected a number: {accepted}"),
        }
    }
}

/// Implements `Deserialize` for a value type read from one [`Given`] JSON value through
/// its `TryFrom<Given>`, whose error is the message.
macro_rules! from_given {
    ($domain:ty) => {
        impl<'de> serde::Deserialize<'de> for $domain {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let given = <$crate::model::values::Given as serde::Deserialize>::deserialize(deserializer)?;
                <$domain>::try_from(given).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use from_given;

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

impl TryFrom<Given> for HttpStatus {
    type Error = String;
    fn try_from(given: Given) -> Result<HttpStatus, String> {
        given.as_u64().and_then(HttpStatus::new).ok_or_else(|| given.number_expected(STATUS_ACCEPTED))
    }
}
from_given!(HttpStatus);

/// A gRPC status code: 0 to 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct GrpcCode(pub u8);

impl TryFrom<Given> for GrpcCode {
    type Error = String;
    fn try_from(given: Given) -> Result<GrpcCode, String> {
        given.as_u64().filter(|c| *c <= 16).map(|c| GrpcCode(c as u8)).ok_or_else(|| given.number_expected(GRPC_ACCEPTED))
    }
}
from_given!(GrpcCode);

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

impl TryFrom<Given> for HeaderName {
    type Error = String;
    fn try_from(given: Given) -> Result<HeaderName, String> {
        let Some(name) = given.as_str() else { return Err(given.refused("a string")) };
        HeaderName::new(name).ok_or_else(|| given.refused(HEADER_ACCEPTED))
    }
}
from_given!(HeaderName);

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

impl TryFrom<Given> for Pattern {
    type Error = String;
    fn try_from(given: Given) -> Result<Pattern, String> {
        let Some(source) = given.as_str() else { return Err(given.refused("a string")) };
        Pattern::new(source).map_err(|reason| format!("{}: {reason}", given.refused(PATTERN_ACCEPTED)))
    }
}
from_given!(Pattern);

/// A string, refused with the filter's wording when it is another JSON type.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl TryFrom<Given> for Text {
    type Error = String;
    fn try_from(given: Given) -> Result<Text, String> {
        match given {
            Given::Text(s) => Ok(Text(s)),
            other => Err(other.refused("a string")),
        }
    }
}
from_given!(Text);

/// Serializes `(name, value)` pairs as a JSON object in their order, and reads them back.
pub mod pairs {
    use super::{Given, HeaderName, Text};
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
                        return Err(serde::de::Error::custom(Given::Text(key).refused(super::HEADER_ACCEPTED)));
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
        // Keys with escapes and brackets inside strings are named as written.
        assert_eq!(nested_error(r#"{"ranges": [{"a": 1, "b": 2, "c\"]}": 1}]}"#), "ranges[0].c\"]}: unknown key; accepted: a, b");
        assert_eq!(nested_error(r#"{"ranges": {"a": 1}}"#), "ranges: an object is not accepted; expected a list");
    }

    /// The policy document's reader names the path of a bad value however deep, after
    /// well-formed values, on lines of its own, and inside the faults read as they come.
    #[test]
    fn a_document_error_names_the_path_of_a_nested_bad_value() {
        let abort = r#""fault": {"abort": {"status": 503}}"#;
        for (text, error) in [
            (
                format!(r#"{{"rules": [{{{abort}}}, {{"match": {{"headers": [{{"name": "x-a", "exact": "1"}}, {{"name": "x-b", "regex": "("}}]}}, {abort}}}]}}"#),
                r#"rules[1].match.headers[1].regex: "(" is not accepted; expected a regular expression (RE2-like syntax, up to 512 bytes): "#,
            ),
            (format!("{{\n  \"rules\": [{{{abort}}}],\n  \"policy\": {{\"percentage\": true}}\n}}"), "policy.percentage: value: 'true' is not accepted; expected a string or a number"),
            (format!(r#"{{"rules": [{{{abort}, "match": {{"path": {{"exakt": "/a"}}}}}}]}}"#), "rules[0].match.path.exakt: unknown key; accepted: exact, prefix, regex"),
            (format!(r#"{{"rules": [{{{abort}, "ttl": 0}}]}}"#), "rules[0].ttl: 0 is not accepted; expected a duration above 0"),
            (r#"{"rules": [{"fault": {"truncate": {"after_bytes": "x"}}}]}"#.to_string(), "rules[0].fault.truncate.after_bytes: \"x\" is a string; expected a whole number"),
            (format!(r#"{{"rules": [{{{abort}, "match": {{"clients": ["10.0.0.0/8", 7]}}}}]}}"#), "rules[0].match.clients[1]: 7 is a number; expected a string"),
        ] {
            let message = crate::model::document::parse(text.as_bytes(), 0).unwrap_err().to_string();
            assert!(message.starts_with(error), "{text}: {message}");
        }
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

    /// One JSON value, read as a value type reads it.
    fn given(json: &str) -> Given {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_bad_pattern_says_the_engines_reason() {
        assert_eq!(
            Pattern::try_from(given(r#""a(""#)).err().as_deref(),
            Some("\"a(\" is not accepted; expected a regular expression (RE2-like syntax, up to 512 bytes): found open group without closing ')'")
        );
    }

    #[test]
    fn a_value_of_another_type_says_its_type() {
        let status = |json: &str| HttpStatus::try_from(given(json)).err();
        assert_eq!(status(r#""503""#).as_deref(), Some("\"503\" is a string; expected a number: an HTTP status from 200 to 599"));
        assert_eq!(status("true").as_deref(), Some("true is a boolean; expected a number: an HTTP status from 200 to 599"));
        assert_eq!(status("700").as_deref(), Some("700 is not accepted; expected an HTTP status from 200 to 599"));
        assert_eq!(status("null").as_deref(), Some("null is not accepted; expected a number: an HTTP status from 200 to 599"));
        assert_eq!(status(r#"[503, {"a": 1}]"#).as_deref(), Some(r#"[503,{"a":1}] is a list; expected a number: an HTTP status from 200 to 599"#));
        assert_eq!(Text::try_from(given(r#"{"a": 1}"#)).err().as_deref(), Some(r#"{"a":1} is an object; expected a string"#));
        assert_eq!(plain_words("invalid type: string \"5\", expected u64"), "\"5\" is a string; expected a whole number");
        assert_eq!(plain_words("invalid type: integer `5`, expected a string"), "5 is a number; expected a string");
        assert_eq!(plain_words("invalid value: integer `5`, expected a duration"), "5 is not accepted; expected a duration");
    }

    #[test]
    fn a_whole_number_past_64_bits_is_shown_whole() {
        let big = given("18446744073709551616");
        assert_eq!(big.shown(), "18446744073709551616");
        assert_eq!(big.number_expected("x"), "18446744073709551616 is not accepted; expected x");
        assert_eq!(given("12.5").shown(), "12.5");
        assert_eq!(given("1.25e1").number().as_deref(), Some("12.5"));
    }

    #[test]
    fn long_values_are_cut() {
        let long = Given::Text("x".repeat(500)).shown();
        assert!(long.len() < 80 && long.ends_with("..."));
    }
}
