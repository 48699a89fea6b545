//! One request and its answer, carried out: what [`decide`](crate::decide::decide) said,
//! done through two small traits, [`Host`] (this stream: its headers, a local reply, a
//! reset, the response body in hand) and [`Worker`] (the worker it runs on: the clock,
//! counters, the timer queues of held requests, the bounded-retry table, the labelled
//! counters and access log). The Wasm glue implements them with proxy-wasm host calls;
//! the tests below with a fake, so this runs on the host.
//!
//! What one request is at each step is one [`Phase`]: held, waiting for its answer with a
//! fault to apply, cutting or changing a body... so that no two of them can be set at once.

use crate::config::Config;
use crate::decide::{Attempt, Decision, Detail, OnResponse, Reply, Source, Then, DIRECTION, INJECTED};
use crate::delays::{self, MS};
use crate::faults::body_change::{self, BodyChange, Corrupter};
use crate::faults::request_rewrite;
use crate::faults::retries;
use crate::faults::throttle::RATE_HEADER;
use crate::faults::truncate::{self, Cut, Cutter};
use crate::model::outbound::Direction;
use crate::model::sampling::Sampler;
use crate::respond::{self, Answer, Counted};
use crate::stats::Stat;

/// How long after a cut the stream is reset: long enough for the codec to write what the
/// cut let through. With 5 ms, an HTTP/2 client whose whole short body came in one piece
/// with its end got the reset before the response headers; with 30 ms it gets them.
const CUT_RESET_MS: u64 = 30;

/// Which side of the stream: its request or its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The request (its headers; a reset before any answer).
    Request,
    /// The response (its headers; a reset mid-answer).
    Response,
}

/// What the host does for one stream.
pub trait Host {
    /// A header of `side`.
    fn header(&mut self, side: Side, name: &str) -> Option<String>;
    /// Sets (or with `None` removes) a header of `side`.
    fn set_header(&mut self, side: Side, name: &str, value: Option<&str>);
    /// Answers locally; the request goes no further.
    fn send_reply(&mut self, reply: &Reply);
    /// Resets the stream once the current callback returns.
    fn reset(&mut self, side: Side);
    /// The first `max` bytes of the response body piece in hand.
    fn body(&mut self, max: usize) -> Vec<u8>;
    /// Replaces the whole body piece in hand (`size` bytes) with `bytes`.
    fn set_body(&mut self, size: usize, bytes: &[u8]);
    /// Envoy's `response.code_details`: who answered, or why Envoy did.
    fn response_details(&mut self) -> Vec<u8>;
}

/// Which of the worker's timer queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// Held requests.
    Requests,
    /// Held responses.
    Responses,
    /// Cut responses whose stream is reset when due.
    Resets,
    /// Requests handed to Envoy's fault filter to hold: counted in `active_delays` until a
    /// tick finds them due or they end, and no timer is armed for them (see
    /// [`crate::delays`]).
    Handed,
}

/// What the worker keeps for all its requests.
pub trait Worker {
    /// A fault on the response body as its request was observed, to be told once applied.
    type Noted;
    /// The listener's configuration.
    fn config(&self) -> &Config;
    /// Envoy's clock (ns since the epoch).
    fn now_ns(&mut self) -> u64;
    /// Adds to a counter or a gauge.
    fn count(&mut self, stat: Stat, delta: i64);
    /// A gauge's value across the whole Envoy.
    fn gauge(&mut self, stat: Stat) -> u64;
    /// Puts this request in `queue` until `due_ns`, with the timer armed for it (`now_ns` is
    /// the clock read that `due_ns` was counted from).
    fn hold(&mut self, queue: Queue, due_ns: u64, now_ns: u64);
    /// Takes this request out of `queue`; whether it was still there.
    fn cancel(&mut self, queue: Queue, due_ns: u64) -> bool;
    /// What this held request gets when due, instead of going on.
    fn hold_then(&mut self, then: Then);
    /// Forgets what this held request was to get.
    fn forget_then(&mut self);
    /// Counts an attempt in the shared bounded-retry table.
    fn attempt(&mut self, attempt: &Attempt) -> retries::Counted;
    /// A random number (a body change's seed).
    fn random(&mut self) -> u64;
    /// Tells a decision beyond the plain counters: the rule's count, the labelled counter
    /// and the access log of a fault counted as `counted`.
    fn observe(&mut self, source: Source, counted: Stat, detail: Detail);
    /// Observes a fault on the response body when its request goes through, to be told
    /// ([`Worker::applied`]) once its answer shows a body.
    fn note(&mut self, source: Source, detail: Detail) -> Self::Noted;
    /// A noted fault on the response body was applied, counted as `counted`.
    fn applied(&mut self, noted: &Self::Noted, counted: Stat);
    /// Whether a guard watches this passing request, which is then timed.
    fn watched(&mut self, source: Source) -> bool;
}

/// What the glue returns to Envoy after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop here (held, answered, reset).
    Pause,
}

/// What the glue does with a request's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Carried {
    /// Carried out.
    Done(Flow),
    /// A control call, with its query: the control route's.
    Control(String),
}

/// Where one request is.
pub enum Phase<N> {
    /// Nothing more to do: passed, answered or reset.
    Done,
    /// Passed untouched while a guard watches such requests: its end is told, with how long
    /// it took since this time (ms).
    Watched {
        /// When it started (ms).
        since_ms: u64,
    },
    /// A control call; `post` holds the query of a `POST` whose document body is awaited.
    Control {
        /// The query of a `POST` waiting for its body.
        post: Option<String>,
    },
    /// Held until `due_ns`; then it goes on (its answer is tagged a delay), or with `then`
    /// it is answered or reset instead.
    HeldRequest {
        /// When it is released (ns).
        due_ns: u64,
        /// Whether it is answered or reset when due.
        then: bool,
    },
    /// Handed to Envoy's fault filter after this one, which holds it until `due_ns` on a
    /// timer of its own, then with `then` aborts it: that answer becomes this filter's own,
    /// or is reset.
    Handed {
        /// When the hold ends (ns).
        due_ns: u64,
        /// What it gets instead of going on, if anything.
        then: Option<Then>,
    },
    /// Changed before going upstream: its answer says so.
    Rewritten,
    /// Gone upstream with a fault for its answer.
    Awaiting {
        /// The fault.
        fault: OnResponse,
        /// For a fault on the body, what is told once the answer shows a body.
        on_body: Option<OnBody<N>>,
    },
    /// Its response headers are held until `due_ns`.
    HeldResponse {
        /// When they are released (ns).
        due_ns: u64,
    },
    /// Handed over, and aborted by Envoy's fault filter before `due_ns`: its timers run
    /// from the event loop's cached time, older than the request. The abort is made this
    /// filter's own answer at once, which is held until `due_ns` (or then reset), so that
    /// a handed slow failure or reset is never early either.
    EarlyAbort {
        /// When the answer goes on, or the stream is reset (ns).
        due_ns: u64,
        /// Whether it is reset then (on the reset queue) rather than answered.
        reset: bool,
        /// The answer's new body, once it goes on.
        body: Option<BodyFault>,
    },
    /// Its response body is under a fault.
    Body {
        /// The fault.
        fault: BodyFault,
        /// When the stream of a cut response is due to be reset (ns), once scheduled.
        reset_due: Option<u64>,
    },
}

