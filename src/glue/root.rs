//! The root context: one per listener per worker. It parses the configuration, applies its
//! start policy once for the whole Envoy, keeps this worker's cached view of the shared
//! state, and releases held requests from its tick timer.

use super::http::Request;
use super::peers::{self, Answer};
use super::{log, now_ms, shared};
use crate::config::Config;
use crate::stored::Origin;
use crate::delays::DelayQueue;
use crate::peers::Waits;
use crate::policy::State;
use crate::sampling::{identity_hash, Sampler};
use crate::stats::{self, Stat, Tally};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, MetricType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// What the root context shares with the HTTP contexts it creates (same worker, same thread).
pub struct Worker {
    /// This listener's configuration.
    pub config: Rc<Config>,
    /// The state last read from shared data.
    pub state: State,
    /// The version stamp `state` was read at, when this root context has no queue for
    /// notices of writes (see [`Worker::refresh`]).
    version: Option<u64>,
    /// This root context's queue for notices of writes, once it is on the roster (`peers`).
    pub queue: Option<u32>,
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
    root_id: u32,
    armed_until: Option<u64>,
    metrics: Vec<u32>,
    /// Counter increments not handed to Envoy yet.
    unflushed: Tally,
    /// When the tick hands `unflushed` over; `None` while it is not scheduled.
    flush_due: Option<u64>,
}

impl Worker {
    /// Brings `state` up to date before a request is decided. Writes reach this root context
    /// as notices on its queue (`peers`), so a request asks Envoy nothing. Without a queue,
    /// it looks at the version stamp, the `state_version` gauge, which every write moves:
    /// one host call, where reading shared data makes Envoy call back into the module to
    /// allocate the copy. A gauge (unlike a counter) is not zeroed by the admin
    /// `/reset_counters`, so a stamp never comes back.
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
                self.state.settle(now);
                self.expires = self.state.next_expiry();
            }
        }
    }

    /// Puts this root context on the roster (`peers::join`) at its first request or control
    /// call, then reads the state. Not in on_configure: Envoy also configures the plugin on
    /// its main thread, whose root context serves nothing and never answers a notice. Joined
    /// there, every control call on a 2-worker Envoy waited out the deadline for one root
    /// context.
    pub fn join(&mut self) {
        if !self.joined {
            self.joined = true;
            peers::join(self);
            self.version = None;
            self.reload();
        }
    }

    /// Reads the shared state.
    pub fn reload(&mut self) {
        self.adopt(shared::state());
    }

    /// Takes `state` as the current one (this root context just wrote it, or read it).
    pub fn adopt(&mut self, state: State) {
        self.expires = state.next_expiry();
        self.state = state;
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
    /// counting, with its id, as [`Worker::arm`] needs.
    pub fn flush_soon(&mut self, current_context: u32) {
        if self.flush_due.is_none() && !self.unflushed.is_empty() {
            let now = now_ms();
            let due = now + self.config.stats_flush.0;
            self.flush_due = Some(due);
            self.arm(due, now, current_context);
        }
    }

    /// Hands the waiting counts to Envoy.
    fn flush(&mut self) {
        for (stat, delta) in self.unflushed.take() {
            if let Some(id) = self.metrics.get(stat) {
                let _ = hostcalls::increment_metric(*id, delta);
            }
        }
        self.flush_due = None;
    }

    /// A gauge's value for the whole Envoy (all workers add to the same one).
    pub fn read(&self, stat: Stat) -> u64 {
        self.metric(stat).unwrap_or(0)
    }

    /// The id Envoy gave a metric.
    pub fn metric_id(&self, stat: Stat) -> Option<u32> {
        self.metrics.get(stat as usize).copied()
    }

    fn metric(&self, stat: Stat) -> Option<u64> {
        self.metrics.get(stat as usize).and_then(|id| hostcalls::get_metric(*id).ok())
    }

    /// Makes sure the tick timer fires by `due_ms`. The timer belongs to the root context.
    pub fn arm(&mut self, due_ms: u64, now: u64, current_context: u32) {
        if self.armed_until.is_some_and(|armed| armed <= due_ms) {
            return;
        }
        self.armed_until = Some(due_ms);
        let _ = hostcalls::set_effective_context(self.root_id);
        let _ = hostcalls::set_tick_period(Duration::from_millis(due_ms.saturating_sub(now).max(1)));
        if current_context != self.root_id {
            let _ = hostcalls::set_effective_context(current_context);
        }
    }
}

/// The root context.
pub struct Root {
    worker: Rc<RefCell<Worker>>,
}

