//! The state of one root context, shared with the HTTP contexts it creates (same worker,
//! same thread): its configuration, its cached copy of the shared policy state, its place
//! on the notices roster, the requests it holds and the counts it has not handed over.

use super::notices::{self, Answer, ACK_DEADLINE_MS};
use super::{now_ms, now_ns, shared};
use crate::config::Config;
use crate::decide::{Detail, Source, Then};
use crate::guard::{self, Seen, Shown, Window};
use crate::delays::{self, DelayQueue, MS};
use crate::notices::{Done, Message, Waits};
use crate::observe::{self, Labelled, RuleCounts};
use crate::model::outbound::Direction;
use crate::model::matching::Index;
use crate::model::policy::State;
use crate::model::sampling::{identity_hash, Sampler};
use crate::stats::{self, Stat, Tally};
use crate::model::stored::Origin;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MetricType};
use std::rc::Rc;
use std::time::Duration;

/// One root context's state (one per plugin configuration per worker), shared with the
/// HTTP contexts it creates.
pub struct RootState {
    /// The plugin's configuration.
    pub config: Rc<Config>,
    /// The state last read from shared data.
    pub state: State,
    /// `state`'s rules and bindings indexed, built with it in [`RootState::adopt`].
    pub index: Index,
    /// The version stamp `state` was read at, when this root context has no queue for
    /// notices of writes (see [`RootState::refresh`]).
    version: Option<u64>,
    /// This root context's queue for notices of writes, once it is on the roster.
    queue: Option<u32>,
    /// Whether this root context asked to join the roster, which it does at its first request.
    joined: bool,
    /// The control calls waiting for the other root contexts to have their writes.
    pub waits: Waits<Answer>,
    /// When the next `ttl` change in `state` ends.
    expires: Option<u64>,
    /// Rolls the sampling dice.
    pub sampler: Sampler,
    /// The requests this worker holds.
    pub delays: DelayQueue,
    /// The responses this worker holds (`response_delay` rules).
    pub response_delays: DelayQueue,
    /// The requests this worker handed to Envoy's fault filter to hold, counted in
    /// `active_delays` until a tick finds them due or they end; they arm no timer.
    pub handed: DelayQueue,
    /// What held requests get instead of going on (a reset, a slow failure's answer).
    pub then: Vec<(u32, Then)>,
    /// Cut responses whose stream is reset at the next tick.
    pub resets: DelayQueue,
    root_id: u32,
    armed_until: Option<u64>,
    metrics: Vec<u32>,
    /// Counter increments not handed to Envoy yet.
    unflushed: Tally,
    /// When the tick hands `unflushed` over (ns); `None` while it is not scheduled.
    flush_due: Option<u64>,
    /// Labelled counter increments not handed to Envoy yet.
    labelled: Labelled,
    /// Per-rule counts not added to the shared ones yet, of the rules in `state`.
    rule_counts: RuleCounts,
    /// Real requests seen under the guard, added to the shared window at the next flush.
    seen: Seen,
    /// When the first of the requests in `seen` started.
    seen_from_ms: u64,
    /// Whether requests the filter leaves alone are counted for a guard: one is set, it has
    /// not tripped, and a fault is in force.
    pub guarding: bool,
}

/// A fault on the response body, as its request was observed: what it will be told as if
/// the answer has a body to apply it to.
pub struct Deferred {
    /// The label of its rule (or `policy`, `header`).
    rule: String,
    /// The index of its rule, if a rule.
    at: Option<usize>,
    /// Which rules `at` is an index in ([`RuleCounts::rules`]).
    rules: u64,
    /// Its status and delay, for the labels and the access log.
    detail: Detail,
}

/// What a tick of the root context's timer found due.
pub struct Due {
    /// Held requests to resume.
    pub requests: Vec<u32>,
    /// Held responses to resume.
    pub responses: Vec<u32>,
    /// Held requests that get something else than going on.
    pub then: Vec<(u32, Then)>,
    /// Cut responses to reset.
    pub resets: Vec<u32>,
    /// Control calls whose wait ended without every acknowledgement.
    pub unconfirmed: Vec<Done<Answer>>,
    /// When the timer should fire next (ns).
    pub next: Option<u64>,
}

