//! The HTTP context: one per request. [`decide`](crate::decide::decide) says what happens
//! to the request; this carries it out, on the request or on its response, and counts it.

use super::body::{self, BodyFault, Step};
use super::reply;
use super::root_state::{Deferred, RootState};
use super::{control_route, now_ms, now_ns, shared};
use crate::config::MAX_FILTER_STATE_KEY;
use crate::control::access::Caller;
use crate::control::page;
use crate::delays::{self, MS};
use crate::decide::{self, Answered, Decision, OnResponse, Reply, Source, Then, DIRECTION, INJECTED};
use crate::model::duration::Millis;
use crate::model::net;
use crate::model::outbound::Direction;
use crate::faults::retries::Attempt;
use crate::model::rules::RequestView;
use crate::stats::Stat;
use crate::faults::throttle::RATE_HEADER;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status, StreamType};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

/// The local port the request arrived at (Envoy's `destination.port`).
fn local_port() -> Option<u16> {
    let bytes = hostcalls::get_property(vec!["destination", "port"]).ok().flatten()?;
    net::parse_port_property(&bytes)
}

extern "C" {
    fn proxy_get_property(path: *const u8, path_size: usize, value: *mut *mut u8, value_size: *mut usize) -> Status;
}

/// Whether the request's connection carries the filter-state object `key`. Finding nothing
/// is cheap: Envoy copies nothing into the module. Every request of a listener that sets
/// `control.filter_state` asks, so this calls the host directly with the path built on the
/// stack: the SDK's `get_property` allocates twice to build it, which cost 1.1k of the 4.1k
/// instructions the lookup took (README, "Benchmarks").
fn on_marked_connection(key: &str) -> bool {
    const PREFIX: &[u8] = b"filter_state\0";
    let mut path = [0u8; PREFIX.len() + MAX_FILTER_STATE_KEY];
    let size = PREFIX.len() + key.len();
    let Some(at) = path.get_mut(..size) else { return false };
    at[..PREFIX.len()].copy_from_slice(PREFIX);
    at[PREFIX.len()..].copy_from_slice(key.as_bytes());
    let (mut value, mut value_size) = (std::ptr::null_mut(), 0);
    // SAFETY: `path` holds `size` initialised bytes, and the host writes the two out
    // parameters only. What it finds it hands over in a buffer it allocated through this
    // module's allocator (proxy_on_memory_allocate), as the SDK's get_property takes it back.
    match unsafe { proxy_get_property(path.as_ptr(), size, &mut value, &mut value_size) } {
        Status::Ok if !value.is_null() => {
            // SAFETY: as above; the buffer is `value_size` bytes, all of them the value.
            drop(unsafe { Vec::from_raw_parts(value, value_size, value_size) });
            true
        }
        _ => false,
    }
}

fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
}

fn set_request_header(name: &str, value: &str) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
}

/// Has Envoy's fault filter after this one act on the request ([`delays::MARK`]), with
/// none of the `x-envoy-fault-*` headers its client sent.
fn mark_for_envoy_fault_filter() {
    for name in delays::CLIENT_HEADERS {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
    }
    set_request_header(delays::MARK, "1");
}

/// The client: the TCP peer, or with `trusted_hops` what trusted proxies forwarded
/// (`net::client`); an address Envoy took from `X-Forwarded-For` is none.
fn client(trusted_hops: u32) -> Result<IpAddr, net::NoClient> {
    let bytes = hostcalls::get_property(vec!["source", "address"]).ok().flatten();
    let source = bytes.as_deref().and_then(|b| std::str::from_utf8(b).ok());
    net::client(source, trusted_hops, || header("x-forwarded-for"))
}

/// Envoy's `source.address` or `destination.address` (for a listener that restores it
/// with `original_dst`, the address the app called).
fn address(side: &str) -> Option<IpAddr> {
    let bytes = hostcalls::get_property(vec![side, "address"]).ok().flatten()?;
    net::parse_socket_address(std::str::from_utf8(&bytes).ok()?)
}

/// What `decide` reads of a request, each read from Envoy at most once and only when it
/// asks: every read is a host call that copies the value into the module.
struct RequestInfo {
    path: Option<String>,
    method: Option<String>,
    client: Option<Result<IpAddr, net::NoClient>>,
    /// The plugin's `xff_num_trusted_hops`.
    trusted_hops: u32,
    /// The `active_delays` gauge's id.
    active_delays: Option<u32>,
}

