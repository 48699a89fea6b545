//! Durations as the control API writes them: `0.25`, `250ms`, `2s`, `1m`, `1h` (at most one
//! hour).
//! Read here rather than with `humantime`, which takes neither a bare number of seconds
//! (`timeout=0.25`, the seed's form) nor fractions (`1.5s`); decimals are read in whole
//! numbers, so no float parsing is linked in.

use crate::model::values::{from_given, Given};
use serde::{Serialize, Serializer};
use std::fmt;

/// The longest delay or window accepted, in milliseconds (one hour).
pub const MAX_MILLIS: u64 = 3_600_000;

/// What a duration text is accepted as, for error messages.
pub const ACCEPTED: &str =
    "seconds (`0.25`, `2`) or a number with a unit `ms`, `s`, `m` or `h`, from 0 to 1h";

/// A non-negative duration with millisecond resolution. In JSON it is the text `parse`
/// reads (a number is seconds), and is written as `250ms` or `10s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Millis(pub u64);

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl TryFrom<Given> for Millis {
    type Error = String;
    fn try_from(given: Given) -> Result<Millis, String> {
        read(&given)
    }
}

/// Reads a duration from a JSON string, or a number of seconds.
pub fn read(given: &Given) -> Result<Millis, String> {
    let read = match given {
        Given::Text(s) => parse(s),
        number => number.number().and_then(|n| parse(&n)),
    };
    read.ok_or_else(|| given.refused(ACCEPTED))
}
from_given!(Millis);

/// The shared state's form of a duration: whole milliseconds, as it has always been stored.
pub mod whole_ms {
    use super::Millis;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the milliseconds.
    pub fn serialize<S: Serializer>(millis: &Millis, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(millis.0)
    }

    /// Reads them back.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
        u64::deserialize(deserializer).map(Millis)
    }
}

/// Parses a duration; a bare number means seconds. Sub-millisecond parts are rounded.
pub fn parse(text: &str) -> Option<Millis> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (text, 1000)
    };
    let millis = parse_decimal(number)?.scaled(unit_ms)?;
    (millis <= MAX_MILLIS).then_some(Millis(millis))
}

/// A decimal read by [`parse_decimal`]: `whole` and `fraction / 10^places`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    /// The part before the point.
    pub whole: u64,
    /// The digits after the point, as a whole number.
    pub fraction: u64,
    /// How many digits `fraction` was written with.
    pub places: u32,
}

impl Decimal {
    /// The value times `scale`, rounded to the nearest whole number (halves up); `None` on
    /// overflow.
    pub fn scaled(self, scale: u64) -> Option<u64> {
        let unit = 10u64.pow(self.places);
        let fraction = self.fraction.checked_mul(scale)?.checked_add(unit / 2)? / unit;
        self.whole.checked_mul(scale)?.checked_add(fraction)
    }
}

/// Parses `digits[.digits]` only, no sign, exponent or leading zero (`0500`: one form per
/// number), with at most 12 digits on either side of the point; in whole numbers, so that
/// no float parsing is linked in.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    if whole.len() > 1 && whole.starts_with('0') {
        return None;
    }
    if whole.len() > 12 || fraction.len() > 12 {
        return None;
    }
    let number = |s: &str| if s.is_empty() { Some(0) } else { s.parse().ok() };
    Some(Decimal { whole: number(whole)?, fraction: number(fraction)?, places: fraction.len() as u32 })
}

impl fmt::Display for Millis {
    /// Renders in a form `parse` reads back: `10s` or `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
            ("1h", 3_600_000),
            ("0.5h", 1_800_000),
            ("0", 0),
            ("3600", 3_600_000),
            ("3600.0004", 3_600_000),
            ("0.0005", 1),
            ("1.0005", 1001),
        ] {
            assert_eq!(parse(text), Some(Millis(ms)), "{text}");
        }
    }

    #[test]
    fn refuses_negative_garbage_and_over_an_hour() {
        for text in ["", "-1", "1e3", "inf", "NaN", "abc", "2h", "1.001h", "3600.001", "1..2", ".", "5 s", "+1", "1 000", "0.1234567890123", "1234567890123", "00.5", "0500ms", "01"] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn decimals_scale_in_whole_numbers() {
        let most = parse_decimal("999999999999.999999999999").unwrap();
        assert_eq!(most.scaled(60_000), Some(60_000_000_000_000_000));
        assert_eq!(parse_decimal("12.5").unwrap(), Decimal { whole: 12, fraction: 5, places: 1 });
        assert_eq!(parse_decimal("1.").unwrap().scaled(1000), Some(1000));
        assert_eq!(parse_decimal("0.00005").unwrap().scaled(10_000), Some(1));
        assert_eq!(parse_decimal("0.00004").unwrap().scaled(10_000), Some(0));
    }

    #[test]
    fn display_reads_back() {
        for ms in [0, 250, 1000, 1500, 10_000] {
            assert_eq!(parse(&Millis(ms).to_string()), Some(Millis(ms)));
        }
    }
}