/// A fault on the response body, until its answer shows whether it has a body.
pub struct OnBody<N> {
    /// How its request was observed.
    noted: N,
    /// What it is counted as if applied.
    counted: Stat,
    /// Whether the request was a `HEAD`, whose answer has no body.
    head: bool,
}

/// What a body fault asks after a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Send on what is in hand.
    Continue,
    /// Send on what is in hand, then reset the stream on the worker's timer.
    ContinueThenReset,
    /// Hold what is in hand (it carries the end), and reset the stream on the timer.
    HoldThenReset,
}

/// One response's body fault: cut then reset, replaced or corrupted, piece by piece as
/// Envoy hands it over.
pub enum BodyFault {
    /// Cut after some bytes, then reset.
    Cut(Cutter),
    /// Replaced: the first piece carries the new body, later ones are emptied.
    Replace {
        /// The new body.
        body: String,
        /// Whether the next piece is the first.
        first: bool,
    },
    /// A share of bytes changed.
    Corrupt(Corrupter, Sampler),
}

impl BodyFault {
    /// The fault for a body change; `seed` starts the corrupter's random numbers.
    fn changing(change: BodyChange, seed: u64) -> BodyFault {
        match change {
            BodyChange::Replace { body, .. } => BodyFault::Replace { body, first: true },
            BodyChange::Corrupt { ppm } => BodyFault::Corrupt(Corrupter::new(ppm), Sampler::new(seed)),
        }
    }

    /// A piece of `size` bytes is in hand.
    fn on_piece(&mut self, host: &mut impl Host, size: usize, end_of_stream: bool) -> Step {
        match self {
            BodyFault::Cut(cutter) => match cutter.on_body(size, end_of_stream) {
                Cut::Pass => Step::Continue,
                Cut::PassThenReset { keep } => {
                    let kept = host.body(keep);
                    host.set_body(size, &kept);
                    Step::ContinueThenReset
                }
                Cut::ResetNow => Step::HoldThenReset,
            },
            BodyFault::Replace { body, first } => {
                host.set_body(size, body_change::replaced_piece(body, *first));
                *first = false;
                Step::Continue
            }
            BodyFault::Corrupt(corrupter, random) => {
                let mut bytes = host.body(size);
                if corrupter.corrupt(&mut bytes, &mut || random.next_u64()) > 0 {
                    host.set_body(size, &bytes);
                }
                Step::Continue
            }
        }
    }

    /// The response's trailers arrived: a cut resets instead of letting them end it.
    fn on_trailers(&mut self) -> Step {
        match self {
            BodyFault::Cut(cutter) => {
                cutter.on_trailers();
                Step::HoldThenReset
            }
            _ => Step::Continue,
        }
    }
}

/// One request and its answer.
pub struct Exchange<N> {
    /// Where it is.
    pub phase: Phase<N>,
}

impl<N> Default for Exchange<N> {
    fn default() -> Self {
        Exchange { phase: Phase::Done }
    }
}

/// Holds the current request (or its response) for `ms` in `queue`; returns when it is due.
fn hold(worker: &mut impl Worker, queue: Queue, ms: u64) -> u64 {
    let now = worker.now_ns();
    let due = now + ms.saturating_mul(MS);
    hold_until(worker, queue, due, now);
    due
}

/// Holds the current request (or its response) in `queue` until `due_ns`, counted from
/// the clock read `now_ns`; it counts in `active_delays` until released ([`unhold`]).
fn hold_until(worker: &mut impl Worker, queue: Queue, due_ns: u64, now_ns: u64) {
    worker.hold(queue, due_ns, now_ns);
    worker.count(Stat::ActiveDelays, 1);
}

impl<N> Exchange<N> {
    /// Carries out `decision`, which came from `source`, on the request's headers, and
    /// counts it as what it turned out to be.
    pub fn on_request<W: Worker<Noted = N>>(&mut self, host: &mut impl Host, worker: &mut W, decision: Decision, source: Source) -> Carried {
        // Envoy's fault filter after this one: it paces throttles and holds slow failures and
        // resets, whose early aborts wait here; plain delays only where the configuration
        // takes its early releases.
        let paced = worker.config().envoy_fault_filter;
        let handing = worker.config().envoy_fault_filter_delays;
        let detail = decision.detail();
        // What it counts as now; a bounded-retry attempt and a fault on the body say later.
        let counted = respond::counted(&decision, paced);
        let (now, also) = match counted {
            Counted::Now(stat, also) => (stat, also),
            _ => (Stat::RequestsPassed, None),
        };
        if let Some(also) = also {
            worker.count(also, 1);
        }
        let (counted, flow) = match decision {
            Decision::Control(query) => return Carried::Control(query),
            Decision::Reply(_, answer) => {
                host.send_reply(&answer);
                (now, Flow::Pause)
            }
            Decision::Hold(delay) if handing => {
                self.hand_over(host, worker, delay.0, None);
                (now, Flow::Continue)
            }
            Decision::HoldThen(delay, then) if paced => {
                self.hand_over(host, worker, delay.0, Some(then));
                (now, Flow::Continue)
            }
            Decision::Hold(delay) => {
                let due_ns = hold(worker, Queue::Requests, delay.0);
                self.phase = Phase::HeldRequest { due_ns, then: false };
                (now, Flow::Pause)
            }
            Decision::HoldThen(delay, then) => {
                let due_ns = hold(worker, Queue::Requests, delay.0);
                worker.hold_then(then);
                self.phase = Phase::HeldRequest { due_ns, then: true };
                (now, Flow::Pause)
            }
            Decision::CountAttempt(attempt) => {
                let counted = worker.attempt(&attempt);
                // The table's gauge is shared by every worker; the CAS write replaced exactly
                // the shard read, so adding its change in length keeps the sum exact.
                worker.count(Stat::RetryEntries, counted.grown);
                if counted.evicted {
                    worker.count(Stat::RetryEvictions, 1);
                }
                match counted.attempt {
                    retries::Attempt::Fail(_) => {
                        host.send_reply(&attempt.reply);
                        (Stat::RetriesInjected, Flow::Pause)
                    }
                    retries::Attempt::Pass => (Stat::RequestsPassed, Flow::Continue),
                }
            }
            // An unpaced throttle passes.
            Decision::OnResponse(_) if also.is_some() => (now, Flow::Continue),
            Decision::OnResponse(fault) if let Counted::OnAnswer(stat) = counted => {
                if let OnResponse::Throttle(rate) = fault {
                    mark_for_envoy_fault_filter(host);
                    host.set_header(Side::Request, RATE_HEADER, Some(&rate.kib_per_second().to_string()));
                }
                // Counted, labelled and logged when the answer shows it has a body.
                let head = host.header(Side::Request, ":method").is_some_and(|m| m.eq_ignore_ascii_case("HEAD"));
                let on_body = Some(OnBody { noted: worker.note(source, detail), counted: stat, head });
                self.phase = Phase::Awaiting { fault, on_body };
                worker.count(Stat::RequestsSeen, 1);
                return Carried::Done(Flow::Continue);
            }
            Decision::OnResponse(fault) => {
                self.phase = Phase::Awaiting { fault, on_body: None };
                (now, Flow::Continue)
            }
            Decision::Reset => {
                host.reset(Side::Request);
                (now, Flow::Pause)
            }
            Decision::Rewrite(rewrite) => {
                // Before the router reads the request: Envoy picks the route again for a
                // request whose headers a Wasm filter changed.
                let path = host.header(Side::Request, ":path").unwrap_or_default();
                if let Some(target) = rewrite.target(&path) {
                    host.set_header(Side::Request, ":path", Some(&target));
                }
                if let Some(method) = &rewrite.method {
                    host.set_header(Side::Request, ":method", Some(method));
                }
                for name in &rewrite.remove_headers {
                    host.set_header(Side::Request, name, None);
                }
                for (name, value) in &rewrite.set_headers {
                    host.set_header(Side::Request, name, Some(value));
                }
                self.phase = Phase::Rewritten;
                (now, Flow::Continue)
            }
            // Passing: a pass, a probe, an overflow.
            Decision::Pass | Decision::Probe | Decision::Overflow => (now, Flow::Continue),
        };
        worker.count(Stat::RequestsSeen, 1);
        worker.count(counted, 1);
        // A request no rule or fault touched leaves no trace but the two counts: its access
        // log reads `-`.
        if source != Source::Nothing {
            worker.observe(source, counted, detail);
        }
        // Only a request under a guard pays for the clock now and the response's status
        // later, and only one the guard watches: an unrelated failing path does not halt
        // the faults.
        if matches!(counted, Stat::RequestsPassed | Stat::ProbesPassed) && worker.watched(source) {
            let since_ms = worker.now_ns() / MS;
            self.phase = Phase::Watched { since_ms };
        }
        Carried::Done(flow)
    }

