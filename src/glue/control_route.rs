//! The control route carried out: who asks is admitted or refused, then what
//! [`route::call`](crate::control::route::call) read of the call is done. Every change is
//! written to shared data for all workers at once.

use super::reply;
use super::root_state::RootState;
use super::{now_ms, shared};
use crate::control::access::{self, Caller, Refusal};
use crate::control::page;
use crate::model::document::{self, Document};
use crate::observe;
use crate::control::destination;
use crate::model::policy::State;
use crate::model::stored::Origin;
use crate::control::query;
use crate::control::route::{self, Call};
use crate::model::net::NoClient;
use crate::stats::Stat;
use proxy_wasm::types::Action;
use std::net::IpAddr;
use std::rc::Rc;

/// Turns the call away (with its refusal answered) unless the client, the page it came
/// from, its token and its method may use the route.
pub fn admit(worker: &RootState, client: Result<IpAddr, NoClient>, caller: &Caller) -> Result<(), Action> {
    access::admit(&worker.config.control, client, caller).map_err(|refusal| {
        let extra = match refusal {
            Refusal::Unauthorized => vec![("www-authenticate", "Bearer")],
            Refusal::MethodNotAllowed => vec![("allow", access::ALLOW)],
            _ => vec![],
        };
        refuse(worker, refusal.status(), refusal.message(), extra)
    })
}

/// `GET /injector` from a browser: the page, to a client the route answers, with or
/// without the token, which the page's own calls carry.
pub fn page(worker: &RootState, client: Result<IpAddr, NoClient>, caller: &Caller) -> Action {
    let without_token = Caller { authorization: None, ..*caller };
    match page::admit(access::admit(&worker.config.control, client, &without_token)) {
        Ok(()) => reply::http(200, page::HEADERS.to_vec(), &page::page(worker.config.control.post_documents)),
        Err(refusal) => refuse(worker, refusal.status(), refusal.message(), vec![]),
    }
}

/// Carries out `call` ([`route::call`]); `context` is the call's. Calls that write are
/// answered once every worker has the write.
pub fn carry(worker: &mut RootState, context: u32, call: Call) -> Action {
    match call {
        // The document is in the body, which Envoy hands over only once the headers went
        // on, to the buffer filter that holds them from the router (README).
        Call::AwaitBody => Action::Continue,
        Call::Document(bytes) => document(worker, context, &bytes),
        Call::Reset => {
            let start = worker.config.start.clone();
            write(worker, context, "DELETE", true, &|_| Ok(start.clone()))
        }
        // Every write resumes; this one changes nothing else.
        Call::Resume => write(worker, context, "resume", false, &|state| Ok(state.clone())),
        Call::Query(query) => edit(worker, context, query),
        Call::Refused(reason) => refuse(worker, 400, &reason, vec![]),
    }
}

/// `GET /injector?query`: reads (no parameters) or edits.
fn edit(worker: &mut RootState, context: u32, query: &str) -> Action {
    let call = match query::Call::parse_query(query) {
        Ok(call) => call,
        Err(e) => return refuse(worker, 400, &e.to_string(), vec![]),
    };
    let now = now_ms();
    if !call.changes_anything() {
        let (mut state, origin) = shared::state_and_origin();
        state.settle(now);
        return reply::json_text(200, &answer(&state, &origin, now), vec![]);
    }
    let config = Rc::clone(&worker.config);
    let change = |state: &State| match &call.destination {
        Some(destination) => destination::apply(&call, destination, &config.simple_response, state, now),
        None => call.apply(state, &config.start, now),
    };
    write(worker, context, &format!("'{query}'"), call.starts_over(), &|state| change(state).map_err(|e| e.to_string()))
}

/// A policy document: the whole state becomes the document's.
fn document(worker: &mut RootState, context: u32, body: &[u8]) -> Action {
    let now = now_ms();
    match document::parse(body, now) {
        Ok(next) => write(worker, context, "a policy document", true, &|_| Ok(next.clone())),
        Err(e) => refuse(worker, 400, &e.to_string(), vec![]),
    }
}

/// Writes what `change` makes of the state; a `dyn` closure, so one copy serves every call.
/// Every write resumes injection a guard halted; a `fresh` one (a reset, a document) also
/// empties the bounded-retry table.
fn write(worker: &mut RootState, context: u32, what: &str, fresh: bool, change: &dyn Fn(&State) -> Result<State, String>) -> Action {
    let now = now_ms();
    let paced = worker.config.envoy_fault_filter;
    let resumed = |state: &State| route::written(change(state)?, paced);
    match shared::update(&|state, origin| resumed(state).map(|next| Some((next, origin.clone())))) {
        Ok(Some((state, origin))) => {
            shared::forget_guard_window(now);
            if fresh {
                worker.count(Stat::RetryEntries, -shared::clear_retries());
            }
            worker.count(Stat::StateVersion, 1);
            worker.count(Stat::PolicyChanges, 1);
            log::info!("fault-injector: policy changed by {what}");
            let answer = answer(&state, &origin, now);
            worker.adopt(state);
            worker.publish(context, answer)
        }
        Ok(None) => refuse(worker, 503, "the shared policy could not be written; try again", vec![]),
        Err(e) => refuse(worker, 400, &e, vec![]),
    }
}

/// The state as a control call's answer shows it: the policy document, with the
/// configuration it started from.
fn answer(state: &State, origin: &Origin, now: u64) -> String {
    let counts = observe::RuleCounts::decode(&shared::read(observe::RULE_COUNTS_KEY));
    let counts = (!state.rules.is_empty()).then(|| observe::view(&counts, &state.rules));
    let document = Document { configuration: Some(origin.view()), counts, ..Document::of(state, now) };
    serde_json::to_string(&document).unwrap_or_default()
}

fn refuse(worker: &RootState, status: u16, reason: &str, extra: Vec<(&str, &str)>) -> Action {
    worker.count(Stat::ControlRefused, 1);
    log::warn!("fault-injector: control call refused ({status}): {reason}");
    reply::error(status, reason, extra)
}
