//! What happens to one request, decided in one place: a chain of early-return guards, as
//! Envoy's fault filter has. Control route? Halted by a stop condition (then it passes)?
//! Then a fault the request asks for itself (`x-fault-*`)? Then the first matching rule,
//! else the client's policy, else the default. A kubelet probe passes whatever would have
//! applied. The glue only carries the [`Decision`] out and counts it.

use crate::faults::body_change::BodyChange;
use crate::config::Config;
use crate::control::access as control;
use crate::model::duration::Millis;
use crate::faults::grpc;
use crate::faults::header_faults::{self, Asked};
use crate::model::matching::Index;
use crate::model::percentage::Percentage;
use crate::model::outbound::Direction;
use crate::model::policy::State;
use crate::faults::bounded_retries::BoundedRetries;
use crate::faults::{Fault, Kind};
pub use crate::model::rules::Source;
use crate::model::rules::RequestView;
use crate::faults::request_rewrite::RequestRewrite;
use crate::faults::reset::Reset;
use crate::faults::response::Response;
use crate::faults::response_rewrite::ResponseRewrite;
use crate::faults::slow_failure::SlowFailure;
use crate::model::sampling::{identity_hash, in_share, Sampler};
use crate::faults::throttle::Throttle;
use crate::faults::truncate::Truncate;
use crate::model::values::HttpStatus;

/// The header every injected fault carries, naming the fault.
pub const INJECTED: &str = "x-fault-injected";
/// The header an outbound listener's faults carry too: `x-fault-direction: outbound`.
/// Inbound answers stay as they were, without it.
pub const DIRECTION: &str = "x-fault-direction";

/// What `decide` reads of a request and its host, each asked only when a guard needs it:
/// every answer is a call out of the Wasm VM.
pub trait Request: RequestView {
    /// `:path`, with its query.
    fn target(&mut self) -> &str;
    /// Whether the request's connection carries the filter-state object `key`.
    fn marked(&mut self, key: &str) -> bool;
    /// The local port the request arrived at.
    fn local_port(&mut self) -> Option<u16>;
    /// How many requests the whole Envoy holds now.
    fn active_delays(&mut self) -> u64;
}

/// A local answer: what the filter replies instead of the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An HTTP answer.
    Http {
        /// Its status.
        status: u16,
        /// Its headers, `x-fault-injected` included.
        headers: Vec<(String, String)>,
        /// Its body.
        body: String,
    },
    /// A gRPC caller's answer: HTTP 200 with `grpc-status` and `grpc-message`.
    Grpc {
        /// The gRPC status code.
        code: u8,
        /// The message.
        message: String,
        /// Metadata, `x-fault-injected` included.
        metadata: Vec<(String, String)>,
    },
}

/// Why a request is answered locally, which is what it is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// An abort (`aborts_injected`).
    Abort,
    /// A canned response (`responses_injected`).
    Response,
    /// A bad `x-fault-*` header (`header_faults_refused`).
    Refused,
}

/// What a held request gets when its time is up, instead of going on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Then {
    /// Its stream is reset (`resets_injected`).
    Reset,
    /// It is answered (`slow_failures_injected`).
    Fail(Reply),
}

/// A fault on the upstream's response, decided when the request went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnResponse {
    /// Hold the response headers this long (counted as a delay now).
    Delay(Millis),
    /// Change the response (counted as `responses_rewritten`).
    Rewrite {
        /// A new status.
        status: Option<u16>,
        /// Headers set.
        add: Vec<(String, String)>,
        /// Headers removed.
        remove: Vec<String>,
    },
    /// Cut the body and reset the stream (`truncations_injected`).
    Truncate(Truncate),
    /// Release the body at a rate (`throttles_injected`).
    Throttle(Throttle),
    /// Replace or corrupt the body (`bodies_changed`).
    BodyChange(BodyChange),
}

/// A bounded-retry attempt to count in the shared table; it fails with `reply` while the
/// identity has failed fewer than `retries` times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The request identity (client, method, path).
    pub id: u64,
    /// How many of its attempts fail.
    pub retries: u32,
    /// The answer of a failing attempt.
    pub reply: Reply,
}

/// What happens to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A control call, with its query.
    Control(String),
    /// Forwarded untouched.
    Pass,
    /// A kubelet probe, forwarded untouched whatever would have applied.
    Probe,
    /// A delay would apply, but `max_active_delays` are held: forwarded untouched.
    Overflow,
    /// Answered locally.
    Reply(Answered, Reply),
    /// Held this long, then forwarded.
    Hold(Millis),
    /// A bounded-retry attempt: count it, then fail or forward it.
    CountAttempt(Attempt),
    /// Forwarded; its response gets a fault.
    OnResponse(OnResponse),
    /// Reset at once, without an answer; the upstream is never asked.
    Reset,
    /// Held this long, then reset or answered instead of forwarded.
    HoldThen(Millis, Then),
    /// Changed, then forwarded.
    Rewrite(RequestRewrite),
}

