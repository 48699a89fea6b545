//! The HTTP context: one per request. It reads as guards: control route? then a fault the
//! request asks for itself (`x-fault-*`)? then the first matching rule, else the client's
//! policy; sampled? then inject, on the request or, for response faults, on its response.

use super::reply::{self, INJECTED};
use super::root::Worker;
use super::{control_route, now_ms, shared};
use crate::config::MAX_FILTER_STATE_KEY;
use crate::control;
use crate::duration::Millis;
use crate::grpc;
use crate::header_faults::{self, Asked};
use crate::net;
use crate::percentage::Percentage;
use crate::policy::{Policy, PolicyKind};
use crate::retries::Attempt;
use crate::rules::{self, Fault, RequestView, Rule};
use crate::sampling::{identity_hash, in_share};
use crate::stats::Stat;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status};
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

fn client() -> Option<IpAddr> {
    let bytes = hostcalls::get_property(vec!["source", "address"]).ok().flatten()?;
    net::parse_socket_address(std::str::from_utf8(&bytes).ok()?)
}

/// What the guards read of a request, each read from Envoy at most once and only when one
/// asks: every read is a host call that copies the value into the module.
#[derive(Default)]
struct Headers {
    path: Option<String>,
    method: Option<String>,
    client: Option<Option<IpAddr>>,
}

impl Headers {
    /// `:path`, with its query.
    fn full_path(&mut self) -> &str {
        self.path.get_or_insert_with(|| header(":path").unwrap_or_default())
    }

    fn method_str(&mut self) -> &str {
        self.method.get_or_insert_with(|| header(":method").unwrap_or_default())
    }

    fn client_ip(&mut self) -> Option<IpAddr> {
        *self.client.get_or_insert_with(client)
    }
}

impl RequestView for Headers {
    fn path(&mut self) -> String {
        let path = self.full_path();
        path.split_once('?').map_or(path, |(route, _)| route).to_string()
    }
    fn method(&mut self) -> String {
        self.method_str().to_string()
    }
    fn header(&mut self, name: &str) -> Option<String> {
        header(name)
    }
    fn client(&mut self) -> Option<IpAddr> {
        self.client_ip()
    }
}

/// A fault for the upstream's response, decided when the request went through.
enum OnResponse {
    Delay(Millis),
    Rewrite { status: Option<u16>, add: Vec<(String, String)>, remove: Vec<String> },
}

/// One request's context.
pub struct Request {
    id: u32,
    worker: Rc<RefCell<Worker>>,
    /// When this request (or its response) is due to be released, while it is held (or was).
    held_until: Option<u64>,
    /// Whether what is held is the response.
    holding_response: bool,
    on_response: Option<OnResponse>,
    /// A `POST` to the control route waiting for its body: the query it came with.
    control_post: Option<String>,
    /// Whether this is a control call, which may be held until all workers have its write.
    control_call: bool,
}

impl Request {
    /// A context for a new request on this worker.
    pub fn new(id: u32, worker: Rc<RefCell<Worker>>) -> Request {
        Request { id, worker, held_until: None, holding_response: false, on_response: None, control_post: None, control_call: false }
    }

    fn control(&mut self, request: &mut Headers, query: String, end_of_stream: bool) -> Action {
        self.control_call = true;
        let worker = Rc::clone(&self.worker);
        let mut worker = worker.borrow_mut();
        // A call that writes hears the other workers acknowledge on this root context's queue.
        worker.join();
        let client = request.client_ip();
        let method = request.method_str();
        if let Err(refused) = control_route::admit(&worker, client, method, header("authorization").as_deref()) {
            return refused;
        }
        match method {
            "POST" if worker.config.control.post_documents && !end_of_stream => {
                // The document is in the body, which Envoy hands over only once the headers
                // went on, to the buffer filter that holds them from the router (README).
                self.control_post = Some(query);
                Action::Continue
            }
            "POST" if !worker.config.control.post_documents => control_route::post_refused(&worker),
            "POST" => control_route::document(&mut worker, self.id, &query, b""),
            "DELETE" => control_route::reset(&mut worker, self.id, &query),
            _ => control_route::query(&mut worker, self.id, &query),
        }
    }

    /// True for `percentage` of requests: by the value of `sample_by` when the request has
    /// that header, so one user or request id is always in or always out, else at random.
    fn sampled(worker: &mut Worker, percentage: Percentage, sample_by: Option<&str>) -> bool {
        match sample_by.and_then(header) {
            Some(value) => in_share(identity_hash(&[value.as_bytes()]), percentage),
            None => worker.sampler.roll(percentage),
        }
    }

