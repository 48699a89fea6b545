//! Every counter and gauge the filter keeps, declared in one place under one prefix.
//! Envoy shows them as `wasmcustom.fault_injector.<name>` in `/stats` and `/stats/prometheus`.

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
    StateVersion = true "state_version", "Goes up with every write of the shared policy state; workers re-read the state when it moves.";
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
