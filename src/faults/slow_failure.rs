//! A slow failure is not a fault kind of its own: it is a [`Delay`] and an [`Abort`] in one
//! fault (`{"delay": {...}, "abort": {...}}`), one sampling decision for both, as Envoy's
//! fault filter runs its abort in its delay's timer. The query policy `slowFailure` is one.

use crate::faults::abort::Abort;
use crate::faults::delay::Delay;
use crate::stats::Stat;
use serde::Serialize;

/// The label (`x-fault-injected`, the access log) of a slow failure.
pub const LABEL: &str = "slowFailure";
/// What a slow failure counts.
pub const STAT: Stat = Stat::SlowFailuresInjected;

/// A delay, then an abort instead of forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SlowFailure {
    /// The delay before the answer.
    pub delay: Delay,
    /// The answer.
    pub abort: Abort,
}