impl RequestInfo {
    fn new(worker: &RootState) -> RequestInfo {
        let trusted_hops = worker.config.xff_num_trusted_hops;
        RequestInfo { path: None, method: None, client: None, trusted_hops, active_delays: worker.metric_id(Stat::ActiveDelays) }
    }

    /// The client address, read once; bindings and rules by client see none where it
    /// came from a header ([`net::client`]).
    fn client_address(&mut self) -> Result<IpAddr, net::NoClient> {
        let trusted_hops = self.trusted_hops;
        *self.client.get_or_insert_with(|| client(trusted_hops))
    }
}

impl RequestView for RequestInfo {
    fn path(&mut self) -> String {
        let path = decide::Request::target(self);
        path.split_once('?').map_or(path, |(route, _)| route).to_string()
    }
    fn method(&mut self) -> String {
        self.method.get_or_insert_with(|| header(":method").unwrap_or_default()).clone()
    }
    fn header(&mut self, name: &str) -> Option<String> {
        header(name)
    }
    fn client(&mut self) -> Option<IpAddr> {
        self.client_address().ok()
    }
    fn destination(&mut self) -> Option<IpAddr> {
        address("destination")
    }
}

impl decide::Request for RequestInfo {
    fn target(&mut self) -> &str {
        self.path.get_or_insert_with(|| header(":path").unwrap_or_default())
    }
    fn marked(&mut self, key: &str) -> bool {
        on_marked_connection(key)
    }
    fn local_port(&mut self) -> Option<u16> {
        local_port()
    }
    fn active_delays(&mut self) -> u64 {
        self.active_delays.and_then(|id| hostcalls::get_metric(id).ok()).unwrap_or(0)
    }
}

/// How long after a cut the stream is reset: long enough for the codec to write what the
/// cut let through. With 5 ms, an HTTP/2 client whose whole short body came in one piece
/// with its end got the reset before the response headers; with 30 ms it gets them.
const CUT_RESET_MS: u64 = 30;

/// One request's context.
pub struct Request {
    id: u32,
    worker: Rc<RefCell<RootState>>,
    /// When this request (or its response) is due to be released (ns), while it is held (or was).
    held_until: Option<u64>,
    /// Whether what is held is the response.
    holding_response: bool,
    on_response: Option<OnResponse>,
    /// A `POST` to the control route waiting for its body: the query it came with.
    control_post: Option<String>,
    /// Whether this is a control call, which may be held until all workers have its write.
    control_call: bool,
    /// The request's method, read only for a fault on the response body.
    method: String,
    /// A fault on the response body, told once the answer shows it has a body, with what it
    /// is counted as then.
    deferred: Option<(Deferred, Stat)>,
    /// Whether a held request is answered or reset when due, instead of going on.
    held_then: bool,
    /// Whether the hold was handed to Envoy's fault filter after this one.
    handed: bool,
    /// What a request handed over with an abort gets when that abort comes back.
    envoy_then: Option<Then>,
    /// Whether the request was changed before going upstream, which its answer tells.
    rewritten: bool,
    /// A fault on the response body, once the response headers allowed it.
    body: Option<BodyFault>,
    /// When a cut response's stream is due to be reset by the worker's timer (ns).
    reset_due: Option<u64>,
    /// When a request the filter left alone started, while a guard counts such requests.
    guarded_since: Option<u64>,
}

impl Request {
    /// A context for a new request on this worker.
    pub fn new(id: u32, worker: Rc<RefCell<RootState>>) -> Request {
        Request {
            id,
            worker,
            held_until: None,
            holding_response: false,
            on_response: None,
            control_post: None,
            control_call: false,
            method: String::new(),
            deferred: None,
            held_then: false,
            handed: false,
            envoy_then: None,
            rewritten: false,
            body: None,
            reset_due: None,
            guarded_since: None,
        }
    }

