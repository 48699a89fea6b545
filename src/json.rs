//! JSON as this filter needs it: plugin configuration, policy documents, the state shared
//! between workers and the control route's answers. It replaces serde_json, which (with
//! serde and core's float printing and parsing) was over a fifth of the module.
//!
//! Numbers are kept as their source text, checked against the JSON number grammar, and
//! read as integers on demand; the numbers the filter writes are integers or decimals it
//! spells itself. So no float is ever parsed or printed, and a value reads back as given.

use std::fmt::{self, Write};

/// Containers nested deeper than this are refused, so hostile input cannot overflow the
/// stack of the recursive parser (serde_json's limit too).
pub const MAX_DEPTH: usize = 128;

/// A JSON value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(Number),
    /// A string.
    String(String),
    /// A list.
    Array(Vec<Value>),
    /// An object.
    Object(Map),
}

/// A JSON number: text that follows the JSON number grammar, kept as it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number(String);

impl Number {
    /// The number as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number as a `u64` when it is written as one: digits only, no sign, fraction or
    /// exponent (as serde_json reads `5` but not `5.0`).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    /// The number written without an exponent (`1.25e1` is `12.5`), for the readers of
    /// decimals such as percentages and durations; `None` when that would take more than
    /// 40 digits, which no such reader accepts.
    pub fn plain(&self) -> Option<String> {
        const MAX_DIGITS: usize = 40;
        let (mantissa, exponent) = match self.0.split_once(['e', 'E']) {
            None => return Some(self.0.clone()),
            Some((m, e)) => (m, e.parse::<i64>().ok()?),
        };
        let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = format!("{whole}{fraction}");
        // Where the decimal point falls in `digits`.
        let point = i64::try_from(whole.len()).ok()?.checked_add(exponent)?;
        let too_long = |n: i64| n.unsigned_abs() > MAX_DIGITS as u64;
        if too_long(point) || too_long(point - digits.len() as i64) {
            return None;
        }
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}", "0".repeat(point as usize - digits.len()))
        } else {
            let (w, f) = digits.split_at(point as usize);
            format!("{w}.{f}")
        };
        let text = text.trim_start_matches('0');
        let text = if text.is_empty() || text.starts_with('.') { format!("0{text}") } else { text.to_string() };
        Some(format!("{sign}{text}"))
    }

    /// The decimal `whole.fraction`, `fraction` having `places` digits (zeros in front
    /// included). Trailing zeros are dropped, but one digit always follows the point:
    /// `decimal(20, 0, 4)` is `20.0`, `decimal(12, 5000, 4)` is `12.5`.
    pub fn decimal(whole: u64, fraction: u64, places: usize) -> Number {
        let fraction = format!("{fraction:0places$}");
        let fraction = fraction.trim_end_matches('0');
        Number(format!("{whole}.{}", if fraction.is_empty() { "0" } else { fraction }))
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JSON object: its members in the order written. A key given twice keeps its first
/// place and its last value, as serde_json does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Map(Vec<(String, Value)>);

impl Map {
    /// An empty object.
    pub fn new() -> Map {
        Map(Vec::new())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`, in its old place if it had one.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    /// Takes `key` out, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Builds a map from members that may repeat a key. Repeats are rare, so they are
    /// looked for once, by sorting, rather than by a search per member, which a document
    /// of many keys would make quadratic.
    fn from_members(mut members: Vec<(String, Value)>) -> Map {
        let mut order: Vec<usize> = (0..members.len()).collect();
        // A stable sort: members with one key stay in the order written.
        order.sort_by(|a, b| members[*a].0.cmp(&members[*b].0));
        let mut moves = Vec::new();
        let mut dropped = Vec::new();
        for group in order.chunk_by(|a, b| members[*a].0 == members[*b].0) {
            if let [first, .., last] = group {
                moves.push((*first, *last));
                dropped.extend_from_slice(&group[1..]);
            }
        }
        if moves.is_empty() {
            return Map(members);
        }
        for (first, last) in moves {
            members.swap(first, last);
        }
        let mut keep = vec![true; members.len()];
        for i in dropped {
            keep[i] = false;
        }
        let mut keep = keep.into_iter();
        members.retain(|_| keep.next().unwrap_or(true));
        Map(members)
    }
}

impl FromIterator<(String, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Map {
        Map::from_members(iter.into_iter().collect())
    }
}

impl Extend<(String, Value)> for Map {
    /// Sets each member in turn, as [`Map::insert`] does.
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl IntoIterator for Map {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// An object of the given members, in order: what the `json!` macro was used for.
pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl Value {
    /// The member `key` of an object; `None` for a missing key or a value not an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    /// The object's members, if it is one.
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    /// The object's members, to change, if it is one.
    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    /// The list, if it is one.
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(list) => Some(list),
            _ => None,
        }
    }

    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number, if it is one.
    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The number as a `u64`, if it is written as one (see [`Number::as_u64`]).
    pub fn as_u64(&self) -> Option<u64> {
        self.as_number()?.as_u64()
    }

    /// The value as JSON, cut after 64 characters, for error messages: a huge value gets
    /// a short answer.
    pub fn shown(&self) -> String {
        let mut text = self.to_string();
        if let Some((cut, _)) = text.char_indices().nth(64) {
            text.truncate(cut);
            text.push_str("...");
        }
        text
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        *self == Value::Null
    }
}

/// Test helpers: a value from a JSON literal, and a member deep inside one.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub mod testing {
    use super::Value;

    /// The value `text` spells; the test fails if it is not JSON.
    pub fn json(text: &str) -> Value {
        super::parse(text.as_bytes()).unwrap()
    }

    /// The member at `path` (`"policy.ttl"`), or `null` when there is none.
    pub fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
        static NULL: Value = Value::Null;
        path.split('.').try_fold(value, |v, key| v.get(key)).unwrap_or(&NULL)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Number(Number(n.to_string()))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::from(u64::from(n))
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::from(u64::from(n))
    }
}

impl From<u8> for Value {
    fn from(n: u8) -> Value {
        Value::from(u64::from(n))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<Map> for Value {
    fn from(map: Map) -> Value {
        Value::Object(map)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(list: Vec<T>) -> Value {
        Value::Array(list.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

// ---------------------------------------------------------------- writing

impl fmt::Display for Value {
    /// Compact JSON, with no spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Value::Number(n) => f.write_str(&n.0),
            Value::String(s) => write_string(f, s),
            Value::Array(list) => {
                f.write_char('[')?;
                for (i, v) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    v.fmt(f)?;
                }
                f.write_char(']')
            }
            Value::Object(map) => {
                f.write_char('{')?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_string(f, k)?;
                    f.write_char(':')?;
                    v.fmt(f)?;
                }
                f.write_char('}')
            }
        }
    }
}

/// Writes `s` quoted, escaping what JSON requires: `"`, `\` and control characters.
fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if c < ' ' => "",
            _ => continue,
        };
        f.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(f, "\\u{:04x}", u32::from(c))?;
        } else {
            f.write_str(escape)?;
        }
        start = i + c.len_utf8();
    }
    f.write_str(&s[start..])?;
    f.write_char('"')
}