impl Root {
    /// A root context before configuration.
    pub fn new(id: u32) -> Root {
        let seed = identity_hash(&[&now_ms().to_le_bytes(), &id.to_le_bytes()]);
        Root {
            worker: Rc::new(RefCell::new(Worker {
                config: Rc::new(Config::default()),
                state: State::default(),
                version: None,
                queue: None,
                joined: false,
                waits: Waits::default(),
                expires: None,
                sampler: Sampler::new(seed),
                delays: DelayQueue::default(),
                response_delays: DelayQueue::default(),
                root_id: id,
                armed_until: None,
                metrics: Vec::new(),
                unflushed: Tally::default(),
                flush_due: None,
            })),
        }
    }
}

impl Context for Root {
    /// Envoy is done with this root context (shutdown, or a new configuration): what waits
    /// is counted now or never.
    fn on_done(&mut self) -> bool {
        let held = {
            let mut worker = self.worker.borrow_mut();
            worker.flush();
            peers::leave(&mut worker);
            worker.waits.expired(u64::MAX)
        };
        // Their deadline would have come on this root context's timer.
        held.into_iter().for_each(peers::answer);
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log(LogLevel::Error, &e.to_string());
                return false;
            }
        };
        let mut worker = self.worker.borrow_mut();
        // A new configuration for a running root context: its counts so far are kept.
        worker.flush();
        // Before the start policy is written, which moves the state_version gauge.
        worker.metrics = stats::ALL
            .iter()
            .map(|m| {
                let kind = if m.gauge { MetricType::Gauge } else { MetricType::Counter };
                hostcalls::define_metric(kind, m.name).unwrap_or(u32::MAX)
            })
            .collect();
        // Every worker (and every listener sharing this VM id) configures; only the first
        // to see a new configuration installs its start policy, so it replaces the policy
        // once. Listeners sharing a VM id should share one configuration (see control.port).
        let origin = Origin::of(&bytes, &config);
        let applied = shared::update::<()>(&worker, |_, stored| Ok((*stored != origin).then(|| (config.start.clone(), origin.clone()))));
        if let Ok(Some((_, origin))) = applied {
            let id = origin.view();
            log(LogLevel::Info, &format!("fault-injector: start policy of configuration {id} is in force"));
            // Root contexts still on an older configuration serve until Envoy drains them.
            // This one has no queue yet (it joins at its first request), so they acknowledge
            // to nobody, and nothing waits.
            let seq = worker.waits.next_seq();
            peers::notify(&worker, seq);
        }
        shared::create_retry_shards();
        worker.config = Rc::new(config);
        worker.version = None;
        worker.reload();
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        let (requests, responses, unconfirmed, next) = {
            let mut worker = self.worker.borrow_mut();
            let requests = worker.delays.take_due(now);
            let responses = worker.response_delays.take_due(now);
            worker.count(Stat::ActiveDelays, -((requests.len() + responses.len()) as i64));
            if worker.flush_due.is_some_and(|due| due <= now) {
                worker.flush();
            }
            let unconfirmed = worker.waits.expired(now);
            let due = [worker.delays.next_due(), worker.response_delays.next_due(), worker.flush_due, worker.waits.next_deadline()];
            let next = due.into_iter().flatten().min();
            worker.armed_until = next;
            (requests, responses, unconfirmed, next)
        };
        unconfirmed.into_iter().for_each(peers::answer);
        // Resuming can run other filters at once; the worker is not borrowed meanwhile.
        for id in &requests {
            if hostcalls::set_effective_context(*id).is_ok() {
                let _ = hostcalls::resume_http_request();
            }
        }
        for id in &responses {
            if hostcalls::set_effective_context(*id).is_ok() {
                let _ = hostcalls::resume_http_response();
            }
        }
        // Envoy starts the next period when this returns, and forwarding a burst of released
        // requests takes milliseconds: measured from `now` above, the next ones would be late
        // by as long.
        let now = if requests.is_empty() && responses.is_empty() { now } else { now_ms() };
        let period = next.map_or(0, |n| n.saturating_sub(now).max(1));
        let _ = hostcalls::set_effective_context(self.worker.borrow().root_id);
        let _ = hostcalls::set_tick_period(Duration::from_millis(period));
    }

    fn on_queue_ready(&mut self, _queue_id: u32) {
        let done = peers::receive(&mut self.worker.borrow_mut());
        done.into_iter().for_each(peers::answer);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(context_id, Rc::clone(&self.worker))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
