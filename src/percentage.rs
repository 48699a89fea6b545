//! The share of requests sampled, kept in parts per million so sampling needs no floats.

use serde::{Deserialize, Serialize};

/// One hundred percent, in parts per million.
pub const FULL: u32 = 1_000_000;

/// What a percentage text is accepted as, for error messages.
pub const ACCEPTED: &str = "a number from 0 to 100, fractions allowed (`12.5`)";

/// A percentage from 0 to 100, stored in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentage(pub u32);

impl Percentage {
    /// The seed's default: 20% of requests are tested traffic.
    pub const DEFAULT: Percentage = Percentage(200_000);

    /// Parses `0`..`100` with an optional fraction.
    pub fn parse(text: &str) -> Option<Percentage> {
        let value = crate::duration::parse_decimal(text.trim())?;
        (value <= 100.0).then(|| Percentage((value * 10_000.0).round() as u32))
    }

    /// The value as a JSON number (20, 12.5).
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
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
    }

    #[test]
    fn refuses_out_of_range_and_garbage() {
        for text in ["100.01", "-1", "101", "abc", "", "NaN", "inf", "1e2"] {
            assert_eq!(Percentage::parse(text), None, "{text}");
        }
    }
}