    fn control(&mut self, worker: &mut RootState, request: &mut RequestInfo, query: String, end_of_stream: bool) -> Action {
        self.control_call = true;
        // A call that writes hears the other workers acknowledge on this root context's queue.
        worker.join();
        let client = request.client_address();
        let method = request.method();
        // A control call is rare: its headers come in one host call.
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        let caller = Caller::from_headers(&method, &headers);
        let accept = headers.iter().find(|(name, _)| name == "accept").map(|(_, v)| v.as_str());
        if page::wanted(&method, &query, accept) {
            return control_route::page(worker, client, &caller);
        }
        if let Err(refused) = control_route::admit(worker, client, &caller) {
            return refused;
        }
        match method.as_str() {
            "POST" if worker.config.control.post_documents && !end_of_stream => {
                // The document is in the body, which Envoy hands over only once the headers
                // went on, to the buffer filter that holds them from the router (README).
                self.control_post = Some(query);
                Action::Continue
            }
            "POST" if !worker.config.control.post_documents => control_route::post_refused(worker),
            "POST" => control_route::document(worker, self.id, &query, b""),
            "DELETE" => control_route::reset(worker, self.id, &query),
            _ => control_route::query(worker, self.id, &query),
        }
    }

    /// Holds the request (or, with `response`, its response) for `delay`.
    fn hold(&mut self, worker: &mut RootState, delay: Millis, response: bool) {
        let now = now_ns();
        let due = now + delay.0.saturating_mul(MS);
        if response {
            worker.response_delays.hold(self.id, due);
        } else {
            worker.delays.hold(self.id, due);
        }
        worker.arm(due, now, self.id);
        worker.count(Stat::ActiveDelays, 1);
        self.held_until = Some(due);
        self.holding_response = response;
    }

    /// Hands the hold to Envoy's fault filter after this one (see [`delays`]): it holds
    /// the request `delay` on a timer of its own, as it holds its own delays, then with
    /// `then` aborts it, and this filter makes that answer its own (or resets it) on the
    /// way back. It counts in `active_delays` until a tick of the worker finds it due or
    /// the request ends: no timer is armed for it, since waking the worker at every due
    /// time made Envoy's own timers fire earlier than they do for its own delays
    /// (BENCHMARKS.md).
    fn hand_over(&mut self, worker: &mut RootState, delay: Millis, then: Option<Then>) {
        mark_for_envoy_fault_filter();
        if delay.0 > 0 {
            set_request_header(delays::DELAY_HEADER, &delay.0.to_string());
        }
        match &then {
            Some(Then::Fail(Reply::Grpc { code, .. })) => set_request_header(delays::ABORT_GRPC_HEADER, &code.to_string()),
            Some(Then::Fail(Reply::Http { status, .. })) => set_request_header(delays::ABORT_HEADER, &status.to_string()),
            Some(Then::Reset) => set_request_header(delays::ABORT_HEADER, &delays::RESET_ABORT_STATUS.to_string()),
            None => {}
        }
        let now = now_ns();
        let due = now + delay.0.saturating_mul(MS);
        worker.handed.hold(self.id, due);
        worker.count(Stat::ActiveDelays, 1);
        self.held_until = Some(due);
        self.handed = true;
        self.held_then = then.is_some();
        self.envoy_then = then;
    }

