//! The `reset` fault: the stream is reset without an answer, at once or after being held
//! `after`; the upstream is never asked. The query policy `resetStream` is one too.

use crate::faults::Kind;
use crate::model::duration::Millis;
use crate::model::values::from_object;
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// A reset: `{}` or `{"after": "2s"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reset {
    /// How long the request is held before the reset.
    #[serde(skip_serializing_if = "is_zero")]
    pub after: Millis,
}

fn is_zero(ms: &Millis) -> bool {
    ms.0 == 0
}

impl Kind for Reset {
    const NAME: &'static str = "reset";
    const LABEL: &'static str = "reset";
    const STAT: Stat = Stat::ResetsInjected;
}

/// The reset as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetSpec {
    #[serde(default)]
    after: Millis,
}

impl TryFrom<ResetSpec> for Reset {
    type Error = &'static str;
    fn try_from(spec: ResetSpec) -> Result<Reset, &'static str> {
        Ok(Reset { after: spec.after })
    }
}
from_object!(Reset, ResetSpec);
