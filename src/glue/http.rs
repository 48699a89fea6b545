//! The HTTP context: one per request. [`decide`](crate::decide::decide) says what happens
//! to the request; [`Exchange`] carries it out, on the request or on its response, and
//! counts it, through [`Host`] and [`Worker`], which this implements with host calls. What
//! is left here is reading the request for `decide` and the control route's calls.

use super::body;
use super::reply;
use super::root_state::{Deferred, RootState};
use super::{control_route, now_ms, now_ns, shared};
use crate::config::{Config, MAX_FILTER_STATE_KEY};
use crate::control::access::Caller;
use crate::control::{page, route};
use crate::decide::{self, Attempt, Detail, Reply, Source, Then};
use crate::delays::{self, DelayQueue};
use crate::exchange::{Carried, Exchange, Flow, Host, Phase, Queue, Side, Worker};
use crate::faults::retries::Counted;
use crate::guard;
use crate::model::net;
use crate::model::rules::RequestView;
use crate::stats::Stat;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status, StreamType};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

/// The local port the request arrived at (Envoy's `destination.port`).
fn local_port() -> Option<u16> {
    net::parse_port_property(&property(&["destination", "port"])?)
}

extern "C" {
    fn proxy_get_property(path: *const u8, path_size: usize, value: *mut *mut u8, value_size: *mut usize) -> Status;
}

/// The longest property path read here: a filter-state key and its prefix.
const MAX_PROPERTY_PATH: usize = FILTER_STATE.len() + MAX_FILTER_STATE_KEY;
/// The start of a filter-state object's path, separator included.
const FILTER_STATE: &[u8] = b"filter_state\0";

/// An Envoy attribute of the request (`["source", "address"]`), called for directly with
/// the path built on the stack: the SDK's `get_property` allocates twice to build it, which
/// cost 1.1k of the 4.1k instructions a filter-state lookup took (BENCHMARKS.md, "Where a
/// passing request's instructions go").
fn property(parts: &[&str]) -> Option<Vec<u8>> {
    let mut path = [0u8; MAX_PROPERTY_PATH];
    let mut size = 0;
    for part in parts {
        // Each part ends in the 0 Envoy separates them with, already there.
        path.get_mut(size..size + part.len())?.copy_from_slice(part.as_bytes());
        size += part.len() + 1;
    }
    property_at(path.get(..size.saturating_sub(1))?)
}

/// The attribute at `path` (its parts separated by 0). Finding nothing is cheap: Envoy
/// copies nothing into the module.
fn property_at(path: &[u8]) -> Option<Vec<u8>> {
    let (mut value, mut value_size) = (std::ptr::null_mut(), 0);
    // SAFETY: `path` is initialised, and the host writes the two out parameters only. What
    // it finds it hands over in a buffer it allocated through this module's allocator
    // (proxy_on_memory_allocate), as the SDK's get_property takes it back.
    match unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut value, &mut value_size) } {
        // SAFETY: as above; the buffer is `value_size` bytes, all of them the value.
        Status::Ok if !value.is_null() => Some(unsafe { Vec::from_raw_parts(value, value_size, value_size) }),
        _ => None,
    }
}

/// Whether the request's connection carries the filter-state object `key`. Every request
/// of a listener that sets `control.filter_state` asks, so its path is built here without
/// [`property`]'s loop over parts: through it, a passing request ran 83 more Wasm
/// instructions (4,239 against 4,156, wasmtime's fuel).
fn on_marked_connection(key: &str) -> bool {
    let mut path = [0u8; MAX_PROPERTY_PATH];
    let size = FILTER_STATE.len() + key.len();
    let Some(at) = path.get_mut(..size) else { return false };
    at[..FILTER_STATE.len()].copy_from_slice(FILTER_STATE);
    at[FILTER_STATE.len()..].copy_from_slice(key.as_bytes());
    property_at(at).is_some()
}

fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
}

/// The client: the TCP peer, or with `trusted_hops` what trusted proxies forwarded
/// (`net::client`); an address Envoy took from `X-Forwarded-For` is none.
fn client(trusted_hops: u32) -> Result<IpAddr, net::NoClient> {
    let bytes = property(&["source", "address"]);
    let source = bytes.as_deref().and_then(|b| std::str::from_utf8(b).ok());
    net::client(source, trusted_hops, || header("x-forwarded-for"))
}