impl RootState {
    /// The state of root context `root_id` before configuration.
    pub fn new(root_id: u32) -> RootState {
        // From the host's random source (WASI random_get in Envoy), once: every worker, and
        // every Envoy started at once, draws its own stream. Per request the sampler steps
        // SplitMix64, a few instructions where random_get would be a call out of the VM.
        // Should the host refuse, the clock and the context id still tell workers apart.
        let seed = getrandom::u64().unwrap_or_else(|_| identity_hash(&[&now_ms().to_le_bytes(), &root_id.to_le_bytes()]));
        RootState {
            config: Rc::new(Config::default()),
            state: State::default(),
            index: Index::default(),
            version: None,
            queue: None,
            joined: false,
            waits: Waits::default(),
            expires: None,
            sampler: Sampler::new(seed),
            delays: DelayQueue::default(),
            response_delays: DelayQueue::default(),
            handed: DelayQueue::default(),
            then: Vec::new(),
            resets: DelayQueue::default(),
            root_id,
            armed_until: None,
            metrics: Vec::new(),
            unflushed: Tally::default(),
            flush_due: None,
            labelled: Labelled::default(),
            rule_counts: RuleCounts::default(),
            seen: Seen::default(),
            seen_from_ms: 0,
            guarding: false,
        }
    }

    /// Takes `config`, parsed from bytes whose origin is `origin`, and installs its start
    /// policy if no root context did for this configuration yet.
    pub fn configure(&mut self, config: Config, origin: Origin) {
        // A new configuration for a running root context: its counts so far are kept.
        self.flush();
        // Before the start policy is written, which moves the state_version gauge.
        self.metrics = stats::ALL
            .iter()
            .map(|m| {
                let kind = if m.gauge { MetricType::Gauge } else { MetricType::Counter };
                hostcalls::define_metric(kind, &stats::name(m, config.direction)).unwrap_or(u32::MAX)
            })
            .collect();
        // Every worker (and every listener sharing this VM id) configures; only the first
        // to see a new configuration installs its start policy, so it replaces the policy
        // once. Listeners sharing a VM id should share one configuration (see control.port).
        // An outbound listener has no start policy: it shares the inbound side's.
        let inbound = config.direction == Direction::Inbound;
        let applied = shared::update(&|_, stored| Ok((inbound && *stored != origin).then(|| (config.start.clone(), origin.clone()))));
        if let Ok(Some((_, origin))) = applied {
            shared::forget_guard_window(now_ms());
            self.count(Stat::StateVersion, 1);
            log::info!("fault-injector: start policy of configuration {} is in force", origin.view());
            // Root contexts still on an older configuration serve until Envoy drains them.
            // This one has no queue yet (it joins at its first request), so they acknowledge
            // to nobody, and nothing waits.
            let seq = self.waits.next_seq();
            self.notify(seq);
        }
        shared::create_retry_shards();
        self.config = Rc::new(config);
        self.version = None;
        self.reload();
    }

    /// Brings `state` up to date before a request is decided. Writes reach this root context
    /// as notices on its queue, so a request asks Envoy nothing. Without a queue, it looks at
    /// the version stamp, the `state_version` gauge, which every write moves: one host call,
    /// where reading shared data makes Envoy call back into the module to allocate the copy.
    /// A gauge (unlike a counter) is not zeroed by the admin `/reset_counters`, so a stamp
    /// never comes back.
    pub fn refresh(&mut self) {
        if !self.joined {
            self.join();
        } else if self.queue.is_none() {
            let version = self.metric(Stat::StateVersion);
            if version.is_none() || version != self.version {
                self.reload();
                self.version = version;
            }
        }
        // Every worker ends `ttl` changes on its own copy at the same time; the shared copy
        // is tidied by the next write.
        if let Some(until) = self.expires {
            let now = now_ms();
            if now >= until {
                let mut state = std::mem::take(&mut self.state);
                state.settle(now);
                self.adopt(state);
            }
        }
    }

