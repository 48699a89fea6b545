//! A throttle: the upstream's response body released at a rate. Envoy's own fault filter
//! (`envoy.filters.http.fault`), placed after this one with a `response_rate_limit` of
//! `header_limit`, does the pacing, with backpressure on the upstream; this filter decides
//! which requests get it (rules, sampling, clients, TTL, counting) and asks for it with
//! the request header [`RATE_HEADER`]. A Wasm filter can only hold what Envoy buffered and
//! release it whole, which truncated large bodies (Envoy's buffer limit) and let fast
//! ones through unthrottled.
//!
//! Envoy's filter reads the rate in whole KiB/s, so a throttle is a multiple of 1024 bytes
//! per second: what is asked is what is applied.

use std::fmt;

use crate::faults::Kind;
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// The fastest rate accepted, 1 GiB/s; anything faster throttles nothing a proxy carries.
pub const MAX_BYTES_PER_SECOND: u64 = 1 << 30;

/// What `bytes_per_second` (`bytesPerSecond=`) accepts, for error messages.
pub const ACCEPTED: &str = "a multiple of 1024 bytes per second (Envoy's fault filter paces in whole KiB/s) from 1024 to 1073741824 (1 GiB/s), such as 102400 for 100 KiB/s";
/// The unit of Envoy's fault filter's rate: 1 KiB/s.
pub const KIB: u64 = 1024;

/// The request header Envoy's fault filter reads the response rate from, in KiB/s.
pub const RATE_HEADER: &str = "x-envoy-fault-throughput-response";

/// Why a throttle is refused on a listener whose configuration does not say Envoy's fault
/// filter follows this one.
pub const NO_FAULT_FILTER: &str = "a throttle needs Envoy's fault filter (envoy.filters.http.fault with response_rate_limit.header_limit, acting on requests marked x-fault-injector-envoy-fault) after this one on the listener, and \"envoy_fault_filter\": true in the plugin configuration (docs/new-faults.md, \"throttle\")";

/// A throttle as written in a policy document: `{"bytes_per_second": 102400}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// The rate, in bytes per second: a multiple of 1024 from 1 KiB/s to 1 GiB/s.
    pub bytes_per_second: u64,
}


/// Why a throttle rate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleError(pub u64);

impl fmt::Display for ThrottleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The form of every member's refusal: `rules[0].fault.throttle: bytes_per_second: ...`.
        write!(f, "bytes_per_second: {} is not accepted; expected {ACCEPTED}", self.0)
    }
}

impl std::error::Error for ThrottleError {}

/// A validated rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ThrottleSpec", into = "ThrottleSpec")]
pub struct Throttle {
    bytes_per_second: u64,
}

impl Kind for Throttle {
    const NAME: &'static str = "throttle";
    const LABEL: &'static str = "throttle";
    const STAT: Stat = Stat::ThrottlesInjected;
}

impl Throttle {
    /// The rate in bytes per second.
    pub fn bytes_per_second(self) -> u64 {
        self.bytes_per_second
    }

    /// The rate in KiB/s, as Envoy's fault filter reads it.
    pub fn kib_per_second(self) -> u64 {
        self.bytes_per_second / KIB
    }
}

impl TryFrom<ThrottleSpec> for Throttle {
    type Error = ThrottleError;

    fn try_from(spec: ThrottleSpec) -> Result<Throttle, ThrottleError> {
        Throttle::at(spec.bytes_per_second)
    }
}

impl Throttle {
    /// A throttle at `bytes_per_second`, from the document or the query's `bytesPerSecond=`.
    pub fn at(bytes_per_second: u64) -> Result<Throttle, ThrottleError> {
        if (KIB..=MAX_BYTES_PER_SECOND).contains(&bytes_per_second) && bytes_per_second.is_multiple_of(KIB) {
            Ok(Throttle { bytes_per_second })
        } else {
            Err(ThrottleError(bytes_per_second))
        }
    }
}

impl From<Throttle> for ThrottleSpec {
    fn from(t: Throttle) -> ThrottleSpec {
        ThrottleSpec { bytes_per_second: t.bytes_per_second }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_rates_say_what_is_accepted() {
        for (json, message) in [
            (r#"{"bytes_per_second": 0}"#, "bytes_per_second: 0 is not accepted; expected a multiple of 1024 bytes per second (Envoy's fault filter paces in whole KiB/s) from 1024 to 1073741824"),
            (r#"{"bytes_per_second": 1000}"#, "1000 is not accepted"),
            (r#"{"bytes_per_second": 102401}"#, "102401 is not accepted"),
            (r#"{"bytes_per_second": 1073741825}"#, "1073741825 is not accepted"),
            (r#"{"bytes_per_second": -1}"#, "invalid value: integer `-1`, expected u64"),
            (r#"{"bytes_per_second": 1.5}"#, "invalid type: floating point `1.5`, expected u64"),
            (r#"{"rate": 1}"#, "unknown field `rate`, expected `bytes_per_second`"),
        ] {
            let error = serde_json::from_str::<Throttle>(json).unwrap_err().to_string();
            assert!(error.contains(message), "{json}: {error}");
        }
        let t: Throttle = serde_json::from_str(r#"{"bytes_per_second": 102400}"#).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"bytes_per_second":102400}"#);
        assert_eq!(t.kib_per_second(), 100);
        let fastest: Throttle = serde_json::from_str(r#"{"bytes_per_second": 1073741824}"#).unwrap();
        assert_eq!(fastest.kib_per_second(), 1 << 20);
    }
}
