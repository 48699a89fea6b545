//! Shares written in percent (`5`, `12.5`) and kept in parts per million, rendered back
//! without formatting a float: Rust's float formatting adds about 20 KB to the module,
//! while serde_json's own float writer is linked anyway.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// One hundred percent, in parts per million.
pub const FULL: u32 = 1_000_000;

/// A share from 0 to 100%, in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ppm(pub u32);

impl Ppm {
    /// A percentage as written in a document, rounded to a part per million; `None` when it
    /// is below 0 or above 100.
    pub fn from_percent(percent: f64) -> Option<Ppm> {
        let ppm = (percent * 10_000.0).round();
        // In range, so the cast is exact; NaN fails the range check.
        (0.0..=f64::from(FULL)).contains(&ppm).then_some(Ppm(ppm as u32))
    }

    /// `part` of `whole`, rounded down; 0 for an empty whole.
    pub fn of(part: u64, whole: u64) -> Ppm {
        let ppm = part.saturating_mul(u64::from(FULL)).checked_div(whole).unwrap_or(0);
        Ppm(u32::try_from(ppm).unwrap_or(u32::MAX))
    }

    /// The share in percent, for JSON.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl fmt::Display for Ppm {
    /// Renders percent with no trailing zeros: `5`, `12.5`, `0.0001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0 / 10_000, fraction_text(self.0 % 10_000))
    }
}

/// Ten-thousandths as `.25`, or nothing for 0.
fn fraction_text(mut fraction: u32) -> String {
    if fraction == 0 {
        return String::new();
    }
    let mut places = 4;
    while fraction.is_multiple_of(10) {
        fraction /= 10;
        places -= 1;
    }
    format!(".{fraction:0places$}")
}

impl Serialize for Ppm {
    /// Serialized as the percentage, a JSON number.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.percent())
    }
}

impl<'de> Deserialize<'de> for Ppm {
    /// Read from the percentage, a JSON number from 0 to 100.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ppm, D::Error> {
        let percent = f64::deserialize(deserializer)?;
        Ppm::from_percent(percent).ok_or_else(|| {
            de::Error::custom(format_args!("{} is not accepted; give a percentage from 0 to 100", rejected_text(percent)))
        })
    }
}

/// A rejected percentage, rendered for an error message without float formatting: to four
/// places, or as "out of range" past what a whole number can show.
pub fn rejected_text(percent: f64) -> String {
    let scaled = (percent * 10_000.0).round();
    if !(-1e15..=1e15).contains(&scaled) {
        return "a number out of range".into();
    }
    // In range, so the cast is exact.
    let scaled = scaled as i64;
    let sign = if scaled < 0 { "-" } else { "" };
    let magnitude = scaled.unsigned_abs();
    // The remainder is below 10,000, so it fits.
    format!("{sign}{}{}", magnitude / 10_000, fraction_text((magnitude % 10_000) as u32))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percent_text_has_no_trailing_zeros() {
        for (ppm, text) in [(0, "0"), (50_000, "5"), (125_000, "12.5"), (1, "0.0001"), (FULL, "100"), (108_911, "10.8911"), (10, "0.001")] {
            assert_eq!(Ppm(ppm).to_string(), text);
        }
    }

    #[test]
    fn percentages_round_to_a_part_per_million() {
        assert_eq!(Ppm::from_percent(12.5), Some(Ppm(125_000)));
        assert_eq!(Ppm::from_percent(0.00004), Some(Ppm(0)));
        assert_eq!(Ppm::from_percent(100.0), Some(Ppm(FULL)));
        assert_eq!(Ppm::from_percent(100.00004), Some(Ppm(FULL)));
        assert_eq!(Ppm::from_percent(100.1), None);
        assert_eq!(Ppm::from_percent(-0.1), None);
        assert_eq!(Ppm::from_percent(f64::NAN), None);
    }

    #[test]
    fn shares_of_counts() {
        assert_eq!(Ppm::of(11, 101), Ppm(108_910));
        assert_eq!(Ppm::of(1, 0), Ppm(0));
        assert_eq!(Ppm::of(5, 5), Ppm(FULL));
    }

    #[test]
    fn reads_back_what_it_writes() {
        for ppm in [0, 1, 108_910, FULL] {
            let text = serde_json::to_string(&Ppm(ppm)).unwrap();
            assert_eq!(serde_json::from_str::<Ppm>(&text).unwrap(), Ppm(ppm), "{text}");
        }
        let error = serde_json::from_str::<Ppm>("100.5").unwrap_err().to_string();
        assert!(error.contains("100.5 is not accepted; give a percentage from 0 to 100"), "{error}");
    }

    #[test]
    fn rejected_values_are_shown_as_given() {
        for (value, text) in [(150.0, "150"), (-3.0, "-3"), (100.5, "100.5"), (0.0, "0"), (123456.25, "123456.25"), (100003.5, "100003.5"), (2.05, "2.05"), (-0.00001, "0"), (1e30, "a number out of range")] {
            assert_eq!(rejected_text(value), text, "{value}");
        }
    }
}