    fn hold(&mut self, worker: &mut Worker, delay: Millis, response: bool) -> Option<Action> {
        if worker.read(Stat::ActiveDelays) >= worker.config.max_active_delays {
            worker.count(Stat::DelaysOverflow, 1);
            return None;
        }
        let now = now_ms();
        let due = now + delay.0;
        if response {
            worker.response_delays.hold(self.id, due);
        } else {
            worker.delays.hold(self.id, due);
        }
        worker.arm(due, now, self.id);
        // A response delay was counted when the request chose it.
        if !response {
            worker.count(Stat::DelaysInjected, 1);
        }
        worker.count(Stat::ActiveDelays, 1);
        self.held_until = Some(due);
        self.holding_response = response;
        Some(Action::Pause)
    }

    /// Answers with `status` and `body`; a gRPC caller gets `grpc_status` (or the code
    /// `status` maps to) with `message`.
    fn fail(status: u16, grpc_status: Option<u8>, label: &str, body: &str, message: &str) -> Action {
        if grpc::is_grpc(header("content-type").as_deref()) {
            let code = grpc_status.unwrap_or_else(|| grpc::status_for_http(status));
            return reply::grpc(code, message, vec![(INJECTED, label)]);
        }
        reply::http(status, vec![(INJECTED, label)], body)
    }

    fn abort(worker: &Worker, status: u16, grpc_status: Option<u8>, label: &str) -> Action {
        worker.count(Stat::AbortsInjected, 1);
        Self::fail(status, grpc_status, label, "fault filter abort\n", "fault filter abort")
    }

    fn respond(worker: &Worker, status: u16, headers: &[(String, String)], body: &str, grpc_status: Option<u8>, label: &str) -> Action {
        worker.count(Stat::ResponsesInjected, 1);
        let mut headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        headers.push((INJECTED, label));
        match grpc_status {
            Some(code) if grpc::is_grpc(header("content-type").as_deref()) => reply::grpc(code, body, headers),
            _ => reply::http(status, headers, body),
        }
    }

    /// Bounded retries: identities (client, method, path), not attempts, are sampled, so a
    /// retrying client sees exactly `retries` failures.
    fn bounded(worker: &Worker, request: &mut Headers, retries: u32, status: u16, percentage: Percentage) -> Option<Action> {
        let ip = request.client_ip().map(|c| c.to_string()).unwrap_or_default();
        let method = request.method_str().to_string();
        let id = identity_hash(&[ip.as_bytes(), method.as_bytes(), request.full_path().as_bytes()]);
        if !in_share(id, percentage) {
            return None;
        }
        let Attempt::Fail(_) = shared::attempt(id, now_ms(), retries, worker) else { return None };
        worker.count(Stat::RetriesInjected, 1);
        let body = format!("fault filter abort ({status}, bounded retries)\n");
        Some(Self::fail(status, None, "boundedRetries", &body, "fault filter abort (bounded retries)"))
    }

    fn by_headers(&mut self, worker: &mut Worker) -> Option<Action> {
        let (delay, abort) = (header(header_faults::DELAY), header(header_faults::ABORT));
        if delay.is_none() && abort.is_none() {
            return None;
        }
        let share = header(header_faults::PERCENTAGE);
        match header_faults::read(delay.as_deref(), abort.as_deref(), share.as_deref(), worker.config.header_faults.max_delay) {
            Ok(None) => None,
            Ok(Some((asked, percentage))) if worker.sampler.roll(percentage) => match asked {
                Asked::Delay(ms) => self.hold(worker, ms, false),
                Asked::Abort(status) => Some(Self::abort(worker, status, None, "abort")),
            },
            Ok(Some(_)) => None,
            Err(e) => {
                worker.count(Stat::HeaderFaultsRefused, 1);
                Some(reply::error(400, &e.to_string(), vec![(INJECTED, "refused")]))
            }
        }
    }