    /// Hands the hold to Envoy's fault filter after this one (see [`crate::delays`]): it
    /// holds the request `ms` on a timer of its own, as it holds its own delays, then with
    /// `then` aborts it, and this filter makes that answer its own (or resets it) on the
    /// way back. It counts in `active_delays` until a tick of the worker finds it due or
    /// the request ends: no timer is armed for it, since waking the worker at every due
    /// time made Envoy's own timers fire earlier than they do for its own delays
    /// (BENCHMARKS.md).
    fn hand_over(&mut self, host: &mut impl Host, worker: &mut impl Worker, ms: u64, then: Option<Then>) {
        mark_for_envoy_fault_filter(host);
        if ms > 0 {
            host.set_header(Side::Request, delays::DELAY_HEADER, Some(&ms.to_string()));
        }
        let abort = match &then {
            Some(Then::Fail(Reply::Grpc { code, .. })) => Some((delays::ABORT_GRPC_HEADER, u16::from(*code))),
            Some(Then::Fail(Reply::Http { status, .. })) => Some((delays::ABORT_HEADER, *status)),
            Some(Then::Reset) => Some((delays::ABORT_HEADER, delays::RESET_ABORT_STATUS)),
            None => None,
        };
        if let Some((name, code)) = abort {
            host.set_header(Side::Request, name, Some(&code.to_string()));
        }
        let due_ns = hold(worker, Queue::Handed, ms);
        self.phase = Phase::Handed { due_ns, then };
    }

    /// The answer to a request handed to Envoy's fault filter with an abort, whose hold
    /// was due at `due_ns`: the abort becomes this filter's slow failure, or its stream is
    /// reset, so the upstream never saw the request; an abort before its time waits for it
    /// ([`Phase::EarlyAbort`]). Any other answer (a fault filter configured without
    /// `header_abort`) is left alone.
    fn envoy_answered(&mut self, host: &mut impl Host, worker: &mut impl Worker, then: Then, end_of_stream: bool, due_ns: u64) -> Option<Flow> {
        let details = host.response_details();
        if !details.starts_with(delays::FAULT_ABORT_DETAILS.as_bytes()) {
            log::warn!("fault-injector: Envoy's fault filter did not abort a request handed to it ({}); it needs delay.header_delay and abort.header_abort, as in envoy/sidecar.yaml (docs/troubleshooting.md)", String::from_utf8_lossy(&details));
            return None;
        }
        let now = worker.now_ns();
        let early = now < due_ns;
        let mut new_body = None;
        match then {
            Then::Reset if early => {
                worker.hold(Queue::Resets, due_ns, now);
                self.phase = Phase::EarlyAbort { due_ns, reset: true, body: None };
                return Some(Flow::Pause);
            }
            Then::Reset => {
                host.reset(Side::Response);
                return Some(Flow::Pause);
            }
            Then::Fail(Reply::Http { status, headers, body }) => {
                host.set_header(Side::Response, ":status", Some(&status.to_string()));
                headers.iter().for_each(|(name, value)| host.set_header(Side::Response, name, Some(value)));
                if !end_of_stream {
                    host.set_header(Side::Response, "content-length", Some(&body.len().to_string()));
                    new_body = Some(BodyFault::Replace { body, first: true });
                }
            }
            Then::Fail(Reply::Grpc { message, metadata, .. }) => {
                host.set_header(Side::Response, "grpc-message", Some(&message));
                metadata.iter().for_each(|(name, value)| host.set_header(Side::Response, name, Some(value)));
            }
        }
        if early {
            hold_until(worker, Queue::Responses, due_ns, now);
            self.phase = Phase::EarlyAbort { due_ns, reset: false, body: new_body };
        } else if let Some(fault) = new_body {
            self.phase = Phase::Body { fault, reset_due: None };
        }
        None
    }