/// Envoy's `source.address` or `destination.address` (for a listener that restores it
/// with `original_dst`, the address the app called).
fn address(side: &str) -> Option<IpAddr> {
    let bytes = property(&[side, "address"])?;
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

/// This stream, through proxy-wasm host calls.
struct Stream;

fn map(side: Side) -> MapType {
    match side {
        Side::Request => MapType::HttpRequestHeaders,
        Side::Response => MapType::HttpResponseHeaders,
    }
}

impl Host for Stream {
    fn header(&mut self, side: Side, name: &str) -> Option<String> {
        hostcalls::get_map_value(map(side), name).ok().flatten()
    }
    fn set_header(&mut self, side: Side, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(map(side), name, value);
    }
    fn send_reply(&mut self, answer: &Reply) {
        reply::send(answer);
    }
    fn reset(&mut self, side: Side) {
        body::reset(match side {
            Side::Request => StreamType::HttpRequest,
            Side::Response => StreamType::HttpResponse,
        });
    }
    fn body(&mut self, max: usize) -> Vec<u8> {
        body::piece(max)
    }
    fn set_body(&mut self, size: usize, bytes: &[u8]) {
        body::set_piece(size, bytes);
    }
    fn response_details(&mut self) -> Vec<u8> {
        property(&["response", "code_details"]).unwrap_or_default()
    }
}

/// The worker as one request sees it: `id` is the request's context, `request` what
/// `decide` read of it, while its headers are in hand.
struct OnWorker<'a> {
    worker: &'a mut RootState,
    id: u32,
    request: Option<&'a mut RequestInfo>,
}

impl OnWorker<'_> {
    fn queue(&mut self, queue: Queue) -> &mut DelayQueue {
        match queue {
            Queue::Requests => &mut self.worker.delays,
            Queue::Responses => &mut self.worker.response_delays,
            Queue::Resets => &mut self.worker.resets,
            Queue::Handed => &mut self.worker.handed,
        }
    }
}

