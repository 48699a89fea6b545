//! The requests a worker is holding, ordered by when each is due to be released, and the
//! period its tick timer is set to.
//!
//! Times are nanoseconds of Envoy's clock. In whole milliseconds, a request held at 100.9
//! for 200 ms was due at 300 and released 199.1 ms after it came, and a timer re-armed from
//! a truncated clock fired late by up to a millisecond, every time it was re-armed.
//!
//! Where Envoy's fault filter follows this filter (`envoy_fault_filter`), a slow failure
//! or a reset after a delay, and with `envoy_fault_filter_delays` a plain delay, is handed
//! to it instead: this filter sets [`DELAY_HEADER`] (and for a slow failure or a reset
//! [`ABORT_HEADER`] or [`ABORT_GRPC_HEADER`]) with [`MARK`], and Envoy holds it on a timer
//! of its own, as it holds its own delays. Only a request carrying [`MARK`] is faulted
//! there (the fault filter's `headers` match), and this filter removes [`MARK`] from every
//! request: one header removed per request, where the seven `x-envoy-fault-*` a client
//! could send ([`CLIENT_HEADERS`]) are removed only from the requests this filter marks.
//! The queue then only tells when the hold ends, for the `active_delays` gauge.

use std::collections::BTreeSet;

/// One millisecond in nanoseconds.
pub const MS: u64 = 1_000_000;

/// The request header that makes Envoy's fault filter after this one act on a request
/// (its `headers: [{name: x-fault-injector-envoy-fault, present_match: true}]`): set by
/// this filter on the requests it hands over, removed from every other.
pub const MARK: &str = "x-fault-injector-envoy-fault";
/// Envoy's fault filter's delay, in whole milliseconds (`delay.header_delay`).
pub const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
/// Envoy's fault filter's abort status, after the delay if any (`abort.header_abort`).
pub const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
/// Envoy's fault filter's abort as a gRPC status, for a gRPC caller.
pub const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";
/// Every request header Envoy's fault filter reads: removed from a request this filter
/// marks, before it sets its own, so its client neither adds a fault nor escapes one.
pub const CLIENT_HEADERS: [&str; 7] = [
    DELAY_HEADER,
    "x-envoy-fault-delay-request-percentage",
    ABORT_HEADER,
    ABORT_GRPC_HEADER,
    "x-envoy-fault-abort-request-percentage",
    "x-envoy-fault-throughput-response",
    "x-envoy-fault-throughput-response-percentage",
];
/// The status Envoy's fault filter aborts a request with when this filter resets it on the
/// way back: the abort only keeps the request from the upstream; its answer never leaves.
pub const RESET_ABORT_STATUS: u16 = 503;
/// Envoy's `response.code_details` for its fault filter's abort: the answer this filter
/// turns into its own slow failure, or resets.
pub const FAULT_ABORT_DETAILS: &str = "fault_filter_abort";

/// Whether one more request or response may be held while `active` are held across the
/// whole Envoy: fewer than `max_active_delays`. Past it, a delay passes untouched. Both
/// sides ask: `decide` for a request, the glue's exchange for a response.
pub fn room_for_one_more(active: u64, max_active_delays: u64) -> bool {
    active < max_active_delays
}

/// The tick period (whole milliseconds, Envoy's unit) that fires the timer at `next_ns` or
/// just after it, never before, counted from `now_ns`; 0 (off) when nothing is due. A
/// deadline already passed gets the shortest period, 1 ms.
pub fn tick_period_ms(next_ns: Option<u64>, now_ns: u64) -> u64 {
    next_ns.map_or(0, |next| next.saturating_sub(now_ns).div_ceil(MS).max(1))
}

/// Held requests by `(due time in ns, context id)`; one per worker, driven by its tick timer.
#[derive(Debug, Default)]
pub struct DelayQueue {
    held: BTreeSet<(u64, u32)>,
}

impl DelayQueue {
    /// Holds context `id` until `due_ns`.
    pub fn hold(&mut self, id: u32, due_ns: u64) {
        self.held.insert((due_ns, id));
    }

    /// Forgets a held context (its client hung up); true if it was held.
    pub fn cancel(&mut self, id: u32, due_ns: u64) -> bool {
        self.held.remove(&(due_ns, id))
    }

    /// Takes every context due at `now_ns`, earliest first: none before its time.
    pub fn take_due(&mut self, now_ns: u64) -> Vec<u32> {
        let later = self.held.split_off(&(now_ns.saturating_add(1), 0));
        let due = std::mem::replace(&mut self.held, later);
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Whether a held context is due at `now_ns`: the cheap question asked at the end of
    /// every request while something is held, before taking anything.
    pub fn any_due(&self, now_ns: u64) -> bool {
        self.next_due().is_some_and(|due| due <= now_ns)
    }

    /// When the next held context is due.
    pub fn next_due(&self) -> Option<u64> {
        self.held.first().map(|(due, _)| *due)
    }

    /// How many contexts are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_one_more_below_the_limit_only() {
        assert!(room_for_one_more(0, 1) && room_for_one_more(9_999, 10_000));
        assert!(!room_for_one_more(10_000, 10_000) && !room_for_one_more(10_001, 10_000) && !room_for_one_more(0, 0));
    }

    #[test]
    fn releases_in_due_order_and_only_when_due() {
        let mut q = DelayQueue::default();
        q.hold(1, 300);
        q.hold(2, 100);
        q.hold(3, 200);
        assert_eq!(q.next_due(), Some(100));
        assert_eq!(q.take_due(99), Vec::<u32>::new());
        assert_eq!(q.take_due(200), vec![2, 3]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_due(1000), vec![1]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_timer_never_fires_before_the_next_deadline() {
        assert_eq!(tick_period_ms(None, 5), 0);
        // Held at 100.9 ms for 200 ms: due at 300.9, the timer set for exactly 200 ms.
        assert_eq!(tick_period_ms(Some(300_900_000), 100_900_000), 200);
        // 0.3 ms left: 1 ms, not 0 (off) and not a release 0.3 ms early.
        assert_eq!(tick_period_ms(Some(300_900_000), 300_600_000), 1);
        assert_eq!(tick_period_ms(Some(300_900_000), 299_800_000), 2);
        assert_eq!(tick_period_ms(Some(300_900_000), 301_000_000), 1, "already due");
        let mut q = DelayQueue::default();
        q.hold(1, 300_900_000);
        assert_eq!(q.take_due(300_899_999), Vec::<u32>::new(), "not a nanosecond early");
        assert_eq!(q.take_due(300_900_000), vec![1]);
    }

    #[test]
    fn a_context_is_due_only_from_its_time_on() {
        let mut q = DelayQueue::default();
        assert!(!q.any_due(u64::MAX), "nothing held");
        q.hold(1, 300_900_000);
        q.hold(2, 400_000_000);
        assert!(!q.any_due(300_899_999));
        assert!(q.any_due(300_900_000));
        assert_eq!(q.take_due(300_900_000), vec![1]);
        assert!(!q.any_due(399_999_999));
    }

    #[test]
    fn cancelled_contexts_are_not_released() {
        let mut q = DelayQueue::default();
        q.hold(1, 100);
        q.hold(2, 100);
        assert!(q.cancel(1, 100));
        assert!(!q.cancel(1, 100));
        assert_eq!(q.take_due(100), vec![2]);
    }
}
