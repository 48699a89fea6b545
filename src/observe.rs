//! What the filter tells of the faults it injects, beyond the plain counters (docs/observability.md):
//! the access-log value it leaves in Envoy's filter state, the names of the labelled
//! counters that Envoy's tag extraction turns into Prometheus labels, and the per-rule
//! counts `GET /injector` shows.

use crate::decide::{Detail, Source};
use crate::model::outbound::Direction;
use crate::model::rules::Rule;
use crate::model::sampling::identity_hash;
use crate::stats::Stat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The shared-data key of the per-rule counts all workers add to.
pub const RULE_COUNTS_KEY: &str = "fault_injector.rule_counts";

/// The access-log value of a request that a tripped guard let through (docs/stop-conditions.md).
pub const HALTED: &str = "halted";

/// The fault kind a request counted as `stat` got, as `x-fault-injected` names it; `None`
/// for a request that passed or was refused.
pub fn kind(stat: Stat) -> Option<&'static str> {
    crate::faults::label_of(stat)
}

/// What the log and the counters call where a fault came from: a rule's name, else its
/// index; `header` or `policy`.
pub fn rule_label(source: Source, rules: &[Rule]) -> String {
    match source {
        Source::Rule(at) => rules.get(at).and_then(|r| r.name.as_ref()).map_or_else(|| at.to_string(), |n| n.as_str().into()),
        Source::Header => "header".into(),
        Source::Policy => "policy".into(),
        Source::Nothing | Source::Halted => String::new(),
    }
}

/// The value left in filter state for the access log: `abort rule=checkout status=503`,
/// `delay rule=0 delay_ms=250`.
pub fn log_value(kind: &str, rule: &str, detail: Detail) -> String {
    let mut value = kind.to_string() + " rule=" + rule;
    if let Some(status) = detail.status {
        value += " status=";
        value += &status.to_string();
    }
    if let Some(ms) = detail.delay_ms {
        value += " delay_ms=";
        value += &ms.to_string();
    }
    value
}

/// The labelled counter of a fault: its labels written into the stat name the way Envoy's
/// tag extraction takes them out (`name=.=value;.;`, as Istio's stats filter writes them),
/// so `/stats/prometheus` shows `fault_injector_faults_injected{rule=..,kind=..,status=..}`
/// once the bootstrap's `stats_tags` name the three (docs/observability.md). A fault
/// without a status has no `status` label.
pub fn counter_name(direction: Direction, kind: &str, rule: &str, status: Option<u16>) -> String {
    let side = if direction == Direction::Outbound { "outbound." } else { "" };
    let mut name = "fault_injector.".to_string() + side + "rule=.=" + rule + ";.;kind=.=" + kind + ";.;";
    if let Some(status) = status {
        name += "status=.=";
        name += &status.to_string();
        name += ";.;";
    }
    name + "faults_injected"
}

/// The most labelled counters a root context keeps in force: 64 rules by a few kinds and
/// statuses in use is far fewer; header-asked statuses could be any, and past this bound
/// they are counted in the unlabelled totals only, so the series stay bounded. Only series
/// of rules in force count: a renamed or removed rule's series leave the bound (Envoy keeps
/// the counter, which cannot be deleted, but it no longer takes a place).
pub const MAX_SERIES: usize = 512;

/// One labelled counter in force.
struct Series {
    /// Its full name.
    name: String,
    /// The rule label it is for (`checkout`, `2`, `header`, `policy`).
    rule: String,
    /// The id Envoy gave it.
    id: u32,
    /// The increment not handed to Envoy yet.
    pending: i64,
}

/// Increments of labelled counters not handed to Envoy yet, by name; each is defined with
/// Envoy at its first use, and its id kept.
#[derive(Default)]
pub struct Labelled {
    series: Vec<Series>,
    /// Every counter this root context defined, by name, in force or not: one that comes
    /// back (a rule named again) takes its id again. Envoy adds an entry to its own table at
    /// each definition, even of a name it has, so a name is defined once. It grows with the
    /// names ever used, as Envoy's counters themselves do.
    defined: BTreeMap<String, u32>,
}