impl Decision {
    /// What the access log and the labelled counters tell of the fault: the status the
    /// request is answered with (an HTTP answer's), and how long it is held.
    pub fn detail(&self) -> Detail {
        let status = |reply: &Reply| match reply {
            Reply::Http { status, .. } => Some(*status),
            Reply::Grpc { .. } => None,
        };
        match self {
            Decision::Reply(_, reply) | Decision::CountAttempt(Attempt { reply, .. }) => Detail { status: status(reply), delay_ms: None },
            Decision::Hold(delay) | Decision::OnResponse(OnResponse::Delay(delay)) => Detail { status: None, delay_ms: Some(delay.0) },
            Decision::HoldThen(delay, Then::Fail(reply)) => Detail { status: status(reply), delay_ms: Some(delay.0) },
            Decision::HoldThen(delay, Then::Reset) => Detail { status: None, delay_ms: Some(delay.0) },
            Decision::OnResponse(OnResponse::Rewrite { status, .. }) => Detail { status: *status, delay_ms: None },
            _ => Detail::default(),
        }
    }
}

/// The status a fault answers with and how long it holds the request, where it does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    /// The HTTP status of the answer, the upstream's or the filter's.
    pub status: Option<u16>,
    /// How long the request (or its response) is held.
    pub delay_ms: Option<u64>,
}


/// Decides for one request, given the state, the configuration and the sampler; says
/// where the decision came from.
pub fn decide(state: &State, index: &Index, config: &Config, request: &mut dyn Request, sampler: &mut Sampler) -> (Decision, Source) {
    let (mut decision, source) = decide_fault(state, index, config, request, sampler);
    // Read only when a fault would otherwise apply: a passing request asks nothing more,
    // and a control call is one whatever its agent.
    let fault = !matches!(decision, Decision::Pass | Decision::Control(_));
    if fault && config.pass_probes && is_probe(request.header("user-agent").as_deref()) {
        return (Decision::Probe, source);
    }
    if config.direction == Direction::Outbound {
        say_outbound(&mut decision);
    }
    (decision, source)
}

/// Adds `x-fault-direction: outbound` to a local answer (the glue adds it to the
/// upstream's answer for faults it carries out there).
fn say_outbound(decision: &mut Decision) {
    let (Decision::Reply(_, reply) | Decision::CountAttempt(Attempt { reply, .. })) = decision else { return };
    let (Reply::Http { headers, .. } | Reply::Grpc { metadata: headers, .. }) = reply;
    headers.push((DIRECTION.into(), "outbound".into()));
}

fn decide_fault(state: &State, index: &Index, config: &Config, request: &mut dyn Request, sampler: &mut Sampler) -> (Decision, Source) {
    // Rules by exact path read the path of every request they see.
    let path_first = state.halted.is_none() && index.reads_path();
    if let Some(query) = control_call(config, request, path_first) {
        return (Decision::Control(query), Source::Nothing);
    }
    // A tripped guard halts every fault, header faults included, until a resume.
    if state.halted.is_some() {
        return (Decision::Pass, Source::Halted);
    }
    if config.header_faults.enabled {
        if let Some(decision) = by_headers(config, request, sampler) {
            return (decision, Source::Header);
        }
    }
    if state.is_idle() {
        return (Decision::Pass, Source::Nothing);
    }
    // The first matching rule decides, even when it samples the request out.
    if let Some((at, rule)) = index.first_match(&state.rules, config.direction, request) {
        let decision = by_fault(&rule.fault, rule.percentage, rule.sample_by.as_ref().map(|h| h.as_str()), "", request, sampler, config);
        return (decision, Source::Rule(at));
    }
    // The default and per-client policies are the inbound side's; outbound, only rules
    // (destination bindings among them) apply.
    if config.direction == Direction::Outbound {
        return (Decision::Pass, Source::Nothing);
    }
    let client = if state.bindings.is_empty() { None } else { request.client() };
    let policy = index.policy_for(state, client);
    // The query policy is a rule without a match: its fault, sampled at its share, named
    // by the policy's name.
    match &policy.fault {
        None => (Decision::Pass, Source::Nothing),
        Some(fault) => (by_fault(fault, policy.percentage(), config.sample_by.as_deref(), policy.name(), request, sampler, config), Source::Policy),
    }
}

/// The query of a control call. On a listener whose control route lives on marked
/// connections, an unmarked request's path is not read here, unless the rules read it
/// anyway (`path_first`): then the mark is asked only of a request on the control path.
/// Each is a host call, and one that finds the path costs Envoy some 11k instructions
/// against 3k for a mark it does not find (BENCHMARKS.md).
fn control_call(config: &Config, request: &mut dyn Request, path_first: bool) -> Option<String> {
    let control = &config.control;
    let key = control.filter_state.as_deref().filter(|_| control.enabled);
    if let Some(key) = key.filter(|_| path_first) {
        let query = control::control_query(control, |_| true, || request.target())?.to_string();
        return (request.marked(key) && control::on_control_port(control, || request.local_port())).then_some(query);
    }
    let marked = key.is_none_or(|k| request.marked(k));
    let query = control::control_query(control, |_| marked, || request.target())?.to_string();
    control::on_control_port(control, || request.local_port()).then_some(query)
}

/// True for a kubelet probe: `User-Agent: kube-probe/<version>`.
pub fn is_probe(user_agent: Option<&str>) -> bool {
    user_agent.is_some_and(|ua| ua.starts_with("kube-probe/"))
}

