//! The `bounded_retries` fault: the first `retries` attempts of a request identity
//! (client, method, path) fail with `status`, the next one passes; identities, not
//! attempts, are sampled, so a retrying client sees exactly `retries` failures. The shared
//! table that counts the attempts is [`crate::faults::retries`].

use crate::faults::Kind;
use crate::model::values::{from_object, from_value, not_accepted, HttpStatus};
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// The most failed attempts a fault may ask for.
pub const MAX_RETRIES: u32 = 10_000;

/// Bounded retries: `{"retries": 2, "status": 500}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BoundedRetries {
    /// Attempts that fail before one passes.
    pub retries: u32,
    /// Their status.
    pub status: HttpStatus,
}

impl Kind for BoundedRetries {
    const NAME: &'static str = "bounded_retries";
    const LABEL: &'static str = "boundedRetries";
    const STAT: Stat = Stat::RetriesInjected;
}

/// Attempts that fail: 0 to 10000.
pub struct Retries(u32);

impl TryFrom<&serde_json::Value> for Retries {
    type Error = String;
    fn try_from(value: &serde_json::Value) -> Result<Retries, String> {
        let n = value.as_u64().filter(|n| *n <= u64::from(MAX_RETRIES));
        n.map(|n| Retries(n as u32)).ok_or_else(|| not_accepted(value, "a whole number from 0 to 10000"))
    }
}
from_value!(Retries);

/// Bounded retries as written; the status defaults to 503.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundedRetriesSpec {
    retries: Retries,
    status: Option<HttpStatus>,
}

impl TryFrom<BoundedRetriesSpec> for BoundedRetries {
    type Error = &'static str;
    fn try_from(spec: BoundedRetriesSpec) -> Result<BoundedRetries, &'static str> {
        Ok(BoundedRetries { retries: spec.retries.0, status: spec.status.unwrap_or(HttpStatus(503)) })
    }
}
from_object!(BoundedRetries, BoundedRetriesSpec);
