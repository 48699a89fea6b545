//! The `delay` fault: the request is held for `fixed` plus a uniform share of `jitter`,
//! then forwarded (Envoy's fault filter's fixed delay, with jitter).

use crate::faults::Kind;
use crate::model::duration::{self, Millis};
use crate::model::values::from_object;
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// A delay: `{"fixed": "2s", "jitter": "250ms"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Delay {
    /// The fixed part.
    pub fixed: Millis,
    /// The most added at random.
    pub jitter: Millis,
}

impl Kind for Delay {
    const NAME: &'static str = "delay";
    const LABEL: &'static str = "delay";
    const STAT: Stat = Stat::DelaysInjected;
}

/// The delay as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelaySpec {
    fixed: Millis,
    #[serde(default)]
    jitter: Millis,
}

impl TryFrom<DelaySpec> for Delay {
    type Error = &'static str;
    fn try_from(spec: DelaySpec) -> Result<Delay, &'static str> {
        if spec.fixed.0 + spec.jitter.0 > duration::MAX_MILLIS {
            return Err("fixed + jitter must be at most 1h");
        }
        Ok(Delay { fixed: spec.fixed, jitter: spec.jitter })
    }
}
from_object!(Delay, DelaySpec);

impl Delay {
    /// A delay of `fixed` only, as the query's `timeout=` sets it.
    pub fn fixed(fixed: Millis) -> Delay {
        Delay { fixed, jitter: Millis(0) }
    }

    /// How long a request is held, given a uniform random number (asked only when the
    /// delay has jitter).
    pub fn held(&self, random: impl FnOnce() -> u64) -> Millis {
        let extra = if self.jitter.0 == 0 { 0 } else { random() % (self.jitter.0 + 1) };
        Millis(self.fixed.0 + extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_its_own_length() {
        let delay = Delay { fixed: Millis(100), jitter: Millis(10) };
        assert_eq!(delay.held(|| 0), Millis(100));
        assert_eq!(delay.held(|| 10), Millis(110));
        assert_eq!(delay.held(|| 11), Millis(100));
        assert_eq!(Delay::fixed(Millis(5)).held(|| unreachable!()), Millis(5));
    }
}