// ---------------------------------------------------------------- reading

/// Why bytes are not JSON, with the byte offset where reading stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Something else was found where `expected` had to be.
    Expected {
        /// What the grammar allows there.
        expected: &'static str,
        /// The byte offset.
        at: usize,
    },
    /// A byte sequence that is not UTF-8.
    NotUtf8 {
        /// The byte offset.
        at: usize,
    },
    /// A backslash escape JSON does not have, or a `\u` escape of half a surrogate pair.
    BadEscape {
        /// The byte offset of the backslash.
        at: usize,
    },
    /// A control character inside a string, which JSON requires escaped.
    ControlCharacter {
        /// The byte offset.
        at: usize,
    },
    /// Lists and objects nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The byte offset of the container past the limit.
        at: usize,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Expected { expected, at } => write!(f, "expected {expected} at byte {at}"),
            JsonError::NotUtf8 { at } => write!(f, "invalid UTF-8 at byte {at}"),
            JsonError::BadEscape { at } => {
                write!(f, "invalid escape at byte {at}; accepted: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX (surrogates in pairs)")
            }
            JsonError::ControlCharacter { at } => write!(f, "control character in a string at byte {at}; write it as \\u00XX"),
            JsonError::TooDeep { at } => write!(f, "lists and objects nested more than {MAX_DEPTH} deep at byte {at}"),
        }
    }
}

