//! The share of requests sampled, kept in parts per million so sampling needs no floats.

use crate::json::{Number, Value};

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
        let value = crate::duration::parse_decimal(text.trim())?;
        if (value.whole, value.fraction) > (100, 0) {
            return None;
        }
        Some(Percentage(u32::try_from(value.scaled(10_000)?).ok()?))
    }

    /// The value as a JSON number, always with a point (`20.0`, `12.5`, `0.0001`), as
    /// `GET /injector` has always shown it.
    pub fn to_json(self) -> Value {
        Value::Number(Number::decimal(u64::from(self.0 / 10_000), u64::from(self.0 % 10_000), 4))
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
            assert_eq!(Percentage(ppm).to_json().to_string(), text);
        }
    }

    #[test]
    fn refuses_out_of_range_and_garbage() {
        for text in ["100.01", "100.00001", "-1", "101", "abc", "", "NaN", "inf", "1e2"] {
            assert_eq!(Percentage::parse(text), None, "{text}");
        }
    }
}