fn by_headers(config: &Config, request: &mut dyn Request, sampler: &mut Sampler) -> Option<Decision> {
    let (delay, abort) = (request.header(header_faults::DELAY), request.header(header_faults::ABORT));
    if delay.is_none() && abort.is_none() {
        return None;
    }
    let share = request.header(header_faults::PERCENTAGE);
    match header_faults::read(delay.as_deref(), abort.as_deref(), share.as_deref(), config.header_faults.max_delay) {
        Ok(None) => None,
        Ok(Some((asked, percentage))) if sampler.roll(percentage) => Some(match asked {
            Asked::Delay(ms) => hold(ms, request, config),
            Asked::Abort(status) => abort_reply(request, HttpStatus(status), None, "abort"),
        }),
        Ok(Some(_)) => Some(Decision::Pass),
        Err(e) => {
            let body = serde_json::json!({"error": e.to_string()}).to_string() + "\n";
            let headers = vec![("content-type".into(), "application/json".into()), (INJECTED.into(), "refused".into())];
            Some(Decision::Reply(Answered::Refused, Reply::Http { status: 400, headers, body }))
        }
    }
}

/// The decision for `fault` at `percentage`; `label` is the query policy's name for
/// `x-fault-injected`, empty for a rule (which names the fault).
fn by_fault(
    fault: &Fault,
    percentage: Percentage,
    sample_by: Option<&str>,
    label: &'static str,
    request: &mut dyn Request,
    sampler: &mut Sampler,
    config: &Config,
) -> Decision {
    if let Fault::BoundedRetries(b) = fault {
        return bounded(b.retries, b.status, percentage, request);
    }
    let sampled = match sample_by.and_then(|name| request.header(name)) {
        Some(value) => in_share(identity_hash(&[value.as_bytes()]), percentage),
        None => sampler.roll(percentage),
    };
    if !sampled {
        return Decision::Pass;
    }
    let or = |name: &'static str| if label.is_empty() { name } else { label };
    match fault {
        Fault::Delay(delay) => hold(delay.held(|| sampler.next_u64()), request, config),
        Fault::Abort(abort) => abort_reply(request, abort.status, abort.grpc_status.map(|g| g.0), or(fault.label())),
        Fault::Response(Response { status, headers, body, grpc_status }) => {
            let mut headers = headers.clone();
            headers.push((INJECTED.into(), or(fault.label()).into()));
            let reply = match grpc_status {
                Some(code) if is_grpc(request) => Reply::Grpc { code: code.0, message: body.clone(), metadata: headers },
                _ => Reply::Http { status: status.0, headers, body: body.clone() },
            };
            Decision::Reply(Answered::Response, reply)
        }
        Fault::ResponseDelay(delay) => Decision::OnResponse(OnResponse::Delay(delay.fixed)),
        Fault::ResponseRewrite(ResponseRewrite { status, add_headers, remove_headers }) => Decision::OnResponse(OnResponse::Rewrite {
            status: status.map(|s| s.0),
            add: add_headers.clone(),
            remove: remove_headers.iter().map(|h| h.as_str().to_string()).collect(),
        }),
        Fault::BoundedRetries(_) => Decision::Pass,
        Fault::Reset(Reset { after: Millis(0) }) => Decision::Reset,
        Fault::Reset(Reset { after }) => hold_then(*after, Then::Reset, request, config),
        Fault::Truncate(cut) => Decision::OnResponse(OnResponse::Truncate(*cut)),
        Fault::Throttle(rate) => Decision::OnResponse(OnResponse::Throttle(*rate)),
        Fault::BodyChange(change) => Decision::OnResponse(OnResponse::BodyChange(change.clone())),
        Fault::DelayShape(shape) => hold(shape.draw(sampler.next_even()), request, config),
        Fault::RequestRewrite(rewrite) => Decision::Rewrite(rewrite.clone()),
        // Envoy's fault filter's delay-then-abort: the delay's hold, then the abort's answer.
        Fault::SlowFailure(SlowFailure { delay, abort }) => {
            let held = delay.held(|| sampler.next_u64());
            let reply = match abort_reply(request, abort.status, abort.grpc_status.map(|g| g.0), or(fault.label())) {
                Decision::Reply(_, reply) => reply,
                _ => return Decision::Pass,
            };
            hold_then(held, Then::Fail(reply), request, config)
        }
    }
}

/// Holds the request, unless `max_active_delays` are held already.
fn hold(delay: Millis, request: &mut dyn Request, config: &Config) -> Decision {
    if !crate::delays::room_for_one_more(request.active_delays(), config.max_active_delays) {
        return Decision::Overflow;
    }
    Decision::Hold(delay)
}

/// Holds the request, then `then`; past `max_active_delays` it passes untouched, as a
/// delay would.
fn hold_then(delay: Millis, then: Then, request: &mut dyn Request, config: &Config) -> Decision {
    match hold(delay, request, config) {
        Decision::Hold(delay) => Decision::HoldThen(delay, then),
        other => other,
    }
}

fn is_grpc(request: &mut dyn Request) -> bool {
    grpc::is_grpc(request.header("content-type").as_deref())
}

