//! The `response_delay` fault: the upstream's response headers are held for `fixed`
//! before going on to the client (counted as a delay).

use crate::faults::Kind;
use crate::model::duration::Millis;
use crate::model::values::from_object;
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// A response delay: `{"fixed": "300ms"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ResponseDelay {
    /// How long.
    pub fixed: Millis,
}

impl Kind for ResponseDelay {
    const NAME: &'static str = "response_delay";
    const LABEL: &'static str = "delay";
    const STAT: Stat = Stat::DelaysInjected;
}

/// The response delay as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseDelaySpec {
    fixed: Millis,
}

impl TryFrom<ResponseDelaySpec> for ResponseDelay {
    type Error = &'static str;
    fn try_from(spec: ResponseDelaySpec) -> Result<ResponseDelay, &'static str> {
        Ok(ResponseDelay { fixed: spec.fixed })
    }
}
from_object!(ResponseDelay, ResponseDelaySpec);
