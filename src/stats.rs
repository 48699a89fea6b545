//! Every counter and gauge the filter keeps, declared in one place under one prefix.
//! Envoy shows them as `wasmcustom.fault_injector.<name>` in `/stats` and `/stats/prometheus`.

use crate::model::outbound::Direction;
use std::cell::Cell;

/// A metric: its kind and its full name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// A gauge goes up and down; a counter only up.
    pub gauge: bool,
    /// The full name.
    pub name: &'static str,
}

macro_rules! metrics {
    ($($id:ident = $gauge:literal $name:literal, $doc:literal;)*) => {
        /// The metrics, in the order of [`ALL`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat { $(#[doc = $doc] $id,)* }
        /// Every metric, indexed by `Stat as usize`.
        pub const ALL: &[Metric] = &[$(Metric { gauge: $gauge, name: concat!("fault_injector.", $name) },)*];
    };
}

metrics! {
    RequestsSeen = false "requests_seen", "Requests that reached the filter, control calls excepted.";
    RequestsPassed = false "requests_passed", "Requests forwarded without a fault.";
    ProbesPassed = false "probes_passed", "Kubelet probes (User-Agent: kube-probe/...) forwarded untouched where a fault would have applied.";
    AbortsInjected = false "aborts_injected", "Requests answered with the policy's status.";
    ResponsesInjected = false "responses_injected", "Requests answered with the canned response.";
    DelaysInjected = false "delays_injected", "Requests held before being forwarded.";
    DelaysOverflow = false "delays_overflow", "Requests passed untouched because max_active_delays were held.";
    RetriesInjected = false "retries_injected", "Bounded-retry attempts failed.";
    ResponsesRewritten = false "responses_rewritten", "Responses changed by a response_rewrite rule.";
    HeaderFaultsRefused = false "header_faults_refused", "Requests answered 400 for a bad x-fault-* header.";
    PolicyChanges = false "policy_changes", "Control calls that changed the policy.";
    ControlRefused = false "control_refused", "Control calls refused (403, 401, 405, 400).";
    ActiveDelays = true "active_delays", "Requests being held now.";
    RetryEntries = true "retry_entries", "Identities held in the bounded-retry table now, all shards together.";
    RetryEvictions = false "retry_evictions", "Identities dropped from a full bounded-retry shard to make room.";
    StateVersion = true "state_version", "Goes up with every write of the shared policy state.";
    ResetsInjected = false "resets_injected", "Requests whose stream was reset without an answer (reset, resetStream).";
    SlowFailuresInjected = false "slow_failures_injected", "Requests held, then answered with an abort (a delay and an abort in one rule, slowFailure).";
    TruncationsInjected = false "truncations_injected", "Requests whose response is cut mid-body, then reset (truncate, truncateResponse).";
    ThrottlesInjected = false "throttles_injected", "Requests whose response body is released at a rate (throttle, throttleResponse).";
    ThrottlesUnpaced = false "throttles_unpaced", "Requests a throttle chose on a listener without Envoy's fault filter after this one (no envoy_fault_filter in its configuration): passed untouched, counted as requests_passed.";
    BodiesChanged = false "bodies_changed", "Requests whose response body is replaced or corrupted (body_change, replaceBody, corruptBody).";
    GuardTrips = false "guard_trips", "Times a guard condition tripped and halted injection.";
    RequestsRewritten = false "requests_rewritten", "Requests changed before going upstream (request_rewrite, requestRewrite).";
}

/// The name `metric` is defined under on a listener of `direction`: an outbound listener's
/// counters are `fault_injector.outbound.<name>`, so the inbound names of existing scrapes
/// stay as they are; gauges are the whole Envoy's, one name for both directions.
pub fn name(metric: &Metric, direction: Direction) -> String {
    match direction {
        Direction::Outbound if !metric.gauge => metric.name.replacen("fault_injector.", "fault_injector.outbound.", 1),
        _ => metric.name.to_string(),
    }
}

/// Counter increments a worker made and has not handed to Envoy yet. Adding to a counter is
/// a host call, and a request that passes untouched made two of them (`requests_seen`,
/// `requests_passed`); summed here, they cost one host call per counter per flush, and the
/// glue flushes on its timer. Gauges never wait here: workers read them.
pub struct Tally {
    pending: [Cell<i64>; ALL.len()],
}

impl Default for Tally {
    fn default() -> Tally {
        Tally { pending: [const { Cell::new(0) }; ALL.len()] }
    }
}

impl Tally {
    /// Adds `delta` to the counter `stat`.
    pub fn add(&self, stat: Stat, delta: i64) {
        let pending = &self.pending[stat as usize];
        pending.set(pending.get() + delta);
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(|p| p.get() == 0)
    }

    /// Takes what waits: for each counter that moved, its index in [`ALL`] and the sum.
    pub fn take(&self) -> impl Iterator<Item = (usize, i64)> + '_ {
        self.pending.iter().enumerate().filter_map(|(i, p)| Some((i, p.replace(0))).filter(|(_, d)| *d != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_sums_until_taken() {
        let tally = Tally::default();
        assert!(tally.is_empty());
        tally.add(Stat::RequestsSeen, 1);
        tally.add(Stat::RequestsPassed, 1);
        tally.add(Stat::RequestsSeen, 2);
        assert!(!tally.is_empty());
        let taken: Vec<(usize, i64)> = tally.take().collect();
        assert_eq!(taken, vec![(Stat::RequestsSeen as usize, 3), (Stat::RequestsPassed as usize, 1)]);
        assert!(tally.is_empty());
        assert_eq!(tally.take().count(), 0);
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(ALL[Stat::ActiveDelays as usize].name, "fault_injector.active_delays");
        assert!(ALL[Stat::ActiveDelays as usize].gauge);
        assert_eq!(ALL[Stat::RetryEntries as usize].name, "fault_injector.retry_entries");
        assert!(ALL[Stat::RetryEntries as usize].gauge);
        assert!(!ALL[Stat::RetryEvictions as usize].gauge);
    }

    #[test]
    fn outbound_counters_have_their_own_names() {
        let aborts = &ALL[Stat::AbortsInjected as usize];
        assert_eq!(name(aborts, Direction::Inbound), "fault_injector.aborts_injected");
        assert_eq!(name(aborts, Direction::Outbound), "fault_injector.outbound.aborts_injected");
        // The version stamp and the held-request gauge are shared by both directions.
        assert_eq!(name(&ALL[Stat::StateVersion as usize], Direction::Outbound), "fault_injector.state_version");
        assert_eq!(name(&ALL[Stat::ActiveDelays as usize], Direction::Outbound), "fault_injector.active_delays");
    }
}