impl Worker for OnWorker<'_> {
    type Noted = Deferred;
    fn config(&self) -> &Config {
        &self.worker.config
    }
    fn now_ns(&mut self) -> u64 {
        now_ns()
    }
    fn count(&mut self, stat: Stat, delta: i64) {
        self.worker.count(stat, delta);
    }
    fn gauge(&mut self, stat: Stat) -> u64 {
        self.worker.gauge(stat)
    }
    fn hold(&mut self, queue: Queue, due_ns: u64, now_ns: u64) {
        let id = self.id;
        self.queue(queue).hold(id, due_ns);
        if queue != Queue::Handed {
            self.worker.arm(due_ns, now_ns, id);
        }
    }
    fn cancel(&mut self, queue: Queue, due_ns: u64) -> bool {
        let id = self.id;
        self.queue(queue).cancel(id, due_ns)
    }
    fn hold_then(&mut self, then: Then) {
        self.worker.then.push((self.id, then));
    }
    fn forget_then(&mut self) {
        self.worker.take_then(self.id);
    }
    fn attempt(&mut self, attempt: &Attempt) -> Counted {
        shared::attempt(attempt.id, now_ms(), attempt.retries, self.worker.config.retry_limits)
    }
    fn random(&mut self) -> u64 {
        self.worker.sampler.next_u64()
    }
    fn observe(&mut self, source: Source, counted: Stat, detail: Detail) {
        self.worker.observe(source, counted, detail);
    }
    fn note(&mut self, source: Source, detail: Detail) -> Deferred {
        self.worker.observe_body_fault(source, detail)
    }
    fn applied(&mut self, noted: &Deferred, counted: Stat) {
        self.worker.applied(noted, counted);
    }
    fn watched(&mut self, source: Source) -> bool {
        let (Some(request), Some(guard)) = (self.request.as_deref_mut(), self.worker.state.guard.as_ref()) else { return false };
        self.worker.guarding && guard.watches(source, request)
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

/// One request's context.
pub struct Request {
    id: u32,
    worker: Rc<RefCell<RootState>>,
    exchange: Exchange<Deferred>,
}

impl Request {
    /// A context for a new request on this worker.
    pub fn new(id: u32, worker: Rc<RefCell<RootState>>) -> Request {
        Request { id, worker, exchange: Exchange::default() }
    }

    fn control(&mut self, worker: &mut RootState, request: &mut RequestInfo, query: String, end_of_stream: bool) -> Action {
        self.exchange.phase = Phase::Control { post: None };
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
        let call = route::call(&method, &query, worker.config.control.post_documents, end_of_stream);
        if call == route::Call::AwaitBody {
            self.exchange.phase = Phase::Control { post: Some(query.clone()) };
        }
        control_route::carry(worker, self.id, call)
    }

    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let worker = Rc::clone(&self.worker);
        let mut worker = worker.borrow_mut();
        let mut request = RequestInfo::new(&worker);
        worker.refresh();
        if worker.config.envoy_fault_filter {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, delays::MARK, None);
        }
        let RootState { state, index, config, sampler, .. } = &mut *worker;
        let (decision, source) = decide::decide(state, index, config, &mut request, sampler);
        let on = &mut OnWorker { worker: &mut worker, id: self.id, request: Some(&mut request) };
        match self.exchange.on_request(&mut Stream, on, decision, source) {
            Carried::Done(flow) => action(flow),
            Carried::Control(query) => self.control(&mut worker, &mut request, query, end_of_stream),
        }
    }

    /// Runs `f` on the exchange with the worker, after the request's headers went on.
    fn on_worker<T>(&mut self, f: impl FnOnce(&mut Exchange<Deferred>, &mut OnWorker) -> T) -> T {
        let worker = Rc::clone(&self.worker);
        let mut worker = worker.borrow_mut();
        f(&mut self.exchange, &mut OnWorker { worker: &mut worker, id: self.id, request: None })
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
        let Phase::Control { post: Some(query) } = &self.exchange.phase else { return Action::Continue };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, usize::MAX).ok().flatten().unwrap_or_default();
        let action = control_route::carry(&mut self.worker.borrow_mut(), self.id, route::with_body(query, &body));
        self.counted();
        action
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        // Without borrowing the worker where there is nothing to do.
        if !self.exchange.acts_on_response() {
            return Action::Continue;
        }
        let flow = self.on_worker(|exchange, on| exchange.on_response_headers(&mut Stream, on, end_of_stream));
        self.counted();
        action(flow)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.exchange.acts_on_body() {
            return Action::Continue;
        }
        action(self.on_worker(|exchange, on| exchange.on_response_body(&mut Stream, on, body_size, end_of_stream)))
    }

    /// A request the filter left alone under a guard: whether the upstream failed it and how
    /// long it took. `response.code_details` (who answered, or why Envoy did) is read only
    /// where the status leaves it open ([`guard::needs_details`]).
    fn on_log(&mut self) {
        super::root::release_due(&self.worker, self.id);
        let Some(since) = self.exchange.watched_since() else { return };
        let code = property(&["response", "code"]).unwrap_or_default();
        let status = net::parse_integer_property(&code).and_then(|code| u64::try_from(code).ok()).unwrap_or(0);
        let details = if guard::needs_details(status) { Stream.response_details() } else { Vec::new() };
        self.worker.borrow_mut().saw(status, std::str::from_utf8(&details).unwrap_or(""), since, now_ms());
        self.counted();
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        if !self.exchange.acts_on_body() {
            return Action::Continue;
        }
        action(self.on_worker(|exchange, on| exchange.on_response_trailers(on)))
    }
}

impl Drop for Request {
    /// A client that hangs up while held is forgotten, so it is not resumed or answered
    /// later; a body fault no answer came for was never applied.
    fn drop(&mut self) {
        let control = matches!(self.exchange.phase, Phase::Control { .. });
        if !control && !self.exchange.holds_anything() {
            return;
        }
        let Ok(mut worker) = self.worker.try_borrow_mut() else { return };
        if control {
            worker.waits.cancel(self.id);
        }
        self.exchange.end(&mut OnWorker { worker: &mut worker, id: self.id, request: None });
    }
}
