//! The share of requests sampled, kept in parts per million so sampling needs no floats.

use crate::model::values::{from_given, Given};
use serde::{Serialize, Serializer};

/// One hundred percent, in parts per million.
pub const FULL: u32 = 1_000_000;

/// What a percentage text is accepted as, for error messages.
pub const ACCEPTED: &str = "a number from 0 to 100, fractions allowed (`12.5`)";

/// A percentage from 0 to 100, stored in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentage(pub u32);

impl Percentage {
    /// The seed's default: 20% of requests are tested traffic.
    pub const DEFAULT: Percentage = Percentage(200_000);

    /// Parses `0`..`100` with an optional fraction; finer than `0.0001` is rounded.
    pub fn parse(text: &str) -> Option<Percentage> {
        let value = crate::model::duration::parse_decimal(text.trim())?;
        if (value.whole, value.fraction) > (100, 0) {
            return None;
        }
        Some(Percentage(u32::try_from(value.scaled(10_000)?).ok()?))
    }

    /// One hundred percent.
    pub fn full() -> Percentage {
        Percentage(FULL)
    }

    /// The value as a number of percent. Every value (parts per million) is a decimal of at
    /// most four places, which is what the shortest form of this float prints.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

/// Written as a JSON number, always with a point (`20.0`, `12.5`, `0.0001`), as
/// `GET /injector` has always shown it.
impl Serialize for Percentage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl TryFrom<Given> for Percentage {
    type Error = String;
    fn try_from(given: Given) -> Result<Percentage, String> {
        given.number().and_then(|n| Percentage::parse(&n)).ok_or_else(|| given.refused(ACCEPTED))
    }
}
from_given!(Percentage);

/// The shared state's form of a percentage: whole parts per million, as it has always
/// been stored.
pub mod ppm {
    use super::Percentage;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the parts per million.
    pub fn serialize<S: Serializer>(percentage: &Percentage, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(percentage.0)
    }

    /// Reads them back.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Percentage, D::Error> {
        u32::deserialize(deserializer).map(Percentage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_and_fractional() {
        assert_eq!(Percentage::parse("20"), Some(Percentage(200_000)));
        assert_eq!(Percentage::parse("12.5"), Some(Percentage(125_000)));
        assert_eq!(Percentage::parse("0"), Some(Percentage(0)));
        assert_eq!(Percentage::parse("100"), Some(Percentage(FULL)));
        assert_eq!(Percentage::parse("0.0001"), Some(Percentage(1)));
        assert_eq!(Percentage::parse("100.000"), Some(Percentage(FULL)));
    }

    #[test]
    fn json_is_a_decimal_with_a_point() {
        for (ppm, text) in [(200_000, "20.0"), (125_000, "12.5"), (1, "0.0001"), (FULL, "100.0"), (0, "0.0"), (333_333, "33.3333")] {
            assert_eq!(serde_json::to_string(&Percentage(ppm)).ok().as_deref(), Some(text));
        }
    }

    proptest::proptest! {
        /// What is written reads back the same, for every value.
        #[test]
        fn every_value_reads_back(ppm in 0..=FULL) {
            let text = serde_json::to_string(&Percentage(ppm)).unwrap_or_default();
            let back: Option<Percentage> = serde_json::from_str(&text).ok();
            proptest::prop_assert_eq!(back, Some(Percentage(ppm)), "{}", text);
        }
    }

    #[test]
    fn refuses_out_of_range_and_garbage() {
        for text in ["100.01", "100.00001", "-1", "101", "abc", "", "NaN", "inf", "1e2"] {
            assert_eq!(Percentage::parse(text), None, "{text}");
        }
    }
}