    /// Puts this root context on the roster at its first request or control call, then
    /// reads the state: a write made before it joined is one it reads. Not in on_configure:
    /// Envoy also configures the plugin on its main thread, whose root context serves
    /// nothing and never answers a notice. Joined there, every control call on a 2-worker
    /// Envoy waited out the deadline for one root context. On failure it stays off the
    /// roster, and its requests look at the version stamp instead.
    pub fn join(&mut self) {
        if !self.joined {
            self.joined = true;
            self.queue = notices::join();
            self.version = None;
            self.reload();
        }
    }

    /// Envoy is done with this root context (shutdown, or a new configuration): hands its
    /// counts over, leaves the roster, and returns the control calls it still holds.
    pub fn done(&mut self) -> Vec<Done<Answer>> {
        self.flush();
        if let Some(token) = self.queue.take() {
            notices::leave(token);
        }
        self.waits.expired(u64::MAX)
    }

    /// Reads the shared state.
    pub fn reload(&mut self) {
        self.adopt(shared::state());
    }

    /// Takes `state` as the current one (this root context just wrote it, or read it).
    pub fn adopt(&mut self, mut state: State) {
        state.resolve(&self.config.simple_response);
        self.expires = state.next_expiry();
        self.index = Index::of(&state);
        self.state = state;
        self.guarding = self.state.guard.is_some() && self.state.halted.is_none() && !self.state.is_idle();
        self.recount();
    }

    /// Drops the per-rule counts not handed over if the rules changed: they count rules
    /// that are gone, or were elsewhere in the list.
    fn recount(&mut self) {
        let rules = observe::rules_id(&self.state.rules);
        if rules != self.rule_counts.rules {
            self.rule_counts = RuleCounts { rules, counts: Vec::new() };
            // Series of rules no longer in force leave room for the new ones, once what
            // they wait is handed over.
            for (id, delta) in self.labelled.take() {
                let _ = hostcalls::increment_metric(id, delta);
            }
            let current = &self.state.rules;
            self.labelled.retire(|rule| observe::in_force(rule, current));
        }
    }

    /// Tells what a request's decision did, beyond the plain counters: the rule it matched
    /// is counted; a fault (counted as `counted`) gets its labelled counter and its value in
    /// filter state for the access log. Not called for a request no rule or fault touched.
    pub fn observe(&mut self, source: Source, counted: Stat, detail: Detail) {
        if source == Source::Halted {
            // The access log tells requests a tripped guard let through from those no
            // fault was meant for.
            super::set_filter_state(observe::HALTED.as_bytes());
            return;
        }
        let kind = observe::kind(counted);
        if let Source::Rule(at) = source {
            self.rule_counts.note(at, kind.is_some(), now_ms());
        }
        let Some(kind) = kind else { return };
        let rule = observe::rule_label(source, &self.state.rules);
        self.tell(kind, &rule, detail);
    }

    /// Where a fault on the response body would come from, told when the request went
    /// through (the rules may change before the answer comes): counted as a match now.
    pub fn observe_body_fault(&mut self, source: Source, detail: Detail) -> Deferred {
        self.observe(source, Stat::RequestsPassed, detail);
        let at = match source {
            Source::Rule(at) => Some(at),
            _ => None,
        };
        Deferred { rule: observe::rule_label(source, &self.state.rules), at, rules: self.rule_counts.rules, detail }
    }

    /// A fault on the response body, `deferred` when its request went through, was applied
    /// (counted as `counted`): it is counted, labelled and logged now.
    pub fn applied(&mut self, deferred: &Deferred, counted: Stat) {
        self.count(counted, 1);
        let Some(kind) = observe::kind(counted) else { return };
        if let Some(at) = deferred.at.filter(|_| deferred.rules == self.rule_counts.rules) {
            self.rule_counts.injected(at, now_ms());
        }
        self.tell(kind, &deferred.rule, deferred.detail);
    }

    /// Gives fault `kind` from `rule` its labelled counter and its value in filter state
    /// for the access log.
    fn tell(&mut self, kind: &str, rule: &str, detail: Detail) {
        let name = observe::counter_name(self.config.direction, kind, rule, detail.status);
        self.labelled.add(name, rule, |name| hostcalls::define_metric(MetricType::Counter, name).ok());
        super::set_filter_state(observe::log_value(kind, rule, detail).as_bytes());
    }

    /// Sends every other root context on the roster a notice of write `seq`; returns those
    /// it reached. Called after the write: one that joins later reads the state itself.
    fn notify(&self, seq: u64) -> Vec<u32> {
        notices::notify(self.queue.unwrap_or(0), seq)
    }