    /// The upstream's response headers arrived (`end_of_stream`: and ended the stream):
    /// tags the answer and applies the fault waiting for it, if it applies.
    pub fn on_response_headers<W: Worker<Noted = N>>(&mut self, host: &mut impl Host, worker: &mut W, end_of_stream: bool) -> Flow {
        let outbound = |worker: &W| worker.config().direction == Direction::Outbound;
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Rewritten => {
                host.set_header(Side::Response, INJECTED, Some(request_rewrite::NAME));
                if outbound(worker) {
                    host.set_header(Side::Response, DIRECTION, Some("outbound"));
                }
                Flow::Continue
            }
            Phase::Handed { due_ns, then } => {
                // Its hold is over: the fault filter let it go on, or aborted it.
                unhold(worker, Queue::Handed, due_ns);
                let held_then = then.is_some();
                if let Some(flow) = then.and_then(|then| self.envoy_answered(host, worker, then, end_of_stream, due_ns)) {
                    return flow;
                }
                if outbound(worker) {
                    host.set_header(Side::Response, DIRECTION, Some("outbound"));
                }
                if !held_then {
                    host.set_header(Side::Response, INJECTED, Some("delay"));
                }
                // An early abort's answer goes on when the worker's timer finds it due.
                if matches!(self.phase, Phase::EarlyAbort { .. }) {
                    return Flow::Pause;
                }
                Flow::Continue
            }
            Phase::HeldRequest { then, .. } => {
                if outbound(worker) {
                    host.set_header(Side::Response, DIRECTION, Some("outbound"));
                }
                // A held request that was answered instead carries its own tag.
                if !then {
                    host.set_header(Side::Response, INJECTED, Some("delay"));
                }
                Flow::Continue
            }
            Phase::Awaiting { fault, on_body } => {
                if let Some(OnBody { noted, counted, head }) = on_body {
                    let status = host.header(Side::Response, ":status").and_then(|s| s.parse().ok()).unwrap_or(200);
                    if !respond::applies(&fault, Answer { head, status, end_of_stream }) {
                        // Not applied to this answer: nothing to count but a request that passed.
                        worker.count(Stat::RequestsPassed, 1);
                        return Flow::Continue;
                    }
                    worker.applied(&noted, counted);
                }
                if outbound(worker) {
                    host.set_header(Side::Response, DIRECTION, Some("outbound"));
                }
                self.answer(host, worker, fault)
            }
            other => {
                self.phase = other;
                Flow::Continue
            }
        }
    }

    /// Applies `fault` to the answer whose headers are in hand.
    /// The tag comes after the fault's own header edits, where the answers always had it.
    fn answer(&mut self, host: &mut impl Host, worker: &mut impl Worker, fault: OnResponse) -> Flow {
        let label = respond::label(&fault);
        match fault {
            OnResponse::Delay(delay) => {
                host.set_header(Side::Response, INJECTED, Some(label));
                // Counted as a delay when the request chose it; past the limit it goes on.
                if delays::room_for_one_more(worker.gauge(Stat::ActiveDelays), worker.config().max_active_delays) {
                    let due_ns = hold(worker, Queue::Responses, delay.0);
                    self.phase = Phase::HeldResponse { due_ns };
                    return Flow::Pause;
                }
                worker.count(Stat::DelaysOverflow, 1);
                return Flow::Continue;
            }
            OnResponse::Rewrite { status, add, remove } => {
                if let Some(status) = status {
                    host.set_header(Side::Response, ":status", Some(&status.to_string()));
                }
                for name in &remove {
                    host.set_header(Side::Response, name, None);
                }
                for (name, value) in &add {
                    host.set_header(Side::Response, name, Some(value));
                }
            }
            // Envoy's fault filter, after this one, paces the body.
            OnResponse::Throttle(_) => {}
            OnResponse::Truncate(cut) => {
                let length = host.header(Side::Response, "content-length").and_then(|l| l.parse().ok());
                let cut = truncate::within(cut, length);
                self.phase = Phase::Body { fault: BodyFault::Cut(Cutter::new(cut)), reset_due: None };
            }
            OnResponse::BodyChange(change) => {
                let edits = change.header_edits();
                for name in edits.remove {
                    host.set_header(Side::Response, name, None);
                }
                if let Some(length) = edits.content_length {
                    host.set_header(Side::Response, "content-length", Some(&length.to_string()));
                }
                if let Some(content_type) = edits.content_type {
                    host.set_header(Side::Response, "content-type", Some(content_type));
                }
                let seed = worker.random();
                self.phase = Phase::Body { fault: BodyFault::changing(change, seed), reset_due: None };
            }
        }
        host.set_header(Side::Response, INJECTED, Some(label));
        Flow::Continue
    }

    /// A piece of the response body (`size` bytes) is in hand.
    pub fn on_response_body(&mut self, host: &mut impl Host, worker: &mut impl Worker, size: usize, end_of_stream: bool) -> Flow {
        // The body of an early abort's answer comes once the answer goes on.
        if let Phase::EarlyAbort { body, .. } = &mut self.phase {
            if let Some(fault) = body.take() {
                self.phase = Phase::Body { fault, reset_due: None };
            }
        }
        let Phase::Body { fault, reset_due } = &mut self.phase else { return Flow::Continue };
        match fault.on_piece(host, size, end_of_stream) {
            Step::Continue => Flow::Continue,
            // On the timer, not now: a reset in this callback would drop the bytes just let
            // through, which the HTTP/2 codec has not written yet.
            Step::ContinueThenReset => {
                reset_soon(worker, reset_due);
                Flow::Continue
            }
            Step::HoldThenReset => {
                reset_soon(worker, reset_due);
                Flow::Pause
            }
        }
    }

    /// The response's trailers arrived.
    pub fn on_response_trailers(&mut self, worker: &mut impl Worker) -> Flow {
        let Phase::Body { fault, reset_due } = &mut self.phase else { return Flow::Continue };
        match fault.on_trailers() {
            Step::HoldThenReset => {
                reset_soon(worker, reset_due);
                Flow::Pause
            }
            _ => Flow::Continue,
        }
    }

    /// Whether the answer's headers have anything to do: a request that passed (watched by a
    /// guard or not) or a control call has nothing, so the glue need not lend it the worker.
    pub fn acts_on_response(&self) -> bool {
        !matches!(self.phase, Phase::Done | Phase::Watched { .. } | Phase::Control { .. })
    }

    /// Whether the answer's body and trailers have anything to do: a body fault is under way.
    /// (`on_response_body` and `on_response_trailers` pass anything else on as it is.)
    pub fn acts_on_body(&self) -> bool {
        matches!(self.phase, Phase::Body { .. } | Phase::EarlyAbort { body: Some(_), .. })
    }

    /// When a request a guard watches started (ms).
    pub fn watched_since(&self) -> Option<u64> {
        match self.phase {
            Phase::Watched { since_ms } => Some(since_ms),
            _ => None,
        }
    }

    /// Whether [`Exchange::end`] has anything to do with the worker.
    pub fn holds_anything(&self) -> bool {
        matches!(
            self.phase,
            Phase::HeldRequest { .. } | Phase::Handed { .. } | Phase::HeldResponse { .. } | Phase::EarlyAbort { .. } | Phase::Body { reset_due: Some(_), .. } | Phase::Awaiting { on_body: Some(_), .. }
        )
    }

    /// The request is gone (done, or its client hung up while held): what the worker still
    /// holds of it is forgotten, so it is not resumed or answered later, and a body fault no
    /// answer came for counts as a request that passed.
    pub fn end<W: Worker<Noted = N>>(&mut self, worker: &mut W) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Awaiting { on_body: Some(_), .. } => worker.count(Stat::RequestsPassed, 1),
            Phase::HeldRequest { due_ns, then } => {
                if then {
                    worker.forget_then();
                }
                unhold(worker, Queue::Requests, due_ns);
            }
            Phase::HeldResponse { due_ns } | Phase::EarlyAbort { due_ns, reset: false, .. } => unhold(worker, Queue::Responses, due_ns),
            Phase::Handed { due_ns, .. } => unhold(worker, Queue::Handed, due_ns),
            Phase::EarlyAbort { due_ns, reset: true, .. } | Phase::Body { reset_due: Some(due_ns), .. } => {
                worker.cancel(Queue::Resets, due_ns);
            }
            _ => {}
        }
    }
}