impl std::error::Error for JsonError {}

/// Reads one JSON value, with nothing but whitespace around it.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError::NotUtf8 { at: e.valid_up_to() })?;
    let mut parser = Parser { text, at: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    match parser.at == text.len() {
        true => Ok(value),
        false => Err(parser.expected("the end of the input")),
    }
}

/// A reader over UTF-8 text; `at` is always at a character boundary, since it only ever
/// steps over ASCII bytes or whole string contents.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn expected(&self, expected: &'static str) -> JsonError {
        JsonError::Expected { expected, at: self.at }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Steps over `byte` after whitespace, if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    /// A value, `depth` being how many lists and objects hold it.
    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{' | b'[') if depth >= MAX_DEPTH => Err(JsonError::TooDeep { at: self.at }),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => {
                for (word, value) in [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)] {
                    if self.text[self.at..].starts_with(word) {
                        self.at += word.len();
                        return Ok(value);
                    }
                }
                Err(self.expected("a value"))
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.at += 1;
        let mut list = Vec::new();
        if self.eat(b']') {
            return Ok(Value::Array(list));
        }
        loop {
            list.push(self.value(depth)?);
            if self.eat(b']') {
                return Ok(Value::Array(list));
            }
            if !self.eat(b',') {
                return Err(self.expected("',' or ']'"));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.at += 1;
        let mut members = Vec::new();
        if self.eat(b'}') {
            return Ok(Value::Object(Map::new()));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.expected("a string key"));
            }
            let key = self.string()?;
            if !self.eat(b':') {
                return Err(self.expected("':'"));
            }
            members.push((key, self.value(depth)?));
            if self.eat(b'}') {
                return Ok(Value::Object(Map::from_members(members)));
            }
            if !self.eat(b',') {
                return Err(self.expected("',' or '}'"));
            }
        }
    }

    /// A string, the parser being at its opening quote.
    fn string(&mut self) -> Result<String, JsonError> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let run = self.text[self.at..].find(|c: char| c == '"' || c == '\\' || c < ' ');
            let Some(run) = run else {
                self.at = self.text.len();
                return Err(self.expected("'\"' closing the string"));
            };
            out.push_str(&self.text[self.at..self.at + run]);
            self.at += run;
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => out.push(self.escape()?),
                _ => return Err(JsonError::ControlCharacter { at: self.at }),
            }
        }
    }

    /// One escape, the parser being at its backslash.
    fn escape(&mut self) -> Result<char, JsonError> {
        let start = self.at;
        let bad = JsonError::BadEscape { at: start };
        let letter = self.text.as_bytes().get(start + 1).copied().ok_or(bad.clone())?;
        self.at += 2;
        Ok(match letter {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4().ok_or(bad.clone())?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    if !self.text[self.at..].starts_with("\\u") {
                        return Err(bad);
                    }
                    self.at += 2;
                    let low = self.hex4().filter(|l| (0xDC00..0xE000).contains(l)).ok_or(bad.clone())?;
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                char::from_u32(code).ok_or(bad)?
            }
            _ => return Err(bad),
        })
    }

    /// Four hex digits, as the value they spell.
    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// A number, checked against the grammar `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.expected("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Ok(Value::Number(Number(self.text[start..self.at].to_string())))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), JsonError> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.expected("a digit"));
        }
        self.digits();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn round(text: &str) -> String {
        parse(text.as_bytes()).unwrap().to_string()
    }

    #[test]
    fn reads_and_writes_every_kind_compactly() {
        let text = r#" { "a" : [1, -2.5e3, 0.25, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {} , "c": [] } "#;
        let value = parse(text.as_bytes()).unwrap();
        assert_eq!(value.to_string(), r#"{"a":[1,-2.5e3,0.25,true,false,null,"x\"\\/\b\f\n\r\té😀"],"b":{},"c":[]}"#);
        assert_eq!(value.get("a").and_then(|a| a.as_array()).map(Vec::len), Some(7));
        assert_eq!(value.get("b").unwrap().as_object().unwrap().keys().count(), 0);
        assert!(value.get("z").is_none() && Value::Null.get("a").is_none());
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let value = Value::from("\u{0}\u{1f}\u{7f}é\"");
        assert_eq!(value.to_string(), "\"\\u0000\\u001f\u{7f}é\\\"\"");
        assert_eq!(parse(value.to_string().as_bytes()).unwrap(), value);
    }

    #[test]
    fn later_duplicate_keys_win_in_the_first_place() {
        assert_eq!(round(r#"{"a": 1, "b": 2, "a": 3, "c": 4, "a": 5, "b": 6}"#), r#"{"a":5,"b":6,"c":4}"#);
        let mut map = Map::new();
        map.insert("x", Value::from(1u64));
        map.insert("y", Value::Null);
        map.insert("x", Value::from(2u64));
        assert_eq!(Value::Object(map.clone()).to_string(), r#"{"x":2,"y":null}"#);
        assert_eq!(map.remove("x"), Some(Value::from(2u64)));
        assert_eq!(map.keys().count(), 1);
    }

    #[test]
    fn numbers_keep_their_text_and_read_as_integers() {
        assert_eq!(round("[0, -0, 12.50, 1E+2, 18446744073709551616]"), "[0,-0,12.50,1E+2,18446744073709551616]");
        let n = |t: &str| parse(t.as_bytes()).unwrap().as_number().unwrap().clone();
        assert_eq!(n("503").as_u64(), Some(503));
        assert_eq!(n("18446744073709551615").as_u64(), Some(u64::MAX));
        for t in ["-1", "5.0", "5e2", "18446744073709551616"] {
            assert_eq!(n(t).as_u64(), None, "{t}");
        }
    }

    #[test]
    fn plain_writes_out_the_exponent() {
        let plain = |t: &str| parse(t.as_bytes()).unwrap().as_number().unwrap().plain();
        for (text, want) in [
            ("12.5", "12.5"),
            ("1.25e1", "12.5"),
            ("1e2", "100"),
            ("1E-4", "0.0001"),
            ("-2.5e-1", "-0.25"),
            ("0.5e1", "5"),
            ("25e-1", "2.5"),
            ("0e5", "0"),
        ] {
            assert_eq!(plain(text).as_deref(), Some(want), "{text}");
        }
        assert_eq!(plain("1e41"), None);
        assert_eq!(plain("1e-99999999999999999999"), None);
    }

    #[test]
    fn decimals_keep_one_digit_after_the_point() {
        assert_eq!(Number::decimal(20, 0, 4).as_str(), "20.0");
        assert_eq!(Number::decimal(12, 5000, 4).as_str(), "12.5");
        assert_eq!(Number::decimal(0, 1, 4).as_str(), "0.0001");
    }

    #[test]
    fn errors_name_what_was_expected_and_where() {
        for (text, message) in [
            (&b""[..], "expected a value at byte 0"),
            (b"  ", "expected a value at byte 2"),
            (b"{\"a\": 1 \"b\": 2}", "expected ',' or '}' at byte 8"),
            (b"[1 2]", "expected ',' or ']' at byte 3"),
            (b"{1: 2}", "expected a string key at byte 1"),
            (b"{\"a\" 1}", "expected ':' at byte 5"),
            (b"[1,]", "expected a value at byte 3"),
            (b"{} x", "expected the end of the input at byte 3"),
            (b"\"abc", "expected '\"' closing the string at byte 4"),
            (b"\"a\nb\"", "control character in a string at byte 2;"),
            (b"\"\\x\"", "invalid escape at byte 1"),
            (b"\"\\ud800\"", "invalid escape at byte 1"),
            (b"\"\\udc00\"", "invalid escape at byte 1"),
            (b"\"\\u12\"", "invalid escape at byte 1"),
            (b"-", "expected a digit at byte 1"),
            (b"01", "expected the end of the input at byte 1"),
            (b"1.", "expected a digit at byte 2"),
            (b"1e+", "expected a digit at byte 3"),
            (b"tru", "expected a value at byte 0"),
            (b"\"\xff\"", "invalid UTF-8 at byte 1"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.starts_with(message), "{}: {error}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn nesting_is_limited() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(deep(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(parse(deep(MAX_DEPTH + 1).as_bytes()), Err(JsonError::TooDeep { at: MAX_DEPTH }));
        let objects = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH + 1), "}".repeat(MAX_DEPTH + 1));
        assert!(matches!(parse(objects.as_bytes()), Err(JsonError::TooDeep { .. })));
        assert!(parse("[".repeat(100_000).as_bytes()).is_err());
    }

    #[test]
    fn many_keys_are_read_in_linear_time() {
        let members: Vec<String> = (0..50_000).map(|i| format!("\"k{}\":{i}", i % 40_000)).collect();
        let map = parse(format!("{{{}}}", members.join(",")).as_bytes()).unwrap();
        let map = map.as_object().unwrap();
        assert_eq!(map.keys().count(), 40_000);
        assert_eq!(map.get("k5").and_then(Value::as_u64), Some(40_005));
        assert_eq!(map.keys().nth(1).map(String::as_str), Some("k1"));
    }

    #[test]
    fn builders() {
        let v = object([("n", Value::from(3u16)), ("s", "x".into()), ("o", Value::from(None::<String>)), ("l", vec!["a"].into())]);
        assert_eq!(v.to_string(), r#"{"n":3,"s":"x","o":null,"l":["a"]}"#);
        assert!(v.get("o").unwrap().is_null());
        assert_eq!(v.get("s").and_then(Value::as_str), Some("x"));
        assert_eq!(Value::from("é".repeat(100)).shown(), format!("\"{}...", "é".repeat(63)));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<u64>().prop_map(Value::from),
            (any::<i32>(), 0u32..1000, -30i32..30).prop_map(|(w, f, e)| parse(format!("{w}.{f}e{e}").as_bytes()).unwrap_or_default()),
        ];
        let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), number, any::<String>().prop_map(Value::from)];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-c\"\\\\\u{0}-\u{1f}é]{0,3}", inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// What is written reads back the same.
        #[test]
        fn round_trip(v in value()) {
            let text = v.to_string();
            prop_assert_eq!(parse(text.as_bytes()), Ok(v), "{}", text);
        }

        /// Arbitrary bytes, and arbitrary bytes after a valid prefix, are a value or an error;
        /// never a panic. A value read writes out as JSON that reads back the same.
        #[test]
        fn any_bytes(prefix in "[\\[{\"a: 1,\\]}\\\\u0-9eE.+-]{0,12}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for input in [bytes.clone(), [prefix.as_bytes(), &bytes].concat(), prefix.into_bytes()] {
                if let Ok(v) = parse(&input) {
                    prop_assert_eq!(parse(v.to_string().as_bytes()), Ok(v));
                }
            }
        }
    }
}