    /// Answers the control call that wrote the state, `answer`, once every other root
    /// context has the write: at once if there are none, or if this one has no queue to
    /// hear them on (then saying how many it could not wait for).
    pub fn publish(&mut self, context: u32, answer: Answer) -> Action {
        let seq = self.waits.next_seq();
        let awaiting = self.notify(seq);
        if awaiting.is_empty() {
            return notices::confirmed(&answer);
        }
        if self.queue.is_none() {
            return notices::unconfirmed(&answer, awaiting.len());
        }
        let now = now_ns();
        let deadline = now / MS + ACK_DEADLINE_MS;
        self.waits.hold(seq, context, awaiting, deadline, answer);
        self.arm(deadline * MS, now, context);
        Action::Pause
    }

    /// Reads what waits on this root context's queue: re-reads the state on a notice and
    /// acknowledges it; returns the held control calls that acknowledgements complete.
    pub fn receive(&mut self) -> Vec<Done<Answer>> {
        let Some(me) = self.queue else { return Vec::new() };
        let mut done = Vec::new();
        while let Some(message) = notices::next(me) {
            match message {
                Message::Notice { seq, reply_to } => {
                    self.reload();
                    notices::acknowledge(reply_to, seq, me);
                }
                Message::Ack { seq, from } => done.extend(self.waits.ack(seq, from)),
            }
        }
        done
    }

    /// Adds to a gauge now, or to a counter at the next flush (`stats_flush`).
    pub fn count(&self, stat: Stat, delta: i64) {
        if !stats::ALL[stat as usize].gauge {
            self.unflushed.add(stat, delta);
        } else if let Some(id) = self.metrics.get(stat as usize) {
            let _ = hostcalls::increment_metric(*id, delta);
        }
    }

    /// Schedules a flush if counts wait and none is scheduled: called once a context is done
    /// counting, with its id, as [`RootState::arm`] needs.
    pub fn flush_soon(&mut self, current_context: u32) {
        if self.flush_due.is_none() && (!self.unflushed.is_empty() || self.seen[0] > 0) {
            let now = now_ns();
            let due = now + self.config.stats_flush.0 * MS;
            self.flush_due = Some(due);
            self.arm(due, now, current_context);
        }
    }

    /// Counts a real request (one the filter left alone) that ended while a guard was on:
    /// its final status, Envoy's `response.code_details`, and when it started and ended.
    pub fn saw(&mut self, status: u64, details: &str, started_ms: u64, now_ms: u64) {
        if let Some(g) = &self.state.guard {
            self.seen_from_ms = if self.seen[0] == 0 { started_ms } else { self.seen_from_ms.min(started_ms) };
            guard::record(&mut self.seen, g, status, details, now_ms.saturating_sub(started_ms));
        }
    }

    /// Adds what this worker saw under the guard to the window all workers share and, if a
    /// condition trips, halts injection everywhere. Only the worker whose write halts it
    /// counts and logs the trip; it tells the others as a control call does.
    fn check_guard(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        let Some(g) = self.state.guard.clone().filter(|_| seen[0] > 0 && self.guarding) else { return };
        let now = now_ms();
        let mut trip = None;
        shared::rewrite(shared::GUARD_KEY, |bytes| {
            let mut window = Window::decode(bytes);
            window.add(&g, self.seen_from_ms, now, seen);
            trip = window.evaluate(&g, now);
            window.encode()
        });
        let Some(trip) = trip.map(|t| Shown(Rc::new(t))) else { return };
        // Not when another worker halted first, or a write took the guard away meanwhile.
        let halt = |state: &State, origin: &Origin| {
            let fresh = state.guard.is_some() && state.halted.is_none();
            Ok(fresh.then(|| (State { halted: Some(trip.clone()), ..state.clone() }, origin.clone())))
        };
        if let Ok(Some((state, _))) = shared::update(&halt) {
            self.count(Stat::StateVersion, 1);
            self.count(Stat::GuardTrips, 1);
            log::warn!("fault-injector: guard tripped; injection halted until /injector?resume or a new policy: {}", trip.0);
            self.adopt(state);
            let seq = self.waits.next_seq();
            self.notify(seq);
        }
    }

