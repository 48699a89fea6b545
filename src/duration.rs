//! Durations as the control API writes them: `0.25`, `250ms`, `2s`, `1m` (at most one hour).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest delay or window accepted, in milliseconds (one hour).
pub const MAX_MILLIS: u64 = 3_600_000;

/// What a duration text is accepted as, for error messages.
pub const ACCEPTED: &str =
    "seconds (`0.25`, `2`) or a number with a unit `ms`, `s` or `m`, from 0 to 1h";

/// A non-negative duration with millisecond resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Millis(pub u64);

/// Parses a duration; a bare number means seconds. Sub-millisecond parts are rounded.
pub fn parse(text: &str) -> Option<Millis> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1000)
    };
    let millis = parse_decimal(number)? * unit_ms as f64;
    let millis = millis.round();
    (millis <= MAX_MILLIS as f64).then_some(Millis(millis as u64))
}

/// Parses `digits[.digits]` only: no sign, exponent, `inf` or `NaN`, which `f64::from_str` allows.
pub fn parse_decimal(text: &str) -> Option<f64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    if whole.len() > 12 || fraction.len() > 12 {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for Millis {
    /// Renders in a form `parse` reads back: `10s` or `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_seconds_fractions_and_units() {
        for (text, ms) in [
            ("10", 10_000),
            ("0.25", 250),
            (".5", 500),
            ("250ms", 250),
            ("2s", 2000),
            ("1.5s", 1500),
            ("1m", 60_000),
            ("0", 0),
            ("3600", 3_600_000),
        ] {
            assert_eq!(parse(text), Some(Millis(ms)), "{text}");
        }
    }

    #[test]
    fn refuses_negative_garbage_and_over_an_hour() {
        for text in ["", "-1", "1e3", "inf", "NaN", "abc", "1h", "3600.001", "1..2", ".", "5 s", "+1"] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn display_reads_back() {
        for ms in [0, 250, 1000, 1500, 10_000] {
            assert_eq!(parse(&Millis(ms).to_string()), Some(Millis(ms)));
        }
    }
}