    /// The answer to a request handed to Envoy's fault filter with an abort: the abort
    /// becomes this filter's slow failure, or its stream is reset, so the upstream never saw
    /// the request. Any other answer (a fault filter configured without `header_abort`) is
    /// left alone. Returns the action when the answer goes no further.
    fn envoy_answered(&mut self, then: Then, end_of_stream: bool) -> Option<Action> {
        let details = hostcalls::get_property(vec!["response", "code_details"]).ok().flatten().unwrap_or_default();
        if !details.starts_with(delays::FAULT_ABORT_DETAILS.as_bytes()) {
            log::warn!("fault-injector: Envoy's fault filter did not abort a request handed to it ({}); it needs delay.header_delay and abort.header_abort, as in envoy/sidecar.yaml (docs/troubleshooting.md)", String::from_utf8_lossy(&details));
            return None;
        }
        let set = |name: &str, value: &str| {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
        };
        match then {
            Then::Reset => {
                body::reset(StreamType::HttpResponse);
                return Some(Action::Pause);
            }
            Then::Fail(Reply::Http { status, headers, body }) => {
                set(":status", &status.to_string());
                headers.iter().for_each(|(name, value)| set(name, value));
                if !end_of_stream {
                    set("content-length", &body.len().to_string());
                    self.body = Some(BodyFault::Replace { body, first: true });
                }
            }
            Then::Fail(Reply::Grpc { message, metadata, .. }) => {
                set("grpc-message", &message);
                metadata.iter().for_each(|(name, value)| set(name, value));
            }
        }
        None
    }

    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let worker = Rc::clone(&self.worker);
        let mut worker = worker.borrow_mut();
        let mut request = RequestInfo::new(&worker);
        worker.refresh();
        if worker.config.envoy_fault_filter {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, delays::MARK, None);
        }
        let handing = worker.config.envoy_fault_filter_delays;
        let RootState { state, index, config, sampler, .. } = &mut *worker;
        let (decision, source) = decide::decide(state, index, config, &mut request, sampler);
        let detail = decision.detail();
        // Carried out, and counted as what it turned out to be.
        let (counted, action) = match decision {
            Decision::Control(query) => return self.control(&mut worker, &mut request, query, end_of_stream),
            Decision::Pass => (Stat::RequestsPassed, Action::Continue),
            Decision::Probe => (Stat::ProbesPassed, Action::Continue),
            Decision::Overflow => {
                worker.count(Stat::DelaysOverflow, 1);
                (Stat::RequestsPassed, Action::Continue)
            }
            Decision::Reply(answered, answer) => {
                let stat = match answered {
                    Answered::Abort => Stat::AbortsInjected,
                    Answered::Response => Stat::ResponsesInjected,
                    Answered::Refused => Stat::HeaderFaultsRefused,
                };
                (stat, reply::send(&answer))
            }
            Decision::Hold(delay) if handing => {
                self.hand_over(&mut worker, delay, None);
                (Stat::DelaysInjected, Action::Continue)
            }
            Decision::Hold(delay) => {
                self.hold(&mut worker, delay, false);
                (Stat::DelaysInjected, Action::Pause)
            }
            Decision::CountAttempt(attempt) => {
                let counted = shared::attempt(attempt.id, now_ms(), attempt.retries, worker.config.retry_limits);
                // The table's gauge is shared by every worker; the CAS write replaced exactly
                // the shard read, so adding its change in length keeps the sum exact.
                worker.count(Stat::RetryEntries, counted.grown);
                if counted.evicted {
                    worker.count(Stat::RetryEvictions, 1);
                }
                match counted.attempt {
                    Attempt::Fail(_) => (Stat::RetriesInjected, reply::send(&attempt.reply)),
                    Attempt::Pass => (Stat::RequestsPassed, Action::Continue),
                }
            }
            // Without Envoy's fault filter after this one nothing would pace the body.
            Decision::OnResponse(OnResponse::Throttle(_)) if !worker.config.envoy_fault_filter => {
                worker.count(Stat::ThrottlesUnpaced, 1);
                (Stat::RequestsPassed, Action::Continue)
            }
            Decision::OnResponse(fault) => {
                let stat = match fault {
                    OnResponse::Delay(_) => Stat::DelaysInjected,
                    OnResponse::Rewrite { .. } => Stat::ResponsesRewritten,
                    OnResponse::Truncate(_) => Stat::TruncationsInjected,
                    OnResponse::Throttle(_) => Stat::ThrottlesInjected,
                    OnResponse::BodyChange(_) => Stat::BodiesChanged,
                };
                if let OnResponse::Throttle(rate) = fault {
                    mark_for_envoy_fault_filter();
                    set_request_header(RATE_HEADER, &rate.kib_per_second().to_string());
                }
                if fault.on_body() {
                    // Counted, labelled and logged when the answer shows it has a body.
                    self.method = request.method();
                    self.deferred = Some((worker.observe_body_fault(source, detail), stat));
                    self.on_response = Some(fault);
                    worker.count(Stat::RequestsSeen, 1);
                    return Action::Continue;
                }
                self.on_response = Some(fault);
                (stat, Action::Continue)
            }
            Decision::Reset => {
                body::reset(StreamType::HttpRequest);
                (Stat::ResetsInjected, Action::Pause)
            }
            Decision::Rewrite(rewrite) => {
                // Before the router reads the request: Envoy picks the route again for a
                // request whose headers a Wasm filter changed.
                if let Some(target) = rewrite.target(decide::Request::target(&mut request)) {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(&target));
                }
                if let Some(method) = &rewrite.method {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":method", Some(method));
                }
                for name in &rewrite.remove_headers {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
                }
                for (name, value) in &rewrite.set_headers {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
                }
                self.rewritten = true;
                (Stat::RequestsRewritten, Action::Continue)
            }
            Decision::HoldThen(delay, then) => {
                let stat = match then {
                    Then::Reset => Stat::ResetsInjected,
                    Then::Fail(_) => Stat::SlowFailuresInjected,
                };
                if handing {
                    self.hand_over(&mut worker, delay, Some(then));
                    (stat, Action::Continue)
                } else {
                    self.hold(&mut worker, delay, false);
                    worker.then.push((self.id, then));
                    self.held_then = true;
                    (stat, Action::Pause)
                }
            }
        };
        worker.count(Stat::RequestsSeen, 1);
        worker.count(counted, 1);
        // A request no rule or fault touched leaves no trace but the two counts: its access
        // log reads `-`.
        if source != Source::Nothing {
            worker.observe(source, counted, detail);
        }
        // Only a request under a guard pays for the clock now and the response's status later,
        // and only one the guard watches: an unrelated failing path does not halt the faults.
        if worker.guarding && matches!(counted, Stat::RequestsPassed | Stat::ProbesPassed) {
            let watched = worker.state.guard.as_ref().is_some_and(|g| g.watches(source, &mut request));
            if watched {
                self.guarded_since = Some(now_ms());
            }
        }
        action
    }

    /// Lets the worker hand what this request counted to Envoy before long.
    fn counted(&self) {
        self.worker.borrow_mut().flush_soon(self.id);
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let action = self.request_headers(end_of_stream);
        self.counted();
        action
    }

    fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        let Some(query) = &self.control_post else { return Action::Continue };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, usize::MAX).ok().flatten().unwrap_or_default();
        let action = control_route::document(&mut self.worker.borrow_mut(), self.id, query, &body);
        self.counted();
        action
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if let Some(action) = self.envoy_then.take().and_then(|then| self.envoy_answered(then, end_of_stream)) {
            return action;
        }
        if self.deferred.is_some() && !self.body_fault_applies(end_of_stream) {
            // Not applied to this answer: nothing to count but a request that passed.
            self.on_response = None;
        }
        if self.deferred.is_some() {
            self.settle_deferred();
            self.counted();
        }
        if self.rewritten {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some(crate::faults::request_rewrite::NAME));
        }
        if (self.held_until.is_some() || self.on_response.is_some() || self.rewritten) && self.worker.borrow().config.direction == Direction::Outbound {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, DIRECTION, Some("outbound"));
        }
        if self.held_until.is_some() && !self.holding_response && !self.held_then {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("delay"));
        }
        match self.on_response.take() {
            Some(OnResponse::Delay(delay)) => {
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("responseDelay"));
                let worker = Rc::clone(&self.worker);
                let mut worker = worker.borrow_mut();
                // Counted as a delay when the request chose it; past the limit it goes on.
                let held = worker.gauge(Stat::ActiveDelays) < worker.config.max_active_delays;
                if held {
                    self.hold(&mut worker, delay, true);
                } else {
                    worker.count(Stat::DelaysOverflow, 1);
                }
                drop(worker);
                self.counted();
                if held {
                    return Action::Pause;
                }
            }
            Some(OnResponse::Rewrite { status, add, remove }) => {
                if let Some(status) = status {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, ":status", Some(&status.to_string()));
                }
                for name in &remove {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, None);
                }
                for (name, value) in &add {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
                }
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("responseRewrite"));
            }
            // Envoy's fault filter, after this one, paces the body.
            Some(OnResponse::Throttle(_)) => {
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("throttle"));
            }
            Some(OnResponse::Truncate(cut)) => {
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("truncate"));
                let length = hostcalls::get_map_value(MapType::HttpResponseHeaders, "content-length").ok().flatten();
                let cut = crate::faults::truncate::within(cut, length.and_then(|l| l.parse().ok()));
                self.body = Some(BodyFault::Cut(crate::faults::truncate::Cutter::new(cut)));
            }
            Some(OnResponse::BodyChange(change)) => {
                let edits = change.header_edits();
                for name in edits.remove {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, None);
                }
                if let Some(length) = edits.content_length {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", Some(&length.to_string()));
                }
                if let Some(content_type) = edits.content_type {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-type", Some(content_type));
                }
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("bodyChange"));
                let seed = self.worker.borrow_mut().sampler.next_u64();
                self.body = Some(BodyFault::changing(change, seed));
            }
            None => {}
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(fault) = self.body.as_mut() else { return Action::Continue };
        let worker = Rc::clone(&self.worker);
        let mut worker = worker.borrow_mut();
        let step = fault.on_piece(body_size, end_of_stream);
        match step {
            Step::Continue => Action::Continue,
            Step::ContinueThenReset | Step::HoldThenReset => {
                // On the timer, not now: a reset in this callback would drop the bytes just
                // let through, which the HTTP/2 codec has not written yet.
                self.reset_soon(&mut worker);
                if matches!(step, Step::HoldThenReset) {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
        }
    }

    /// A request the filter left alone under a guard: whether the upstream failed it and how
    /// long it took. A final status from 1 to 499 is no failure whoever answered, so
    /// `response.code_details` (who answered, or why Envoy did) is read only for the rest:
    /// most requests pay one property read, not two.
    fn on_log(&mut self) {
        super::root::release_due(&self.worker, self.id);
        let Some(since) = self.guarded_since else { return };
        let property = |name| hostcalls::get_property(vec!["response", name]).ok().flatten().unwrap_or_default();
        let status = net::parse_integer_property(&property("code")).and_then(|code| u64::try_from(code).ok()).unwrap_or(0);
        let details = if (1..500).contains(&status) { Vec::new() } else { property("code_details") };
        self.worker.borrow_mut().saw(status, std::str::from_utf8(&details).unwrap_or(""), since, now_ms());
        self.counted();
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        let Some(fault) = self.body.as_mut() else { return Action::Continue };
        match fault.on_trailers() {
            Step::HoldThenReset => {
                let worker = Rc::clone(&self.worker);
                self.reset_soon(&mut worker.borrow_mut());
                Action::Pause
            }
            _ => Action::Continue,
        }
    }
}