    /// Hands the waiting counts to Envoy.
    fn flush(&mut self) {
        self.check_guard();
        for (stat, delta) in self.unflushed.take() {
            if let Some(id) = self.metrics.get(stat) {
                let _ = hostcalls::increment_metric(*id, delta);
            }
        }
        for (id, delta) in self.labelled.take() {
            let _ = hostcalls::increment_metric(id, delta);
        }
        if !self.rule_counts.counts.is_empty() {
            shared::rewrite(observe::RULE_COUNTS_KEY, |stored| self.rule_counts.added_to(stored));
            self.rule_counts.counts.clear();
        }
        self.flush_due = None;
    }

    /// A gauge's value for the whole Envoy (all workers add to the same one).
    pub fn gauge(&self, stat: Stat) -> u64 {
        self.metric(stat).unwrap_or(0)
    }

    /// The id Envoy gave a metric.
    pub fn metric_id(&self, stat: Stat) -> Option<u32> {
        self.metrics.get(stat as usize).copied()
    }

    fn metric(&self, stat: Stat) -> Option<u64> {
        self.metrics.get(stat as usize).and_then(|id| hostcalls::get_metric(*id).ok())
    }

    /// Makes sure the tick timer fires by `due_ns` (not before it), counted from `now` (ns).
    /// The timer belongs to the root context. Envoy's `Wasm::setTickPeriod` disables the
    /// running timer and starts a new one at once, so an earlier due re-arms it now, not at
    /// its next tick.
    pub fn arm(&mut self, due_ns: u64, now: u64, current_context: u32) {
        if self.armed_until.is_some_and(|armed| armed <= due_ns) {
            return;
        }
        self.armed_until = Some(due_ns);
        let _ = hostcalls::set_effective_context(self.root_id);
        let _ = hostcalls::set_tick_period(Duration::from_millis(delays::tick_period_ms(Some(due_ns), now)));
        if current_context != self.root_id {
            let _ = hostcalls::set_effective_context(current_context);
        }
    }

    /// Takes what is due at `now` (ns) from the timer's point of view: held requests and
    /// responses, the counts to hand over, control calls whose wait ended.
    pub fn tick(&mut self, now: u64) -> Due {
        let mut requests = self.delays.take_due(now);
        let responses = self.response_delays.take_due(now);
        let handed = self.handed.take_due(now);
        self.count(Stat::ActiveDelays, -((requests.len() + responses.len() + handed.len()) as i64));
        let mut then = Vec::new();
        requests.retain(|id| match self.take_then(*id) {
            Some(t) => {
                then.push((*id, t));
                false
            }
            None => true,
        });
        let resets = self.resets.take_due(now);
        if self.flush_due.is_some_and(|due| due <= now) {
            self.flush();
        }
        let unconfirmed = self.waits.expired(now / MS);
        let due = [
            self.delays.next_due(),
            self.response_delays.next_due(),
            self.flush_due,
            self.waits.next_deadline().map(|ms| ms * MS),
            self.resets.next_due(),
        ];
        let next = due.into_iter().flatten().min();
        self.armed_until = next;
        Due { requests, responses, then, resets, unconfirmed, next }
    }

    /// Whether a held request or response is due at `now` (ns).
    pub fn holds_due(&self, now: u64) -> bool {
        self.delays.any_due(now) || self.response_delays.any_due(now)
    }

    /// Whether this worker holds a request or a response.
    pub fn holds_any(&self) -> bool {
        self.delays.next_due().is_some() || self.response_delays.next_due().is_some()
    }

    /// What held request `id` gets when due, if not going on; forgotten once taken.
    pub fn take_then(&mut self, id: u32) -> Option<Then> {
        let at = self.then.iter().position(|(held, _)| *held == id)?;
        Some(self.then.swap_remove(at).1)
    }

    /// Sets the timer's next period, from `now` (ns), to fire at `next` (ns) or just after.
    pub fn rearm(&self, next: Option<u64>, now: u64) {
        let _ = hostcalls::set_effective_context(self.root_id);
        let _ = hostcalls::set_tick_period(Duration::from_millis(delays::tick_period_ms(next, now)));
    }
}
