//! The root context: one per plugin configuration per worker. Listeners that take the same
//! configuration share it, whatever their metadata or traffic direction (Envoy 1.40;
//! BENCHMARKS.md), as envoy/sidecar.yaml's data and control listeners do. It reads the
//! configuration, hands its state ([`RootState`]) to the HTTP contexts it creates, answers
//! notices on its queue, and releases held requests from its tick timer.

use super::body;
use super::notices;
use super::root_state::{Due, RootState};
use super::now_ns;
use super::reply;
use crate::config::Config;
use crate::decide::Then;
use crate::model::stored::Origin;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, StreamType};
use std::cell::RefCell;
use std::rc::Rc;

/// The most times one tick takes what fell due while it released the last.
const MAX_ROUNDS: u32 = 4;

/// Carries out what a tick found due. Resuming can run other filters at once; the worker
/// is not borrowed meanwhile.
fn release(due: Due) {
    due.unconfirmed.into_iter().for_each(notices::answer);
    for id in &due.requests {
        if hostcalls::set_effective_context(*id).is_ok() {
            let _ = hostcalls::resume_http_request();
        }
    }
    for id in &due.responses {
        if hostcalls::set_effective_context(*id).is_ok() {
            let _ = hostcalls::resume_http_response();
        }
    }
    for (id, then) in &due.then {
        if hostcalls::set_effective_context(*id).is_ok() {
            match then {
                Then::Reset => body::reset(StreamType::HttpRequest),
                Then::Fail(answer) => {
                    reply::send(answer);
                }
            }
        }
    }
    for id in &due.resets {
        if hostcalls::set_effective_context(*id).is_ok() {
            body::reset(StreamType::HttpResponse);
        }
    }
}

/// Releases what fell due on this worker, from a callback of HTTP context `current`, which is
/// the effective context again on return. The tick timer runs on the clock Envoy's event loop
/// caches, which libevent reads from CLOCK_MONOTONIC_COARSE: it moves once per kernel tick
/// (4 ms with HZ=250), so a tick fires at most once per kernel tick, just after one, and held
/// requests waited 2 ms on average past their time. A busy worker ends requests far more often.
pub fn release_due(worker: &RefCell<RootState>, current: u32) {
    if !worker.borrow().holds_any() {
        return;
    }
    let now = now_ns();
    if !worker.borrow().holds_due(now) {
        return;
    }
    let due = worker.borrow_mut().tick(now);
    release(due);
    let _ = hostcalls::set_effective_context(current);
}

/// Makes the HTTP context of a request (its id) on the worker whose state this is. Given to
/// the root context by the entry point, so this module does not import the HTTP context,
/// which imports [`release_due`] from here.
pub type NewRequest = fn(u32, Rc<RefCell<RootState>>) -> Box<dyn HttpContext>;

/// The root context.
pub struct Root {
    worker: Rc<RefCell<RootState>>,
    new_request: NewRequest,
}

impl Root {
    /// A root context before configuration, whose requests `new_request` makes contexts for.
    pub fn new(id: u32, new_request: NewRequest) -> Root {
        Root { worker: Rc::new(RefCell::new(RootState::new(id))), new_request }
    }
}

impl Context for Root {
    /// Envoy is done with this root context (shutdown, or a new configuration): what waits
    /// is counted now or never.
    fn on_done(&mut self) -> bool {
        let held = self.worker.borrow_mut().done();
        // Their deadline would have come on this root context's timer.
        held.into_iter().for_each(notices::answer);
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let origin = Origin::of(&bytes, &config);
        self.worker.borrow_mut().configure(config, origin);
        true
    }

    fn on_tick(&mut self) {
        let mut now = now_ns();
        for round in 1.. {
            let due = self.worker.borrow_mut().tick(now);
            let next = due.next;
            release(due);
            // Envoy starts the next period when this returns, and releasing a burst takes
            // milliseconds: what fell due meanwhile goes now rather than a period later. A
            // few rounds at most, so a flood of holds cannot keep the worker here.
            now = now_ns();
            if round == MAX_ROUNDS || next.is_none_or(|next| next > now) {
                self.worker.borrow().rearm(next, now);
                return;
            }
        }
    }

    fn on_queue_ready(&mut self, _queue_id: u32) {
        let done = self.worker.borrow_mut().receive();
        done.into_iter().for_each(notices::answer);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some((self.new_request)(context_id, Rc::clone(&self.worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