impl Labelled {
    /// Adds one to counter `name` of rule label `rule`, defining it with `define` at its
    /// first use; past [`MAX_SERIES`] series in force, nothing is added.
    pub fn add(&mut self, name: String, rule: &str, define: impl FnOnce(&str) -> Option<u32>) {
        if let Some(s) = self.series.iter_mut().find(|s| s.name == name) {
            s.pending += 1;
            return;
        }
        if self.series.len() >= MAX_SERIES {
            return;
        }
        let id = match self.defined.get(&name) {
            Some(id) => *id,
            None => match define(&name) {
                Some(id) => {
                    self.defined.insert(name.clone(), id);
                    id
                }
                None => return,
            },
        };
        self.series.push(Series { name, rule: rule.to_string(), id, pending: 1 });
    }

    /// Takes what waits: each counter's id and its increment.
    pub fn take(&mut self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.series.iter_mut().filter(|s| s.pending != 0).map(|s| (s.id, std::mem::take(&mut s.pending)))
    }

    /// Lets go of the series of rule labels no longer in force, once what they wait is
    /// taken: they leave room under [`MAX_SERIES`] for the rules that are.
    pub fn retire(&mut self, in_force: impl Fn(&str) -> bool) {
        self.series.retain(|s| s.pending != 0 || in_force(&s.rule));
    }

    /// How many series are in force.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is in force.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// Whether rule label `rule` is one in force with `rules`: a rule's (its name, else its
/// index), `header` or `policy`.
pub fn in_force(rule: &str, rules: &[Rule]) -> bool {
    rule == "header" || rule == "policy" || (0..rules.len()).any(|at| rule_label(Source::Rule(at), rules) == rule)
}

/// One rule's counts since the rules were set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Requests the rule matched, sampled in or out.
    pub matched: u64,
    /// Requests it injected a fault into.
    pub injected: u64,
    /// When it last injected one, in milliseconds since the epoch; 0 for never.
    pub last_ms: u64,
}

/// Per-rule counts of one set of rules, told apart from other sets by `rules`, a hash of
/// the rules as stored: counts of other rules are dropped, not added. Kept per worker,
/// and added to the shared copy, stored as JSON, at each flush.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounts {
    /// The hash of the rules counted.
    pub rules: u64,
    /// The counts, by rule index.
    pub counts: Vec<Count>,
}

impl RuleCounts {
    /// Notes a request rule `at` matched, and whether it injected a fault, at `now_ms`.
    pub fn note(&mut self, at: usize, injected: bool, now_ms: u64) {
        let count = slot(&mut self.counts, at);
        count.matched += 1;
        if injected {
            count.injected += 1;
            count.last_ms = now_ms;
        }
    }

    /// Notes that a request rule `at` matched (noted already) got its fault after all, at
    /// `now_ms`: a fault on the response body is injected only once the answer has a body.
    pub fn injected(&mut self, at: usize, now_ms: u64) {
        let count = slot(&mut self.counts, at);
        count.injected += 1;
        count.last_ms = now_ms;
    }

    /// The stored `bytes` with these counts added: replaced when they count other rules.
    pub fn added_to(&self, bytes: &[u8]) -> Vec<u8> {
        let mut sum = RuleCounts::decode(bytes);
        if sum.rules != self.rules {
            sum = RuleCounts { rules: self.rules, counts: Vec::new() };
        }
        for (at, count) in self.counts.iter().enumerate() {
            let total = slot(&mut sum.counts, at);
            total.matched += count.matched;
            total.injected += count.injected;
            total.last_ms = total.last_ms.max(count.last_ms);
        }
        sum.encode()
    }