/// An abort: `status`, or for a gRPC caller `grpc_status` (or the code `status` maps to).
fn abort_reply(request: &mut dyn Request, status: HttpStatus, grpc_status: Option<u8>, label: &'static str) -> Decision {
    Decision::Reply(Answered::Abort, fail(request, status.0, grpc_status, label, "fault filter abort\n", "fault filter abort"))
}

fn fail(request: &mut dyn Request, status: u16, grpc_status: Option<u8>, label: &str, body: &str, message: &str) -> Reply {
    let injected = vec![(INJECTED.to_string(), label.to_string())];
    if is_grpc(request) {
        let code = grpc_status.unwrap_or_else(|| grpc::status_for_http(status));
        return Reply::Grpc { code, message: message.into(), metadata: injected };
    }
    Reply::Http { status, headers: injected, body: body.into() }
}

/// Bounded retries: identities (client, method, path), not attempts, are sampled, so a
/// retrying client sees exactly `retries` failures.
fn bounded(retries: u32, status: HttpStatus, percentage: Percentage, request: &mut dyn Request) -> Decision {
    let ip = request.client().map(|c| c.to_string()).unwrap_or_default();
    let method = request.method();
    let id = identity_hash(&[ip.as_bytes(), method.as_bytes(), request.target().as_bytes()]);
    if !in_share(id, percentage) {
        return Decision::Pass;
    }
    let body = format!("fault filter abort ({}, bounded retries)\n", status.0);
    let reply = fail(request, status.0, None, <BoundedRetries as Kind>::LABEL, &body, "fault filter abort (bounded retries)");
    Decision::CountAttempt(Attempt { id, retries, reply })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// A request with what `decide` may read, and a log of what it read.
    struct Req {
        target: String,
        method: String,
        headers: Vec<(String, String)>,
        client: Option<IpAddr>,
        destination: Option<IpAddr>,
        marked: bool,
        port: Option<u16>,
        active: u64,
        asked: Vec<String>,
    }

    impl Req {
        fn new(target: &str) -> Req {
            let client = Some("127.0.0.1".parse().unwrap());
            Req { target: target.into(), method: "GET".into(), headers: vec![], client, destination: None, marked: false, port: None, active: 0, asked: vec![] }
        }
        fn with(mut self, name: &str, value: &str) -> Req {
            self.headers.push((name.into(), value.into()));
            self
        }
    }

    impl RequestView for Req {
        fn path(&mut self) -> String {
            self.asked.push("path".into());
            self.target.split('?').next().unwrap_or_default().to_string()
        }
        fn method(&mut self) -> String {
            self.asked.push("method".into());
            self.method.clone()
        }
        fn header(&mut self, name: &str) -> Option<String> {
            self.asked.push(name.into());
            self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        }
        fn client(&mut self) -> Option<IpAddr> {
            self.asked.push("client".into());
            self.client
        }
        fn destination(&mut self) -> Option<IpAddr> {
            self.asked.push("destination".into());
            self.destination
        }
    }

    impl Request for Req {
        fn target(&mut self) -> &str {
            self.asked.push(":path".into());
            &self.target
        }
        fn marked(&mut self, _key: &str) -> bool {
            self.asked.push("marked".into());
            self.marked
        }
        fn local_port(&mut self) -> Option<u16> {
            self.asked.push("port".into());
            self.port
        }
        fn active_delays(&mut self) -> u64 {
            self.active
        }
    }

    fn config(text: &str) -> Config {
        Config::parse(text.as_bytes()).unwrap()
    }

    fn state(document: &str) -> State {
        crate::model::document::parse(document.as_bytes(), 0).unwrap()
    }

    /// Decides on the state as a worker adopts it: with the configured canned response.
    fn run(state: &State, config: &Config, request: &mut Req) -> Decision {
        let mut state = state.clone();
        state.resolve(&config.simple_response);
        decide(&state, &Index::of(&state), config, request, &mut Sampler::new(7)).0
    }

    fn injected(decision: &Decision) -> Option<(u16, String)> {
        match decision {
            Decision::Reply(_, Reply::Http { status, headers, .. }) => {
                headers.iter().find(|(k, _)| k == INJECTED).map(|(_, v)| (*status, v.clone()))
            }
            _ => None,
        }
    }

    const ABORT_ALL: &str = r#"{"policy": {"status": 503, "percentage": 100}}"#;

    #[test]
    fn the_control_route_comes_first() {
        let aborting = state(ABORT_ALL);
        let d = run(&aborting, &Config::default(), &mut Req::new("/injector?status=500"));
        assert_eq!(d, Decision::Control("status=500".into()));
        let off = config(r#"{"control": {"enabled": false}}"#);
        assert_eq!(injected(&run(&aborting, &off, &mut Req::new("/injector"))), Some((503, "statusResponse".into())));
    }

    #[test]
    fn a_halted_state_passes_everything_but_control_calls() {
        let document = r#"{"rules": [{"fault": {"abort": {"status": 500}}}], "policy": {"status": 503, "percentage": 100},
            "clients": [{"ip": "127.0.0.1", "status": 502, "percentage": 100}]}"#;
        let mut halted = state(document);
        halted.halted = Some(crate::guard::Shown(std::rc::Rc::new(serde_json::json!({"condition": "upstream_failures"}))));
        let headers = config(r#"{"header_faults": {"enabled": true}}"#);
        let asked = &mut Req::new("/a").with("x-fault-abort-status", "418");
        assert_eq!(run(&halted, &headers, asked), Decision::Pass);
        // Said to come from the halt, for the access log.
        assert_eq!(decide(&halted, &Index::of(&halted), &Config::default(), &mut Req::new("/a"), &mut Sampler::new(7)), (Decision::Pass, Source::Halted));
        assert_eq!(run(&halted, &Config::default(), &mut Req::new("/injector?resume")), Decision::Control("resume".into()));
        halted.halted = None;
        assert_eq!(injected(&run(&halted, &Config::default(), &mut Req::new("/a"))), Some((500, "abort".into())));
    }

    #[test]
    fn a_marked_control_route_reads_no_path_on_unmarked_connections() {
        let marked = config(r#"{"control": {"filter_state": "fault_injector.control"}}"#);
        let mut request = Req::new("/injector");
        assert_eq!(run(&State::default(), &marked, &mut request), Decision::Pass);
        assert_eq!(request.asked, ["marked"], "an unmarked connection's path is not read");
        let mut request = Req::new("/injector?x");
        request.marked = true;
        assert_eq!(run(&State::default(), &marked, &mut request), Decision::Control("x".into()));
        let port = config(r#"{"control": {"port": 8282}}"#);
        assert_eq!(run(&State::default(), &port, &mut Req::new("/injector")), Decision::Pass);
        let mut request = Req::new("/injector");
        request.port = Some(8282);
        assert_eq!(run(&State::default(), &port, &mut request), Decision::Control(String::new()));
    }

    #[test]
    fn where_rules_read_the_path_the_mark_is_asked_only_on_the_control_path() {
        let marked = config(r#"{"control": {"filter_state": "fault_injector.control"}}"#);
        let rules = state(r#"{"rules": [{"match": {"path": {"exact": "/rule"}}, "fault": {"abort": {"status": 503}}}]}"#);
        let mut request = Req::new("/a");
        assert_eq!(run(&rules, &marked, &mut request), Decision::Pass);
        assert_eq!(request.asked, [":path", "path"], "no mark asked off the control path");
        let mut request = Req::new("/injector?x");
        assert_eq!(run(&rules, &marked, &mut request), Decision::Pass, "unmarked: the rules' request");
        assert_eq!(request.asked[..2], [":path", "marked"]);
        let mut request = Req::new("/injector?x");
        request.marked = true;
        assert_eq!(run(&rules, &marked, &mut request), Decision::Control("x".into()));
        // Halted, the rules read nothing: the mark first again.
        let mut halted = rules.clone();
        halted.halted = Some(crate::guard::Shown(std::rc::Rc::new(serde_json::json!({}))));
        let mut request = Req::new("/a");
        assert_eq!(run(&halted, &marked, &mut request), Decision::Pass);
        assert_eq!(request.asked, ["marked"]);
    }

    #[test]
    fn a_passing_request_reads_only_its_path() {
        let mut request = Req::new("/a");
        assert_eq!(run(&State::default(), &Config::default(), &mut request), Decision::Pass);
        assert_eq!(request.asked, [":path"]);
        let mut request = Req::new("/a");
        assert_eq!(run(&state(r#"{"policy": {"status": 503, "percentage": 0}}"#), &Config::default(), &mut request), Decision::Pass);
        assert!(!request.asked.contains(&"user-agent".to_string()), "{:?}", request.asked);
    }

    #[test]
    fn header_faults_come_before_rules_and_policies() {
        let on = config(r#"{"header_faults": {"enabled": true}}"#);
        let aborting = state(ABORT_ALL);
        let asked = &mut Req::new("/a").with("x-fault-abort-status", "418");
        assert_eq!(injected(&run(&aborting, &on, asked)), Some((418, "abort".into())));
        let delayed = &mut Req::new("/a").with("x-fault-delay-ms", "250");
        assert_eq!(run(&aborting, &on, delayed), Decision::Hold(Millis(250)));
        let bad = &mut Req::new("/a").with("x-fault-delay-ms", "soon");
        let d = run(&aborting, &on, bad);
        assert!(matches!(&d, Decision::Reply(Answered::Refused, Reply::Http { status: 400, .. })), "{d:?}");
        // Not asked for at this share: the request passes, whatever the policy.
        let sampled_out = &mut Req::new("/a").with("x-fault-abort-status", "418").with("x-fault-percentage", "0");
        assert_eq!(run(&aborting, &on, sampled_out), Decision::Pass);
        // Off by default: the policy applies.
        assert_eq!(injected(&run(&aborting, &Config::default(), asked)), Some((503, "statusResponse".into())));
    }

    #[test]
    fn the_first_matching_rule_decides_even_when_sampled_out() {
        let s = state(
            r#"{"rules": [{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 501}}, "percentage": 0},
                          {"match": {"path": {"prefix": "/b"}}, "fault": {"abort": {"status": 502}}}],
                "policy": {"status": 503, "percentage": 100}}"#,
        );
        assert_eq!(run(&s, &Config::default(), &mut Req::new("/a")), Decision::Pass);
        assert_eq!(injected(&run(&s, &Config::default(), &mut Req::new("/b"))), Some((502, "abort".into())));
        assert_eq!(injected(&run(&s, &Config::default(), &mut Req::new("/c"))), Some((503, "statusResponse".into())));
    }

    #[test]
    fn a_client_policy_wins_over_the_default() {
        let s = state(r#"{"policy": {"status": 503, "percentage": 100}, "clients": [{"ip": "127.0.0.2", "policy": "none"}]}"#);
        let mut other = Req::new("/");
        other.client = Some("127.0.0.2".parse().unwrap());
        assert_eq!(run(&s, &Config::default(), &mut other), Decision::Pass);
        assert_eq!(injected(&run(&s, &Config::default(), &mut Req::new("/"))), Some((503, "statusResponse".into())));
    }

    #[test]
    fn each_policy_becomes_its_fault() {
        let canned = config(r#"{"simple_response": {"status": 201, "body": "hi"}}"#);
        let d = run(&state(r#"{"policy": {"policy": "simpleResponse", "percentage": 100}}"#), &canned, &mut Req::new("/"));
        let headers = vec![(INJECTED.to_string(), "simpleResponse".to_string())];
        assert_eq!(d, Decision::Reply(Answered::Response, Reply::Http { status: 201, headers, body: "hi".into() }));
        let d = run(&state(r#"{"policy": {"timeout": "250ms", "percentage": 100}}"#), &canned, &mut Req::new("/"));
        assert_eq!(d, Decision::Hold(Millis(250)));
        let d = run(&state(r#"{"policy": {"boundedRetries": 2, "percentage": 100}}"#), &canned, &mut Req::new("/x?y"));
        let Decision::CountAttempt(attempt) = d else { panic!("{d:?}") };
        assert_eq!(attempt.retries, 2);
        assert_eq!(attempt.id, identity_hash(&[b"127.0.0.1", b"GET", b"/x?y"]));
        assert!(matches!(attempt.reply, Reply::Http { status: 503, .. }));
    }

    #[test]
    fn delays_past_the_limit_overflow() {
        let s = state(r#"{"policy": {"timeout": "1s", "percentage": 100}}"#);
        let limited = config(r#"{"max_active_delays": 2}"#);
        let mut request = Req::new("/");
        request.active = 2;
        assert_eq!(run(&s, &limited, &mut request), Decision::Overflow);
        request.active = 1;
        assert_eq!(run(&s, &limited, &mut request), Decision::Hold(Millis(1000)));
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let s = state(r#"{"rules": [{"fault": {"delay": {"fixed": "100ms", "jitter": "50ms"}}}]}"#);
        let mut sampler = Sampler::new(1);
        let holds: Vec<Decision> = (0..200).map(|_| decide(&s, &Index::of(&s), &Config::default(), &mut Req::new("/"), &mut sampler).0).collect();
        assert!(holds.iter().all(|d| matches!(d, Decision::Hold(Millis(ms)) if (100..=150).contains(ms))));
        assert!(holds.iter().any(|d| *d != Decision::Hold(Millis(100))));
    }

    #[test]
    fn response_faults_and_grpc_callers() {
        let s = state(
            r#"{"rules": [{"match": {"path": {"exact": "/slow"}}, "fault": {"response_delay": {"fixed": "300ms"}}},
                          {"match": {"path": {"exact": "/rewrite"}}, "fault": {"response_rewrite": {"status": 500, "remove_headers": ["ETag"]}}},
                          {"fault": {"abort": {"status": 429, "grpc_status": 8}}}]}"#,
        );
        assert_eq!(run(&s, &Config::default(), &mut Req::new("/slow")), Decision::OnResponse(OnResponse::Delay(Millis(300))));
        let rewrite = OnResponse::Rewrite { status: Some(500), add: vec![], remove: vec!["etag".into()] };
        assert_eq!(run(&s, &Config::default(), &mut Req::new("/rewrite")), Decision::OnResponse(rewrite));
        let grpc = &mut Req::new("/svc/Ping").with("content-type", "application/grpc");
        let metadata = vec![(INJECTED.to_string(), "abort".to_string())];
        let reply = Reply::Grpc { code: 8, message: "fault filter abort".into(), metadata };
        assert_eq!(run(&s, &Config::default(), grpc), Decision::Reply(Answered::Abort, reply));
    }

    #[test]
    fn new_faults_become_their_decisions() {
        let s = state(
            r#"{"rules": [{"match": {"path": {"exact": "/reset"}}, "fault": {"reset": {}}},
                          {"match": {"path": {"exact": "/hang"}}, "fault": {"reset": {"after": "2s"}}},
                          {"match": {"path": {"exact": "/cut"}}, "fault": {"truncate": {"after_bytes": 10}}},
                          {"match": {"path": {"exact": "/slow"}}, "fault": {"throttle": {"bytes_per_second": 1024}}},
                          {"match": {"path": {"exact": "/body"}}, "fault": {"body_change": {"corrupt": {"percentage": 5}}}},
                          {"match": {"path": {"exact": "/tail"}}, "fault": {"delay_shape": {"p50": "100ms", "p99": "2s"}}},
                          {"fault": {"delay": {"fixed": "5s"}, "abort": {"status": 503}}}]}"#,
        );
        let c = Config::default();
        assert_eq!(run(&s, &c, &mut Req::new("/reset")), Decision::Reset);
        assert_eq!(run(&s, &c, &mut Req::new("/hang")), Decision::HoldThen(Millis(2000), Then::Reset));
        assert_eq!(run(&s, &c, &mut Req::new("/cut")), Decision::OnResponse(OnResponse::Truncate(Truncate { after_bytes: 10 })));
        assert!(matches!(run(&s, &c, &mut Req::new("/slow")), Decision::OnResponse(OnResponse::Throttle(t)) if t.bytes_per_second() == 1024));
        assert_eq!(run(&s, &c, &mut Req::new("/body")), Decision::OnResponse(OnResponse::BodyChange(BodyChange::Corrupt { ppm: 50_000 })));
        assert!(matches!(run(&s, &c, &mut Req::new("/tail")), Decision::Hold(Millis(ms)) if ms > 0));
        let headers = vec![(INJECTED.to_string(), "slowFailure".to_string())];
        let reply = Reply::Http { status: 503, headers, body: "fault filter abort\n".into() };
        assert_eq!(run(&s, &c, &mut Req::new("/x")), Decision::HoldThen(Millis(5000), Then::Fail(reply)));
        // A slow failure past the limit of held requests passes, as a delay would.
        let mut busy = Req::new("/x");
        busy.active = 10_000;
        assert_eq!(run(&s, &c, &mut busy), Decision::Overflow);
    }

    #[test]
    fn query_policies_of_the_new_faults() {
        let c = config(r#"{"simple_response": {"status": 200, "body": "canned", "headers": [["content-type", "text/plain"]]}}"#);
        let policy = |text: &str| state(&format!(r#"{{"policy": {{{text}, "percentage": 100}}}}"#));
        assert_eq!(run(&policy(r#""policy": "resetStream""#), &c, &mut Req::new("/")), Decision::Reset);
        let hang = run(&policy(r#""policy": "resetStream", "after": "1s""#), &c, &mut Req::new("/"));
        assert_eq!(hang, Decision::HoldThen(Millis(1000), Then::Reset));
        let slow = run(&policy(r#""policy": "slowFailure", "timeout": "2s", "status": 500"#), &c, &mut Req::new("/"));
        assert!(matches!(&slow, Decision::HoldThen(Millis(2000), Then::Fail(Reply::Http { status: 500, headers, .. })) if headers[0].1 == "slowFailure"), "{slow:?}");
        let cut = run(&policy(r#""policy": "truncateResponse""#), &c, &mut Req::new("/"));
        assert_eq!(cut, Decision::OnResponse(OnResponse::Truncate(Truncate { after_bytes: 1000 })));
        let replaced = run(&policy(r#""policy": "replaceBody""#), &c, &mut Req::new("/"));
        let change = BodyChange::Replace { body: "canned".into(), content_type: Some("text/plain".into()) };
        assert_eq!(replaced, Decision::OnResponse(OnResponse::BodyChange(change)));
        // Even draws: over 2000 requests the asked percentiles hold.
        let tail = policy(r#""policy": "longTailDelay", "p50": "100ms", "p99": "2s""#);
        let mut sampler = Sampler::new(3);
        let mut held: Vec<u64> = (0..2000)
            .map(|_| match decide(&tail, &Index::of(&tail), &c, &mut Req::new("/"), &mut sampler).0 {
                Decision::Hold(Millis(ms)) => ms,
                other => panic!("{other:?}"),
            })
            .collect();
        held.sort_unstable();
        let (p50, p99) = (held[999], held[1979]);
        assert!((90..=110).contains(&p50) && (1800..=2200).contains(&p99), "{p50} {p99}");
    }

    #[test]
    fn sample_by_keeps_one_value_in_or_out() {
        let s = state(r#"{"rules": [{"fault": {"abort": {"status": 503}}, "percentage": 50, "sample_by": "x-user"}]}"#);
        for user in ["alice", "bob", "carol", "dave"] {
            let first = run(&s, &Config::default(), &mut Req::new("/").with("x-user", user));
            let mut sampler = Sampler::new(99);
            for _ in 0..20 {
                assert_eq!(decide(&s, &Index::of(&s), &Config::default(), &mut Req::new("/").with("x-user", user), &mut sampler).0, first);
            }
        }
    }

    #[test]
    fn each_direction_applies_its_own_rules() {
        let s = state(
            r#"{"rules": [{"direction": "outbound", "match": {"host": {"exact": "payments"}}, "fault": {"abort": {"status": 503}}},
                          {"direction": "outbound", "match": {"destinations": ["10.9.0.0/16"]}, "fault": {"delay": {"fixed": "200ms"}}},
                          {"match": {"path": {"prefix": "/in"}}, "fault": {"abort": {"status": 418}}}],
                "policy": {"status": 500, "percentage": 100}}"#,
        );
        let outbound = config(r#"{"direction": "outbound"}"#);
        let to = |host: &str| Req::new("/in").with(":authority", host);
        let d = run(&s, &outbound, &mut to("payments:8080"));
        let Decision::Reply(Answered::Abort, Reply::Http { status: 503, headers, .. }) = &d else { panic!("{d:?}") };
        assert!(headers.contains(&(INJECTED.into(), "abort".into())) && headers.contains(&(DIRECTION.into(), "outbound".into())));
        // Neither the inbound rule nor the default policy applies to the app's calls.
        assert_eq!(run(&s, &outbound, &mut to("catalog:8080")), Decision::Pass);
        let mut far = to("catalog");
        far.destination = Some("10.9.1.2".parse().unwrap());
        assert_eq!(run(&s, &outbound, &mut far), Decision::Hold(Millis(200)));
        // The inbound listener applies its own rule and policy, not the outbound rules, and
        // its answers say nothing of a direction.
        let d = run(&s, &Config::default(), &mut to("payments"));
        assert_eq!(injected(&d), Some((418, "abort".into())));
        let Decision::Reply(_, Reply::Http { headers, .. }) = &d else { panic!("{d:?}") };
        assert!(!headers.iter().any(|(k, _)| k == DIRECTION));
        assert_eq!(injected(&run(&s, &Config::default(), &mut Req::new("/other").with(":authority", "payments"))), Some((500, "statusResponse".into())));
        // An outbound listener has no control route: /injector is the dependency's.
        assert_eq!(run(&s, &outbound, &mut Req::new("/injector?status=500").with(":authority", "x")), Decision::Pass);
    }

    #[test]
    fn kubelet_probes_pass_untouched() {
        let aborting = state(ABORT_ALL);
        let probe = || Req::new("/healthz").with("user-agent", "kube-probe/1.35");
        assert_eq!(run(&aborting, &Config::default(), &mut probe()), Decision::Probe);
        let bounded = state(r#"{"policy": {"boundedRetries": 3, "percentage": 100}}"#);
        assert_eq!(run(&bounded, &Config::default(), &mut probe()), Decision::Probe);
        let on = config(r#"{"header_faults": {"enabled": true}}"#);
        assert_eq!(run(&State::default(), &on, &mut probe().with("x-fault-abort-status", "500")), Decision::Probe);
        // Other agents, and probes once the switch is off, get the fault.
        let curl = &mut Req::new("/healthz").with("user-agent", "curl/8.0 kube-probe/1.35");
        assert_eq!(injected(&run(&aborting, &Config::default(), curl)), Some((503, "statusResponse".into())));
        let off = config(r#"{"probes": {"pass": false}}"#);
        assert_eq!(injected(&run(&aborting, &off, &mut probe())), Some((503, "statusResponse".into())));
        // A control call is one whatever its agent.
        let control = &mut Req::new("/injector?status=500").with("user-agent", "kube-probe/1.35");
        assert_eq!(run(&aborting, &Config::default(), control), Decision::Control("status=500".into()));
        // A probe when no fault applies is just a passing request: its agent is not read.
        let mut request = probe();
        assert_eq!(run(&State::default(), &Config::default(), &mut request), Decision::Pass);
        assert!(!request.asked.contains(&"user-agent".to_string()));
        assert!(is_probe(Some("kube-probe/1.35")) && !is_probe(Some("kube-probe")) && !is_probe(None));
    }

    #[test]
    fn each_decision_says_where_it_came_from_and_what_it_did() {
        let s = state(
            r#"{"rules": [{"name": "slow", "match": {"path": {"prefix": "/slow"}}, "fault": {"delay": {"fixed": "250ms"}}},
                          {"match": {"path": {"prefix": "/off"}}, "fault": {"abort": {"status": 500}}, "percentage": 0}],
                "policy": {"status": 503, "percentage": 100}}"#,
        );
        let on = config(r#"{"header_faults": {"enabled": true}}"#);
        let mut sampler = Sampler::new(1);
        let mut at = |c: &Config, request: &mut Req| decide(&s, &Index::of(&s), c, request, &mut sampler);
        let (held, from) = at(&on, &mut Req::new("/slow"));
        assert_eq!((held.detail(), from), (Detail { status: None, delay_ms: Some(250) }, Source::Rule(0)));
        // Matched, sampled out: still the rule's.
        assert_eq!(at(&on, &mut Req::new("/off")), (Decision::Pass, Source::Rule(1)));
        let (aborted, from) = at(&on, &mut Req::new("/x"));
        assert_eq!((aborted.detail(), from), (Detail { status: Some(503), delay_ms: None }, Source::Policy));
        let (asked, from) = at(&on, &mut Req::new("/slow").with("x-fault-abort-status", "418"));
        assert_eq!((asked.detail(), from), (Detail { status: Some(418), delay_ms: None }, Source::Header));
        assert_eq!(at(&on, &mut Req::new("/injector")).1, Source::Nothing);
        assert_eq!(decide(&State::default(), &Index::of(&State::default()), &on, &mut Req::new("/"), &mut Sampler::new(1)), (Decision::Pass, Source::Nothing));
        let slow_failure = Decision::HoldThen(Millis(5), Then::Fail(Reply::Http { status: 502, headers: vec![], body: String::new() }));
        assert_eq!(slow_failure.detail(), Detail { status: Some(502), delay_ms: Some(5) });
        assert_eq!(Decision::Reset.detail(), Detail::default());
    }
}