    fn by_rule(&mut self, worker: &mut Worker, request: &mut Headers, rule: &Rule) -> Option<Action> {
        if let Fault::BoundedRetries { retries, status } = rule.fault {
            return Self::bounded(worker, request, retries, status.0, rule.percentage);
        }
        if !Self::sampled(worker, rule.percentage, rule.sample_by.as_ref().map(|h| h.as_str())) {
            return None;
        }
        match &rule.fault {
            Fault::Delay { fixed, jitter } => {
                let extra = if jitter.0 == 0 { 0 } else { worker.sampler.next_u64() % (jitter.0 + 1) };
                self.hold(worker, Millis(fixed.0 + extra), false)
            }
            Fault::Abort { status, grpc_status } => Some(Self::abort(worker, status.0, grpc_status.map(|g| g.0), "abort")),
            Fault::Response { status, headers, body, grpc_status } => {
                Some(Self::respond(worker, status.0, headers, body, grpc_status.map(|g| g.0), "response"))
            }
            Fault::ResponseDelay { fixed } => {
                self.on_response = Some(OnResponse::Delay(*fixed));
                None
            }
            Fault::ResponseRewrite { status, add_headers, remove_headers } => {
                let (add, remove) = (add_headers.clone(), remove_headers.iter().map(|h| h.as_str().to_string()).collect());
                self.on_response = Some(OnResponse::Rewrite { status: status.map(|s| s.0), add, remove });
                None
            }
            Fault::BoundedRetries { .. } => None,
        }
    }

    fn by_policy(&mut self, worker: &mut Worker, request: &mut Headers, policy: Policy) -> Option<Action> {
        match policy.kind {
            PolicyKind::None => None,
            PolicyKind::BoundedRetries => Self::bounded(worker, request, policy.retries, policy.status, policy.percentage),
            kind => {
                let config = Rc::clone(&worker.config);
                if !Self::sampled(worker, policy.percentage, config.sample_by.as_deref()) {
                    return None;
                }
                match kind {
                    PolicyKind::Delay => self.hold(worker, policy.delay, false),
                    PolicyKind::Abort => Some(Self::abort(worker, policy.status, None, "statusResponse")),
                    _ => {
                        let canned = &config.simple_response;
                        Some(Self::respond(worker, canned.status, &canned.headers, &canned.body, None, "simpleResponse"))
                    }
                }
            }
        }
    }

    fn inject(&mut self, worker: &mut Worker, request: &mut Headers) -> Option<Action> {
        if worker.config.header_faults.enabled {
            if let Some(action) = self.by_headers(worker) {
                return Some(action);
            }
        }
        worker.refresh();
        if worker.state.is_idle() {
            return None;
        }
        if !worker.state.rules.is_empty() {
            // The first matching rule decides, even when it samples the request out.
            if let Some(rule) = rules::first_match(&worker.state.rules, request).cloned() {
                return self.by_rule(worker, request, &rule);
            }
        }
        let client = if worker.state.bindings.is_empty() { None } else { request.client_ip() };
        let policy = *worker.state.policy_for(client);
        self.by_policy(worker, request, policy)
    }
}

impl Context for Request {}

impl Request {
    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let worker = Rc::clone(&self.worker);
        let mut request = Headers::default();
        let control_query = {
            let w = worker.borrow();
            control::control_query(&w.config.control, on_marked_connection, || request.full_path(), local_port).map(str::to_string)
        };
        if let Some(query) = control_query {
            return self.control(&mut request, query, end_of_stream);
        }
        let mut w = worker.borrow_mut();
        w.count(Stat::RequestsSeen, 1);
        match self.inject(&mut w, &mut request) {
            Some(action) => action,
            None => {
                match self.on_response {
                    Some(OnResponse::Delay(_)) => w.count(Stat::DelaysInjected, 1),
                    Some(OnResponse::Rewrite { .. }) => w.count(Stat::ResponsesRewritten, 1),
                    None => w.count(Stat::RequestsPassed, 1),
                }
                Action::Continue
            }
        }
    }

    /// Lets the worker hand what this request counted to Envoy before long.
    fn counted(&self) {
        self.worker.borrow_mut().flush_soon(self.id);
    }
}

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

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.held_until.is_some() && !self.holding_response {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("delay"));
        }
        match self.on_response.take() {
            Some(OnResponse::Delay(delay)) => {
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("responseDelay"));
                let worker = Rc::clone(&self.worker);
                let mut w = worker.borrow_mut();
                let held = self.hold(&mut w, delay, true);
                drop(w);
                self.counted();
                if let Some(action) = held {
                    return action;
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
            None => {}
        }
        Action::Continue
    }
}

impl Drop for Request {
    /// A client that hangs up while held is forgotten, so it is not resumed or answered later.
    fn drop(&mut self) {
        if self.held_until.is_none() && !self.control_call {
            return;
        }
        let Ok(mut worker) = self.worker.try_borrow_mut() else { return };
        if let Some(due) = self.held_until {
            let queue = if self.holding_response { &mut worker.response_delays } else { &mut worker.delays };
            if queue.cancel(self.id, due) {
                worker.count(Stat::ActiveDelays, -1);
            }
        }
        if self.control_call {
            worker.waits.cancel(self.id);
        }
    }
}