    /// The bytes stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads stored bytes; empty counts when they are missing or unreadable.
    pub fn decode(bytes: &[u8]) -> RuleCounts {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// The count of rule `at`, with zeros for the rules up to it not counted yet.
fn slot(counts: &mut Vec<Count>, at: usize) -> &mut Count {
    if counts.len() <= at {
        counts.resize(at + 1, Count::default());
    }
    &mut counts[at]
}

/// What tells one set of rules from another for [`RuleCounts`]: a hash of the rules as
/// stored, so a change of rules (or a `ttl` ending one) starts the counts again.
pub fn rules_id(rules: &[Rule]) -> u64 {
    identity_hash(&[&serde_json::to_vec(rules).unwrap_or_default()])
}

/// The counts `GET /injector` shows, one per rule of `rules`: the stored `counts` when they
/// count these rules, else zeros.
pub fn view(counts: &RuleCounts, rules: &[Rule]) -> serde_json::Value {
    let ours = counts.rules == rules_id(rules);
    let shown = (0..rules.len()).map(|at| {
        let c = counts.counts.get(at).filter(|_| ours).copied().unwrap_or_default();
        serde_json::json!({"rule": rule_label(Source::Rule(at), rules), "matched": c.matched, "injected": c.injected, "last_fired_ms": c.last_ms})
    });
    serde_json::Value::Array(shown.collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_faults_only() {
        assert_eq!(kind(Stat::AbortsInjected), Some("abort"));
        assert_eq!(kind(Stat::SlowFailuresInjected), Some("slowFailure"));
        assert_eq!(kind(Stat::RequestsPassed), None);
        assert_eq!(kind(Stat::HeaderFaultsRefused), None);
    }

    #[test]
    fn rules_go_by_name_else_index() {
        let state = crate::model::document::parse(br#"{"rules": [{"name": "checkout", "fault": {"abort": {"status": 503}}}, {"fault": {"abort": {"status": 500}}}]}"#, 0).unwrap();
        assert_eq!(rule_label(Source::Rule(0), &state.rules), "checkout");
        assert_eq!(rule_label(Source::Rule(1), &state.rules), "1");
        assert_eq!(rule_label(Source::Header, &state.rules), "header");
        assert_eq!(rule_label(Source::Policy, &state.rules), "policy");
    }

    #[test]
    fn log_values_and_counter_names() {
        let abort = Detail { status: Some(503), delay_ms: None };
        assert_eq!(log_value("abort", "checkout", abort), "abort rule=checkout status=503");
        let slow = Detail { status: Some(500), delay_ms: Some(250) };
        assert_eq!(log_value("slowFailure", "0", slow), "slowFailure rule=0 status=500 delay_ms=250");
        assert_eq!(log_value("reset", "policy", Detail::default()), "reset rule=policy");
        assert_eq!(counter_name(Direction::Inbound, "abort", "checkout", Some(503)), "fault_injector.rule=.=checkout;.;kind=.=abort;.;status=.=503;.;faults_injected");
        assert_eq!(counter_name(Direction::Outbound, "delay", "3", None), "fault_injector.outbound.rule=.=3;.;kind=.=delay;.;faults_injected");
    }

    #[test]
    fn labelled_counters_are_defined_once_and_bounded() {
        let mut labelled = Labelled::default();
        let mut defined = 0;
        for _ in 0..3 {
            labelled.add("a".into(), "policy", |_| {
                defined += 1;
                Some(7)
            });
        }
        labelled.add("b".into(), "policy", |_| None);
        assert_eq!(defined, 1);
        assert_eq!(labelled.take().collect::<Vec<_>>(), [(7, 3)]);
        assert_eq!(labelled.take().count(), 0);
        for n in 0..MAX_SERIES + 10 {
            labelled.add(n.to_string(), "header", |_| Some(n as u32));
        }
        // "a" is one of them, with nothing waiting.
        assert_eq!(labelled.take().count(), MAX_SERIES - 1);
    }

    #[test]
    fn series_are_bounded_by_the_rules_in_force_not_every_name_seen() {
        let mut labelled = Labelled::default();
        let mut defined = 0u32;
        for round in 0..2000 {
            let rules = crate::model::document::parse(format!(r#"{{"rules": [{{"name": "r{round}", "fault": {{"abort": {{"status": 503}}}}}}]}}"#).as_bytes(), 0).unwrap().rules;
            labelled.retire(|rule| in_force(rule, &rules));
            let rule = rule_label(Source::Rule(0), &rules);
            labelled.add(counter_name(Direction::Inbound, "abort", &rule, Some(503)), &rule, |_| {
                defined += 1;
                Some(defined)
            });
            assert_eq!(labelled.take().collect::<Vec<_>>(), [(defined, 1)], "round {round}: the new rule gets its series");
        }
        assert_eq!((defined, labelled.len()), (2000, 1));
        // A name that comes back takes its id again: Envoy is not asked to define it twice.
        let back = crate::model::document::parse(br#"{"rules": [{"name": "r7", "fault": {"abort": {"status": 503}}}]}"#, 0).unwrap().rules;
        labelled.retire(|rule| in_force(rule, &back));
        assert!(labelled.is_empty());
        labelled.add(counter_name(Direction::Inbound, "abort", "r7", Some(503)), "r7", |_| {
            defined += 1;
            Some(defined)
        });
        assert_eq!(defined, 2000, "defined again");
        assert_eq!(labelled.take().collect::<Vec<_>>(), [(8, 1)]);
        // Unnamed rules go by index; header faults and the query policy are always in force.
        let unnamed = crate::model::document::parse(br#"{"rules": [{"name": "r7", "fault": {"abort": {"status": 503}}}, {"fault": {"abort": {"status": 500}}}]}"#, 0).unwrap().rules;
        assert!(in_force("1", &unnamed) && in_force("r7", &unnamed) && !in_force("0", &unnamed) && !in_force("2", &unnamed));
        assert!(in_force("header", &[]) && in_force("policy", &[]));
    }

    #[test]
    fn rule_counts_add_up_and_restart_with_other_rules() {
        let mut worker = RuleCounts { rules: 9, counts: Vec::new() };
        worker.note(1, true, 100);
        worker.note(1, false, 200);
        worker.injected(1, 120);
        let stored = worker.added_to(b"");
        let mut other = RuleCounts { rules: 9, counts: Vec::new() };
        other.note(0, false, 50);
        other.note(1, true, 150);
        let sum = RuleCounts::decode(&other.added_to(&stored));
        assert_eq!(sum.counts, [Count { matched: 1, injected: 0, last_ms: 0 }, Count { matched: 3, injected: 3, last_ms: 150 }]);
        let newer = RuleCounts { rules: 10, counts: vec![Count { matched: 1, injected: 0, last_ms: 0 }] };
        assert_eq!(RuleCounts::decode(&newer.added_to(&other.added_to(&stored))), newer);
        assert_eq!(RuleCounts::decode(b"short"), RuleCounts::default());
    }

    #[test]
    fn the_view_shows_counts_of_these_rules_only() {
        let state = crate::model::document::parse(br#"{"rules": [{"name": "a", "fault": {"abort": {"status": 503}}}, {"fault": {"abort": {"status": 500}}}]}"#, 0).unwrap();
        let mut counts = RuleCounts { rules: rules_id(&state.rules), counts: Vec::new() };
        counts.note(0, true, 42);
        let shown = view(&counts, &state.rules);
        assert_eq!(shown[0], serde_json::json!({"rule": "a", "matched": 1, "injected": 1, "last_fired_ms": 42}));
        assert_eq!(shown[1], serde_json::json!({"rule": "1", "matched": 0, "injected": 0, "last_fired_ms": 0}));
        counts.rules += 1;
        assert_eq!(view(&counts, &state.rules)[0]["matched"], 0);
    }
}
