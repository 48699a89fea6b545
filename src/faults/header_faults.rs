//! Faults a request asks for itself with `x-fault-*` headers (like Envoy's
//! `x-envoy-fault-*`), for a service's own integration tests. Off unless the plugin
//! configuration turns them on (`header_faults.enabled`).

use crate::model::duration::Millis;
use crate::model::percentage::{self, Percentage};
use crate::model::values::{HttpStatus, STATUS_ACCEPTED};
use std::fmt;

/// Hold this request this many milliseconds.
pub const DELAY: &str = "x-fault-delay-ms";
/// Answer this request with this status.
pub const ABORT: &str = "x-fault-abort-status";
/// Do either for this share of such requests (default 100).
pub const PERCENTAGE: &str = "x-fault-percentage";

/// The fault a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// `x-fault-delay-ms`.
    Delay(Millis),
    /// `x-fault-abort-status`.
    Abort(u16),
}

/// A fault header that cannot be honoured: the request is answered 400 with this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderError {
    /// The header.
    pub header: &'static str,
    /// What it held; `None` when the header is refused whatever it holds (an abort with a
    /// delay).
    pub value: Option<String>,
    /// What is accepted.
    pub accepted: String,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => {
                let value: String = value.chars().take(64).collect();
                write!(f, "{}: '{value}' is not accepted; expected {}", self.header, self.accepted)
            }
            None => write!(f, "{}: {}", self.header, self.accepted),
        }
    }
}

/// Reads the fault headers' values; `Ok(None)` when the request asks for nothing.
pub fn read(delay: Option<&str>, abort: Option<&str>, share: Option<&str>, max_delay: Millis) -> Result<Option<(Asked, Percentage)>, HeaderError> {
    let error = |header, value: &str, accepted: String| HeaderError { header, value: Some(value.to_string()), accepted };
    let asked = match (delay, abort) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            let accepted = format!("not with {DELAY}; one fault per request: send one of the two");
            return Err(HeaderError { header: ABORT, value: None, accepted });
        }
        (Some(v), None) => {
            let ms = v.trim().parse::<u64>().ok().filter(|ms| *ms <= max_delay.0);
            Asked::Delay(Millis(ms.ok_or_else(|| error(DELAY, v, format!("whole milliseconds from 0 to {}", max_delay.0)))?))
        }
        (None, Some(v)) => {
            let status = v.trim().parse::<u64>().ok().and_then(HttpStatus::new);
            Asked::Abort(status.ok_or_else(|| error(ABORT, v, STATUS_ACCEPTED.into()))?.0)
        }
    };
    let share = match share {
        None => Percentage(percentage::FULL),
        Some(v) => Percentage::parse(v).ok_or_else(|| error(PERCENTAGE, v, percentage::ACCEPTED.into()))?,
    };
    Ok(Some((asked, share)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAX: Millis = Millis(10_000);

    #[test]
    fn reads_what_is_asked() {
        assert_eq!(read(None, None, Some("50"), MAX), Ok(None));
        assert_eq!(read(Some("250"), None, None, MAX), Ok(Some((Asked::Delay(Millis(250)), Percentage(percentage::FULL)))));
        assert_eq!(read(None, Some("503"), Some("12.5"), MAX), Ok(Some((Asked::Abort(503), Percentage(125_000)))));
    }

    #[test]
    fn bad_values_name_the_header() {
        for (d, a, p, needle) in [
            (Some("20000"), None, None, "x-fault-delay-ms: '20000' is not accepted; expected whole milliseconds from 0 to 10000"),
            (Some("-1"), None, None, "x-fault-delay-ms"),
            (None, Some("99"), None, "x-fault-abort-status: '99'"),
            (Some("1"), Some("503"), None, "x-fault-abort-status: not with x-fault-delay-ms; one fault per request: send one of the two"),
            (None, Some("503"), Some("200"), "x-fault-percentage: '200'"),
        ] {
            let message = read(d, a, p, MAX).unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any header values: a fault, nothing, or an error naming the header; never a panic.
        #[test]
        fn any_values(d in proptest::option::of("\\PC{0,12}"), a in proptest::option::of("\\PC{0,12}"), p in proptest::option::of("\\PC{0,12}")) {
            match read(d.as_deref(), a.as_deref(), p.as_deref(), Millis(10_000)) {
                Ok(Some((Asked::Delay(ms), _))) => prop_assert!(ms.0 <= 10_000),
                Ok(Some((Asked::Abort(s), _))) => prop_assert!((200..=599).contains(&s)),
                Ok(None) => prop_assert!(d.is_none() && a.is_none()),
                Err(e) => prop_assert!(e.to_string().starts_with("x-fault-")),
            }
        }
    }
}