impl Request {
    /// Has the worker's timer reset this response's stream shortly after now, once.
    fn reset_soon(&mut self, worker: &mut RootState) {
        if self.reset_due.is_none() {
            let now = now_ns();
            let due = now + CUT_RESET_MS * MS;
            worker.resets.hold(self.id, due);
            worker.arm(due, now, self.id);
            self.reset_due = Some(due);
        }
    }

    /// Whether the fault on the response body applies to this answer (see
    /// [`OnResponse::applies`]).
    fn body_fault_applies(&self, end_of_stream: bool) -> bool {
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status").ok().flatten();
        let status = status.and_then(|s| s.parse().ok()).unwrap_or(200);
        self.on_response.as_ref().is_some_and(|fault| fault.applies(&self.method, status, end_of_stream))
    }

    /// Counts the fault on the response body as what it turned out to be: injected if it is
    /// still to be carried out, else a request that passed.
    fn settle_deferred(&mut self) {
        let Some((deferred, stat)) = self.deferred.take() else { return };
        let Ok(mut worker) = self.worker.try_borrow_mut() else { return };
        if self.on_response.is_some() {
            worker.applied(&deferred, stat);
        } else {
            worker.count(Stat::RequestsPassed, 1);
        }
    }
}

impl Drop for Request {
    /// A client that hangs up while held is forgotten, so it is not resumed or answered later.
    fn drop(&mut self) {
        if self.deferred.is_some() {
            // No answer came: the body fault was never applied.
            self.on_response = None;
            self.settle_deferred();
        }
        if self.held_until.is_none() && !self.control_call && self.body.is_none() {
            return;
        }
        let Ok(mut worker) = self.worker.try_borrow_mut() else { return };
        if let Some(due) = self.reset_due {
            worker.resets.cancel(self.id, due);
        }
        if self.held_then {
            worker.take_then(self.id);
        }
        if let Some(due) = self.held_until {
            let queue = if self.handed {
                &mut worker.handed
            } else if self.holding_response {
                &mut worker.response_delays
            } else {
                &mut worker.delays
            };
            if queue.cancel(self.id, due) {
                worker.count(Stat::ActiveDelays, -1);
            }
        }
        if self.control_call {
            worker.waits.cancel(self.id);
        }
    }
}
