//! The `bounded_retries` fault: the first `retries` attempts of a request identity
//! (client, method, path) fail with `status`, the next one passes; identities, not
//! attempts, are sampled, so a retrying client sees exactly `retries` failures. The shared
//! table that counts the attempts is [`crate::faults::retries`].

use crate::faults::Kind;
use crate::model::values::{from_object, HttpStatus};
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


/// Bounded retries as written; the status defaults to 503.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundedRetriesSpec {
    retries: u32,
    status: Option<HttpStatus>,
}

impl TryFrom<BoundedRetriesSpec> for BoundedRetries {
    type Error = String;
    fn try_from(spec: BoundedRetriesSpec) -> Result<BoundedRetries, String> {
        if spec.retries > MAX_RETRIES {
            return Err(format!("retries: {} is not accepted; expected a whole number from 0 to {MAX_RETRIES}", spec.retries));
        }
        Ok(BoundedRetries { retries: spec.retries, status: spec.status.unwrap_or(HttpStatus(503)) })
    }
}
from_object!(BoundedRetries, BoundedRetriesSpec);
