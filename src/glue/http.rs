//! The HTTP context: one per request. It reads as guards: control route? then policy for
//! this client, sampled? then delay, abort, canned response or bounded retry.

use super::root::Worker;
use super::{log, now_ms, shared};
use crate::config::Origin;
use crate::control::{self, Refusal};
use crate::net;
use crate::policy::{FaultKind, Policy, State};
use crate::query::{Call, ControlError};
use crate::retries::Attempt;
use crate::sampling::{identity_hash, in_share};
use crate::stats::Stat;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

const INJECTED: &str = "x-fault-injected";

/// The local port the request arrived at (Envoy's `destination.port`).
fn local_port() -> Option<u16> {
    let bytes = hostcalls::get_property(vec!["destination", "port"]).ok().flatten()?;
    net::parse_port_property(&bytes)
}

/// One request's context.
pub struct Request {
    id: u32,
    worker: Rc<RefCell<Worker>>,
    /// When this request is due to be released, while it is held (or was).
    held_until: Option<u64>,
}

impl Request {
    /// A context for a new request on this worker.
    pub fn new(id: u32, worker: Rc<RefCell<Worker>>) -> Request {
        Request { id, worker, held_until: None }
    }

    fn header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
    }

    fn client(&self) -> Option<IpAddr> {
        let bytes = hostcalls::get_property(vec!["source", "address"]).ok().flatten()?;
        net::parse_socket_address(std::str::from_utf8(&bytes).ok()?)
    }

    fn reply(&self, status: u32, headers: Vec<(&str, &str)>, body: &str) -> Action {
        let _ = hostcalls::send_http_response(status, headers, Some(body.as_bytes()));
        Action::Pause
    }

    fn reply_json(&self, status: u32, body: &serde_json::Value) -> Action {
        let mut text = body.to_string();
        text.push('\n');
        self.reply(status, vec![("content-type", "application/json")], &text)
    }

    fn reply_state(&self, state: &State, origin: &Origin, now: u64) -> Action {
        let mut body = state.to_json(now);
        body["configuration"] = origin.to_json();
        self.reply_json(200, &body)
    }

    fn refuse(&self, worker: &Worker, status: u32, reason: &str, extra: Vec<(&str, &str)>) -> Action {
        worker.count(Stat::ControlRefused, 1);
        log(LogLevel::Warn, &format!("fault-injector: control call refused ({status}): {reason}"));
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(extra);
        let body = serde_json::json!({ "error": reason });
        self.reply(status, headers, &format!("{body}\n"))
    }

    fn control(&self, query: &str) -> Action {
        let worker = self.worker.borrow();
        let method = self.header(":method").unwrap_or_default();
        let authorization = self.header("authorization");
        if let Err(refusal) = control::admit(&worker.config.control, self.client(), &method, authorization.as_deref()) {
            let extra = match refusal {
                Refusal::Unauthorized => vec![("www-authenticate", "Bearer")],
                Refusal::MethodNotAllowed => vec![("allow", "GET")],
                Refusal::Forbidden => vec![],
            };
            return self.refuse(&worker, refusal.status(), refusal.message(), extra);
        }
        let call = match Call::parse_query(query) {
            Ok(call) => call,
            Err(e) => return self.refuse(&worker, 400, &e.to_string(), vec![]),
        };
        let now = now_ms();
        if !call.changes_anything() {
            let (mut state, origin) = shared::state_and_origin();
            state.settle(now);
            return self.reply_state(&state, &origin, now);
        }
        let start = &worker.config.start;
        let updated = shared::update(|state, origin| call.apply(state, start, now).map(|next| Some((next, origin.clone()))));
        match updated {
            Ok(Some((state, origin))) => {
                worker.count(Stat::PolicyChanges, 1);
                log(LogLevel::Info, &format!("fault-injector: policy changed by '{query}'"));
                self.reply_state(&state, &origin, now)
            }
            Ok(None) => self.refuse(&worker, 503, "the shared policy could not be written; try again", vec![]),
            Err(e) => self.refuse(&worker, 400, &ControlError::to_string(&e), vec![]),
        }
    }

    fn inject(&mut self, worker: &mut Worker, policy: Policy, client: Option<IpAddr>) -> Action {
        match policy.kind {
            FaultKind::None => {}
            FaultKind::BoundedRetries => {
                let ip = client.map(|c| c.to_string()).unwrap_or_default();
                let method = self.header(":method").unwrap_or_default();
                let path = self.header(":path").unwrap_or_default();
                let id = identity_hash(&[ip.as_bytes(), method.as_bytes(), path.as_bytes()]);
                // Identities, not attempts, are sampled, so a retrying client sees exactly N failures.
                if in_share(id, policy.percentage) {
                    if let Attempt::Fail(_) = shared::attempt(id, now_ms(), policy.retries, worker) {
                        worker.count(Stat::RetriesInjected, 1);
                        let status = policy.status.to_string();
                        return self.reply(u32::from(policy.status), vec![(INJECTED, "boundedRetries")], &format!("fault filter abort ({status}, bounded retries)\n"));
                    }
                }
            }
            kind if worker.sampler.roll(policy.percentage) => match kind {
                FaultKind::DelayResponse if worker.read(Stat::ActiveDelays) >= worker.config.max_active_delays => {
                    worker.count(Stat::DelaysOverflow, 1);
                }
                FaultKind::DelayResponse => {
                    let now = now_ms();
                    let due = now + policy.delay.0;
                    worker.delays.hold(self.id, due);
                    worker.arm(due, now, self.id);
                    worker.count(Stat::DelaysInjected, 1);
                    worker.count(Stat::ActiveDelays, 1);
                    self.held_until = Some(due);
                    return Action::Pause;
                }
                FaultKind::StatusResponse => {
                    worker.count(Stat::AbortsInjected, 1);
                    return self.reply(u32::from(policy.status), vec![(INJECTED, "statusResponse")], "fault filter abort\n");
                }
                _ => {
                    worker.count(Stat::ResponsesInjected, 1);
                    let canned = Rc::clone(&worker.config);
                    let canned = &canned.simple_response;
                    let mut headers: Vec<(&str, &str)> = canned.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    headers.push((INJECTED, "simpleResponse"));
                    return self.reply(u32::from(canned.status), headers, &canned.body);
                }
            },
            _ => {}
        }
        worker.count(Stat::RequestsPassed, 1);
        Action::Continue
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let worker = Rc::clone(&self.worker);
        let control_query = {
            let w = worker.borrow();
            if w.config.control.enabled {
                let path = self.header(":path").unwrap_or_default();
                control::control_query(&w.config.control, &path, local_port).map(str::to_string)
            } else {
                None
            }
        };
        if let Some(query) = control_query {
            return self.control(&query);
        }
        let mut w = worker.borrow_mut();
        w.count(Stat::RequestsSeen, 1);
        w.refresh();
        if w.state.is_idle() {
            w.count(Stat::RequestsPassed, 1);
            return Action::Continue;
        }
        let needs_client = !w.state.bindings.is_empty() || w.state.default.kind == FaultKind::BoundedRetries;
        let client = if needs_client { self.client() } else { None };
        let policy = *w.state.policy_for(client);
        self.inject(&mut w, policy, client)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.held_until.is_some() {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, INJECTED, Some("delay"));
        }
        Action::Continue
    }
}

impl Drop for Request {
    /// A client that hangs up while held is forgotten, so its slot is not resumed later.
    fn drop(&mut self) {
        if let Some(due) = self.held_until {
            if let Ok(mut worker) = self.worker.try_borrow_mut() {
                if worker.delays.cancel(self.id, due) {
                    worker.count(Stat::ActiveDelays, -1);
                }
            }
        }
    }
}