/// Has Envoy's fault filter after this one act on the request ([`delays::MARK`]), with
/// none of the `x-envoy-fault-*` headers its client sent.
fn mark_for_envoy_fault_filter(host: &mut impl Host) {
    for name in delays::CLIENT_HEADERS {
        host.set_header(Side::Request, name, None);
    }
    host.set_header(Side::Request, delays::MARK, Some("1"));
}

/// Takes the current request (or its response) out of `queue` if still held there.
fn unhold(worker: &mut impl Worker, queue: Queue, due_ns: u64) {
    if worker.cancel(queue, due_ns) {
        worker.count(Stat::ActiveDelays, -1);
    }
}

/// Has the worker's timer reset this response's stream shortly after now, once.
fn reset_soon(worker: &mut impl Worker, reset_due: &mut Option<u64>) {
    if reset_due.is_none() {
        let now = worker.now_ns();
        let due = now + CUT_RESET_MS * MS;
        worker.hold(Queue::Resets, due, now);
        *reset_due = Some(due);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::decide::Answered;
    use crate::faults::request_rewrite::RequestRewrite;
    use crate::faults::throttle::Throttle;
    use crate::faults::truncate::Truncate;
    use crate::model::duration::Millis;
    use std::collections::BTreeMap;

    /// A stream: its headers, what was answered or reset, and the body piece in hand.
    #[derive(Default)]
    struct FakeHost {
        request: BTreeMap<String, String>,
        response: BTreeMap<String, String>,
        replies: Vec<Reply>,
        resets: Vec<Side>,
        piece: Vec<u8>,
        /// How many calls were made.
        calls: usize,
        /// The response headers set or removed, in order.
        written: Vec<String>,
        /// What `response.code_details` says.
        details: String,
    }

    impl FakeHost {
        fn get(&self, name: &str) -> Option<&str> {
            self.response.get(name).map(String::as_str)
        }
    }

    impl Host for FakeHost {
        fn header(&mut self, side: Side, name: &str) -> Option<String> {
            self.calls += 1;
            let map = if side == Side::Request { &self.request } else { &self.response };
            map.get(name).cloned()
        }
        fn set_header(&mut self, side: Side, name: &str, value: Option<&str>) {
            self.calls += 1;
            if side == Side::Response {
                self.written.push(name.into());
            }
            let map = if side == Side::Request { &mut self.request } else { &mut self.response };
            match value {
                Some(value) => map.insert(name.into(), value.into()),
                None => map.remove(name),
            };
        }
        fn send_reply(&mut self, reply: &Reply) {
            self.calls += 1;
            self.replies.push(reply.clone());
        }
        fn reset(&mut self, side: Side) {
            self.calls += 1;
            self.resets.push(side);
        }
        fn body(&mut self, max: usize) -> Vec<u8> {
            self.calls += 1;
            self.piece.iter().copied().take(max).collect()
        }
        fn set_body(&mut self, size: usize, bytes: &[u8]) {
            self.calls += 1;
            assert_eq!(size, self.piece.len(), "the whole piece in hand is replaced");
            self.piece = bytes.to_vec();
        }
        fn response_details(&mut self) -> Vec<u8> {
            self.calls += 1;
            self.details.clone().into_bytes()
        }
    }

    /// A worker: counts, held requests, a bounded-retry table that fails the first attempt
    /// of each identity, and what was told.
    #[derive(Default)]
    struct FakeWorker {
        config: Config,
        now_ns: u64,
        counts: BTreeMap<String, i64>,
        active: u64,
        held: Vec<(Queue, u64)>,
        then: Option<Then>,
        tried: Vec<u64>,
        told: Vec<(Source, Stat)>,
        watching: bool,
    }

    impl FakeWorker {
        fn count_of(&self, stat: Stat) -> i64 {
            self.counts.get(&format!("{stat:?}")).copied().unwrap_or(0)
        }

        /// Every count but the gauge, as `Name=n`.
        fn counted(&self) -> Vec<String> {
            self.counts.iter().filter(|(k, v)| k.as_str() != "ActiveDelays" && **v != 0).map(|(k, v)| format!("{k}={v}")).collect()
        }
    }

    impl Worker for FakeWorker {
        type Noted = Source;
        fn config(&self) -> &Config {
            &self.config
        }
        fn now_ns(&mut self) -> u64 {
            self.now_ns
        }
        fn count(&mut self, stat: Stat, delta: i64) {
            *self.counts.entry(format!("{stat:?}")).or_default() += delta;
        }
        fn gauge(&mut self, stat: Stat) -> u64 {
            assert_eq!(stat, Stat::ActiveDelays);
            self.active + self.count_of(Stat::ActiveDelays) as u64
        }
        fn hold(&mut self, queue: Queue, due_ns: u64, now_ns: u64) {
            assert_eq!(now_ns, self.now_ns);
            self.held.push((queue, due_ns));
        }
        fn cancel(&mut self, queue: Queue, due_ns: u64) -> bool {
            let before = self.held.len();
            self.held.retain(|held| *held != (queue, due_ns));
            self.held.len() < before
        }
        fn hold_then(&mut self, then: Then) {
            self.then = Some(then);
        }
        fn forget_then(&mut self) {
            self.then = None;
        }
        fn attempt(&mut self, attempt: &Attempt) -> retries::Counted {
            let seen = self.tried.contains(&attempt.id);
            self.tried.push(attempt.id);
            let attempt = if seen { retries::Attempt::Pass } else { retries::Attempt::Fail(1) };
            retries::Counted { attempt, grown: i64::from(!seen), evicted: false }
        }
        fn random(&mut self) -> u64 {
            7
        }
        fn observe(&mut self, source: Source, counted: Stat, _: Detail) {
            self.told.push((source, counted));
        }
        fn note(&mut self, source: Source, _: Detail) -> Source {
            source
        }
        fn applied(&mut self, noted: &Source, counted: Stat) {
            self.count(counted, 1);
            self.told.push((*noted, counted));
        }
        fn watched(&mut self, _: Source) -> bool {
            self.watching
        }
    }

    fn get(method: &str) -> FakeHost {
        let mut host = FakeHost::default();
        host.request.insert(":method".into(), method.into());
        host.request.insert(":path".into(), "/a?b=1".into());
        host
    }

    fn answered(host: &mut FakeHost, status: &str) {
        host.response.insert(":status".into(), status.into());
    }

    fn worker() -> FakeWorker {
        FakeWorker { now_ns: 1_000 * MS, ..FakeWorker::default() }
    }

    fn on_request(exchange: &mut Exchange<Source>, host: &mut FakeHost, worker: &mut FakeWorker, decision: Decision) -> Carried {
        exchange.on_request(host, worker, decision, Source::Rule(0))
    }

    fn throttle() -> OnResponse {
        OnResponse::Throttle(Throttle::at(2048).unwrap())
    }

    #[test]
    fn a_passing_request_counts_and_leaves_its_answer_alone() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        assert_eq!(exchange.on_request(&mut host, &mut worker, Decision::Pass, Source::Nothing), Carried::Done(Flow::Continue));
        assert_eq!(worker.counted(), ["RequestsPassed=1", "RequestsSeen=1"]);
        assert!(worker.told.is_empty(), "nothing touched it: no trace");
        answered(&mut host, "200");
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Continue);
        assert_eq!(exchange.on_response_body(&mut host, &mut worker, 10, true), Flow::Continue);
        assert_eq!(host.calls, 0, "a passing request costs the stream no host call");
        assert!(!exchange.acts_on_response());
        assert_eq!(host.response.len(), 1);
        assert!(!exchange.holds_anything());
    }

    #[test]
    fn a_control_call_is_the_control_routes() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        assert_eq!(on_request(&mut exchange, &mut host, &mut worker, Decision::Control("status=500".into())), Carried::Control("status=500".into()));
        assert!(worker.counted().is_empty());
    }

    #[test]
    fn an_abort_answers_and_counts() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        let reply = Reply::Http { status: 503, headers: vec![(INJECTED.into(), "abort".into())], body: String::new() };
        let carried = on_request(&mut exchange, &mut host, &mut worker, Decision::Reply(Answered::Abort, reply.clone()));
        assert_eq!(carried, Carried::Done(Flow::Pause));
        assert_eq!(host.replies, [reply]);
        assert_eq!(worker.counted(), ["AbortsInjected=1", "RequestsSeen=1"]);
        assert_eq!(worker.told, [(Source::Rule(0), Stat::AbortsInjected)]);
    }

    #[test]
    fn a_held_request_is_tagged_and_forgotten_if_its_client_leaves() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        assert_eq!(on_request(&mut exchange, &mut host, &mut worker, Decision::Hold(Millis(250))), Carried::Done(Flow::Pause));
        let due = 1_250 * MS;
        assert_eq!(worker.held, [(Queue::Requests, due)]);
        assert_eq!((worker.count_of(Stat::ActiveDelays), worker.count_of(Stat::DelaysInjected)), (1, 1));
        // The client hangs up while held.
        assert!(exchange.holds_anything());
        exchange.end(&mut worker);
        assert!(worker.held.is_empty());
        assert_eq!(worker.count_of(Stat::ActiveDelays), 0);
        // Released, then answered: the answer says it was delayed.
        let mut exchange = Exchange::default();
        on_request(&mut exchange, &mut host, &mut worker, Decision::Hold(Millis(250)));
        worker.held.clear();
        answered(&mut host, "200");
        exchange.on_response_headers(&mut host, &mut worker, false);
        assert_eq!(host.get(INJECTED), Some("delay"));
        exchange.end(&mut worker);
        assert_eq!(worker.count_of(Stat::ActiveDelays), 1, "released by the timer, which counts it down");
    }

    #[test]
    fn a_slow_failure_is_held_then_answered_or_forgotten() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        let reply = Reply::Http { status: 503, headers: vec![], body: String::new() };
        let decision = Decision::HoldThen(Millis(10), Then::Fail(reply.clone()));
        assert_eq!(on_request(&mut exchange, &mut host, &mut worker, decision), Carried::Done(Flow::Pause));
        assert_eq!(worker.then, Some(Then::Fail(reply)));
        assert_eq!(worker.counted(), ["RequestsSeen=1", "SlowFailuresInjected=1"]);
        exchange.end(&mut worker);
        assert_eq!((worker.then.as_ref(), worker.held.len()), (None, 0));
        // Its own answer is not tagged a delay.
        let mut exchange = Exchange::default();
        on_request(&mut exchange, &mut host, &mut worker, Decision::HoldThen(Millis(10), Then::Reset));
        exchange.on_response_headers(&mut host, &mut worker, true);
        assert_eq!(host.get(INJECTED), None);
    }

    #[test]
    fn a_delay_handed_to_envoys_fault_filter() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        worker.config.envoy_fault_filter = true;
        worker.config.envoy_fault_filter_delays = true;
        host.request.insert(delays::ABORT_HEADER.into(), "500".into());
        assert_eq!(on_request(&mut exchange, &mut host, &mut worker, Decision::Hold(Millis(250))), Carried::Done(Flow::Continue));
        let request: Vec<_> = host.request.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(request, [":method: GET", ":path: /a?b=1", "x-envoy-fault-delay-request: 250", "x-fault-injector-envoy-fault: 1"], "the client's abort is gone");
        assert_eq!(worker.held, [(Queue::Handed, 1_250 * MS)]);
        assert_eq!((worker.count_of(Stat::ActiveDelays), worker.count_of(Stat::DelaysInjected)), (1, 1));
        answered(&mut host, "200");
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Continue);
        assert_eq!(host.get(INJECTED), Some("delay"));
        assert_eq!((worker.held.len(), worker.count_of(Stat::ActiveDelays)), (0, 0), "its hold is over");
        exchange.end(&mut worker);
        assert_eq!(worker.count_of(Stat::ActiveDelays), 0);
    }

    #[test]
    fn a_slow_failure_handed_over_comes_back_as_its_own_answer() {
        let mut plain = worker();
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        // Envoy's fault filter follows: slow failures go to it, plain delays stay here.
        worker.config.envoy_fault_filter = true;
        plain.config.envoy_fault_filter = true;
        assert_eq!(on_request(&mut Exchange::default(), &mut host, &mut plain, Decision::Hold(Millis(100))), Carried::Done(Flow::Pause));
        assert_eq!(plain.held, [(Queue::Requests, 1_100 * MS)]);
        let reply = Reply::Http { status: 503, headers: vec![(INJECTED.into(), "slowFailure".into())], body: "fault filter abort\n".into() };
        on_request(&mut exchange, &mut host, &mut worker, Decision::HoldThen(Millis(100), Then::Fail(reply)));
        assert_eq!(host.request.get(delays::ABORT_HEADER).map(String::as_str), Some("503"));
        assert_eq!(worker.then, None, "the fault filter aborts it, not the worker");
        answered(&mut host, "503");
        host.details = delays::FAULT_ABORT_DETAILS.into();
        // Aborted on time.
        worker.now_ns += 100 * MS;
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Continue);
        assert_eq!((host.get(INJECTED), host.get("content-length")), (Some("slowFailure"), Some("19")));
        host.piece = b"fault filter abort".to_vec();
        exchange.on_response_body(&mut host, &mut worker, 18, true);
        assert_eq!(host.piece, b"fault filter abort\n");
        // Another answer (a fault filter without header_abort) is left alone.
        let mut exchange = Exchange::default();
        on_request(&mut exchange, &mut host, &mut worker, Decision::HoldThen(Millis(100), Then::Reset));
        host.details = "via_upstream".into();
        host.response.clear();
        answered(&mut host, "200");
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Continue);
        assert!(host.resets.is_empty() && host.get(INJECTED).is_none());
        // An aborted reset is reset.
        let mut exchange = Exchange::default();
        on_request(&mut exchange, &mut host, &mut worker, Decision::HoldThen(Millis(100), Then::Reset));
        host.details = delays::FAULT_ABORT_DETAILS.into();
        worker.now_ns += 100 * MS;
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Pause);
        assert_eq!(host.resets, [Side::Response]);
        assert_eq!(worker.count_of(Stat::ActiveDelays), 0);
    }

    #[test]
    fn an_abort_before_its_time_waits_for_it() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        worker.config.envoy_fault_filter = true;
        let reply = Reply::Http { status: 503, headers: vec![(INJECTED.into(), "slowFailure".into())], body: "held\n".into() };
        on_request(&mut exchange, &mut host, &mut worker, Decision::HoldThen(Millis(100), Then::Fail(reply)));
        let due = 1_100 * MS;
        answered(&mut host, "503");
        host.details = delays::FAULT_ABORT_DETAILS.into();
        // Envoy's timer let it go 0.3 ms before its time.
        worker.now_ns = due - 300_000;
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Pause);
        assert_eq!((host.get(INJECTED), host.get("content-length")), (Some("slowFailure"), Some("5")), "made its own at once");
        assert_eq!(worker.held, [(Queue::Responses, due)]);
        assert_eq!(worker.count_of(Stat::ActiveDelays), 1);
        assert!(exchange.acts_on_body());
        // The worker's timer lets it go; then its body comes.
        worker.held.clear();
        worker.count(Stat::ActiveDelays, -1);
        host.piece = b"fault filter abort".to_vec();
        assert_eq!(exchange.on_response_body(&mut host, &mut worker, 18, true), Flow::Continue);
        assert_eq!(host.piece, b"held\n");
        exchange.end(&mut worker);
        assert_eq!(worker.count_of(Stat::ActiveDelays), 0);

        // A client gone while it waits is forgotten.
        let mut exchange = Exchange::default();
        on_request(&mut exchange, &mut host, &mut worker, Decision::HoldThen(Millis(100), Then::Fail(Reply::Http { status: 503, headers: vec![], body: String::new() })));
        worker.now_ns = 1_000 * MS;
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, true), Flow::Pause);
        assert!(!exchange.acts_on_body(), "no body to change");
        exchange.end(&mut worker);
        assert_eq!((worker.held.len(), worker.count_of(Stat::ActiveDelays)), (0, 0));

        // A reset aborted early is reset when due, by the worker's timer.
        let mut exchange = Exchange::default();
        worker.now_ns = 1_000 * MS;
        on_request(&mut exchange, &mut host, &mut worker, Decision::HoldThen(Millis(100), Then::Reset));
        host.resets.clear();
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Pause);
        assert!(host.resets.is_empty());
        assert_eq!(worker.held, [(Queue::Resets, 1_100 * MS)]);
        assert_eq!(worker.count_of(Stat::ActiveDelays), 0, "a reset is not held in active_delays");
        exchange.end(&mut worker);
        assert!(worker.held.is_empty());
    }

    #[test]
    fn an_overflow_passes_counted() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        on_request(&mut exchange, &mut host, &mut worker, Decision::Overflow);
        assert_eq!(worker.counted(), ["DelaysOverflow=1", "RequestsPassed=1", "RequestsSeen=1"]);
    }

    #[test]
    fn bounded_retries_fail_the_first_attempt_only() {
        let (mut host, mut worker) = (get("GET"), worker());
        let reply = Reply::Http { status: 503, headers: vec![], body: String::new() };
        let attempt = || Decision::CountAttempt(Attempt { id: 9, retries: 1, reply: reply.clone() });
        assert_eq!(on_request(&mut Exchange::default(), &mut host, &mut worker, attempt()), Carried::Done(Flow::Pause));
        assert_eq!(on_request(&mut Exchange::default(), &mut host, &mut worker, attempt()), Carried::Done(Flow::Continue));
        assert_eq!(host.replies.len(), 1);
        assert_eq!(worker.counted(), ["RequestsPassed=1", "RequestsSeen=2", "RetriesInjected=1", "RetryEntries=1"]);
    }

    #[test]
    fn a_reset_and_a_rewrite() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        assert_eq!(on_request(&mut exchange, &mut host, &mut worker, Decision::Reset), Carried::Done(Flow::Pause));
        assert_eq!(host.resets, [Side::Request]);
        let rewrite = RequestRewrite {
            path: Some("/x".into()),
            method: Some("POST".into()),
            set_headers: vec![("x-a".into(), "1".into())],
            remove_headers: vec!["authorization".into()],
            query: vec![],
        };
        host.request.insert("authorization".into(), "secret".into());
        let mut exchange = Exchange::default();
        on_request(&mut exchange, &mut host, &mut worker, Decision::Rewrite(rewrite));
        let request: Vec<_> = host.request.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(request, [":method: POST", ":path: /x?b=1", "x-a: 1"]);
        exchange.on_response_headers(&mut host, &mut worker, false);
        assert_eq!(host.get(INJECTED), Some("requestRewrite"));
        assert_eq!(worker.counted(), ["RequestsRewritten=1", "RequestsSeen=2", "ResetsInjected=1"]);
    }

    #[test]
    fn a_response_delay_holds_the_answer_unless_too_many_are_held() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        worker.config.max_active_delays = 2;
        let delay = || Decision::OnResponse(OnResponse::Delay(Millis(300)));
        on_request(&mut exchange, &mut host, &mut worker, delay());
        assert_eq!(worker.counted(), ["DelaysInjected=1", "RequestsSeen=1"]);
        answered(&mut host, "200");
        assert_eq!(exchange.on_response_headers(&mut host, &mut worker, false), Flow::Pause);
        assert_eq!(host.get(INJECTED), Some("responseDelay"));
        assert_eq!(worker.held, [(Queue::Responses, 1_300 * MS)]);
        // Two held across Envoy: the next answer goes on, counted as an overflow.
        worker.active = 1;
        let mut next = Exchange::default();
        on_request(&mut next, &mut host, &mut worker, delay());
        assert_eq!(next.on_response_headers(&mut host, &mut worker, false), Flow::Continue);
        assert_eq!(worker.count_of(Stat::DelaysOverflow), 1);
        assert_eq!(worker.held.len(), 1);
        // The client of the held one hangs up.
        exchange.end(&mut worker);
        assert_eq!((worker.held.len(), worker.count_of(Stat::ActiveDelays)), (0, 0));
    }

    #[test]
    fn a_response_rewrite_on_an_outbound_listener() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        worker.config.direction = Direction::Outbound;
        let rewrite = OnResponse::Rewrite { status: Some(500), add: vec![("x-a".into(), "1".into())], remove: vec!["etag".into()] };
        on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(rewrite));
        answered(&mut host, "200");
        host.response.insert("etag".into(), "\"1\"".into());
        exchange.on_response_headers(&mut host, &mut worker, false);
        let response: Vec<_> = host.response.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(response, [":status: 500", "x-a: 1", "x-fault-direction: outbound", "x-fault-injected: responseRewrite"]);
        // In the order the answers always had (docs/policy-document.md shows it).
        assert_eq!(host.written, [DIRECTION, ":status", "etag", "x-a", INJECTED]);
        assert_eq!(worker.counted(), ["RequestsSeen=1", "ResponsesRewritten=1"]);
    }

    #[test]
    fn a_body_fault_counts_only_on_an_answer_with_a_body() {
        for (method, status, end_of_stream, applied) in [("GET", "200", false, true), ("HEAD", "200", false, false), ("GET", "204", false, false), ("GET", "304", false, false), ("GET", "200", true, false), ("GET", "101", false, false)] {
            let (mut host, mut worker, mut exchange) = (get(method), worker(), Exchange::default());
            worker.config.envoy_fault_filter = true;
            on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(throttle()));
            assert_eq!(host.request.get(RATE_HEADER).map(String::as_str), Some("2"));
            assert_eq!(worker.counted(), ["RequestsSeen=1"], "nothing counted before the answer");
            answered(&mut host, status);
            exchange.on_response_headers(&mut host, &mut worker, end_of_stream);
            let case = format!("{method} {status} {end_of_stream}");
            if applied {
                assert_eq!(worker.counted(), ["RequestsSeen=1", "ThrottlesInjected=1"], "{case}");
                assert_eq!(host.get(INJECTED), Some("throttle"), "{case}");
                assert_eq!(worker.told, [(Source::Rule(0), Stat::ThrottlesInjected)], "{case}");
            } else {
                assert_eq!(worker.counted(), ["RequestsPassed=1", "RequestsSeen=1"], "{case}");
                assert_eq!(host.get(INJECTED), None, "{case}");
                assert!(worker.told.is_empty(), "{case}");
            }
            exchange.end(&mut worker);
            assert_eq!(worker.count_of(Stat::RequestsPassed), i64::from(!applied), "{case}: counted once");
        }
    }

    #[test]
    fn a_body_fault_no_answer_came_for_passed() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(OnResponse::Truncate(Truncate { after_bytes: 3 })));
        exchange.end(&mut worker);
        assert_eq!(worker.counted(), ["RequestsPassed=1", "RequestsSeen=1"]);
    }

    #[test]
    fn an_unpaced_throttle_passes() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(throttle()));
        assert_eq!(host.request.get(RATE_HEADER), None);
        assert_eq!(worker.counted(), ["RequestsPassed=1", "RequestsSeen=1", "ThrottlesUnpaced=1"]);
        exchange.on_response_headers(&mut host, &mut worker, false);
        assert_eq!(host.get(INJECTED), None);
    }

    #[test]
    fn a_truncated_body_is_cut_then_reset_on_the_timer() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(OnResponse::Truncate(Truncate { after_bytes: 5 })));
        answered(&mut host, "200");
        host.response.insert("content-length".into(), "20".into());
        exchange.on_response_headers(&mut host, &mut worker, false);
        assert_eq!(host.get(INJECTED), Some("truncate"));
        host.piece = b"abc".to_vec();
        assert_eq!(exchange.on_response_body(&mut host, &mut worker, 3, false), Flow::Continue);
        host.piece = b"defgh".to_vec();
        assert_eq!(exchange.on_response_body(&mut host, &mut worker, 5, false), Flow::Continue);
        assert_eq!(host.piece, b"de");
        let due = 1_000 * MS + CUT_RESET_MS * MS;
        assert_eq!(worker.held, [(Queue::Resets, due)]);
        // The rest is held; the reset is scheduled once.
        host.piece = b"ijklmnopqrst".to_vec();
        assert_eq!(exchange.on_response_body(&mut host, &mut worker, 12, true), Flow::Pause);
        assert_eq!(exchange.on_response_trailers(&mut worker), Flow::Pause);
        assert_eq!(worker.held.len(), 1);
        assert!(host.resets.is_empty(), "not in the callback");
        exchange.end(&mut worker);
        assert!(worker.held.is_empty());
        assert_eq!(worker.counted(), ["RequestsSeen=1", "TruncationsInjected=1"]);
    }

    #[test]
    fn a_short_body_with_a_length_is_cut_before_its_end() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(OnResponse::Truncate(Truncate { after_bytes: 100 })));
        answered(&mut host, "200");
        host.response.insert("content-length".into(), "4".into());
        exchange.on_response_headers(&mut host, &mut worker, false);
        host.piece = b"abcd".to_vec();
        assert_eq!(exchange.on_response_body(&mut host, &mut worker, 4, false), Flow::Continue);
        assert_eq!(host.piece, b"abc");
    }

    #[test]
    fn a_replaced_body() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        let change = BodyChange::Replace { body: "new".into(), content_type: Some("text/plain".into()) };
        on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(OnResponse::BodyChange(change)));
        answered(&mut host, "200");
        host.response.insert("etag".into(), "\"1\"".into());
        host.response.insert("content-length".into(), "10".into());
        exchange.on_response_headers(&mut host, &mut worker, false);
        let response: Vec<_> = host.response.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(response, [":status: 200", "content-length: 3", "content-type: text/plain", "x-fault-injected: bodyChange"]);
        assert_eq!(host.written, ["content-encoding", "etag", "content-md5", "content-length", "content-type", INJECTED], "the tag last");
        host.piece = b"01234".to_vec();
        exchange.on_response_body(&mut host, &mut worker, 5, false);
        assert_eq!(host.piece, b"new");
        host.piece = b"56789".to_vec();
        exchange.on_response_body(&mut host, &mut worker, 5, true);
        assert_eq!(host.piece, b"");
        assert_eq!(exchange.on_response_trailers(&mut worker), Flow::Continue);
    }

    #[test]
    fn a_corrupted_body_keeps_its_length() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        on_request(&mut exchange, &mut host, &mut worker, Decision::OnResponse(OnResponse::BodyChange(BodyChange::Corrupt { ppm: 1_000_000 })));
        answered(&mut host, "200");
        exchange.on_response_headers(&mut host, &mut worker, false);
        host.piece = vec![0; 64];
        exchange.on_response_body(&mut host, &mut worker, 64, false);
        assert_eq!(host.piece.len(), 64);
        assert!(host.piece.iter().all(|b| *b != 0), "every byte changed at 100%");
    }

    #[test]
    fn a_watched_request_is_timed() {
        let (mut host, mut worker, mut exchange) = (get("GET"), worker(), Exchange::default());
        worker.watching = true;
        on_request(&mut exchange, &mut host, &mut worker, Decision::Pass);
        assert_eq!(exchange.watched_since(), Some(1_000));
        exchange.on_response_headers(&mut host, &mut worker, false);
        assert_eq!(exchange.watched_since(), Some(1_000), "until it ends");
        assert!(!exchange.acts_on_response() && !exchange.acts_on_body());
        // A fault is not watched.
        let mut exchange = Exchange::default();
        on_request(&mut exchange, &mut host, &mut worker, Decision::Reset);
        assert_eq!(exchange.watched_since(), None);
    }
}
