//! The response side of a decision, and what each decision is counted as: the choices the
//! glue used to make itself while carrying a [`Decision`] out: whether an answer has a
//! body a body fault could change, what `x-fault-injected` calls a fault on the response,
//! and which counter a decision bumps. [`crate::exchange`] carries them out.

use crate::decide::{Answered, Decision, OnResponse, Then};
use crate::faults::abort::Abort;
use crate::faults::body_change::BodyChange;
use crate::faults::delay::Delay;
use crate::faults::request_rewrite::RequestRewrite;
use crate::faults::reset::Reset;
use crate::faults::response::Response;
use crate::faults::response_delay::ResponseDelay;
use crate::faults::response_rewrite::ResponseRewrite;
use crate::faults::slow_failure;
use crate::faults::throttle::Throttle;
use crate::faults::truncate::Truncate;
use crate::faults::Kind;
use crate::stats::Stat;

/// What the upstream's response headers show of its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Whether the request was a `HEAD`.
    pub head: bool,
    /// The response status (`:status`).
    pub status: u16,
    /// Whether the response headers ended the stream.
    pub end_of_stream: bool,
}

impl Answer {
    /// Whether the answer has a body: not one to a `HEAD`, nor a 1xx, 204, 205 or 304
    /// (which never have one, RFC 9110), nor one whose headers ended the stream.
    pub fn has_body(&self) -> bool {
        !self.head && !(100..200).contains(&self.status) && !matches!(self.status, 204 | 205 | 304) && !self.end_of_stream
    }
}

/// Whether the fault works on the response body (truncate, throttle, body change): then it
/// is counted, labelled, logged and tagged only once the answer shows it has a body.
pub fn on_body(fault: &OnResponse) -> bool {
    matches!(fault, OnResponse::Truncate(_) | OnResponse::Throttle(_) | OnResponse::BodyChange(_))
}

/// Whether `fault` applies to `answer`: a body fault leaves an answer without a body alone,
/// and then it was not injected; a fault on the headers applies to any answer.
pub fn applies(fault: &OnResponse, answer: Answer) -> bool {
    !on_body(fault) || answer.has_body()
}

/// What `x-fault-injected` calls a fault on the response: its kind's label, but for a
/// response delay, which the header tells from a delay of the request (its counters and
/// access log say `delay` for both).
pub fn label(fault: &OnResponse) -> &'static str {
    match fault {
        OnResponse::Delay(_) => "responseDelay",
        OnResponse::Rewrite { .. } => ResponseRewrite::LABEL,
        OnResponse::Truncate(_) => Truncate::LABEL,
        OnResponse::Throttle(_) => Throttle::LABEL,
        OnResponse::BodyChange(_) => BodyChange::LABEL,
    }
}

/// The counter a request counts in once its fault on the response is applied (a response
/// delay counts as a delay when its request chose it, held or not).
pub fn counter(fault: &OnResponse) -> Stat {
    match fault {
        OnResponse::Delay(_) => ResponseDelay::STAT,
        OnResponse::Rewrite { .. } => ResponseRewrite::STAT,
        OnResponse::Truncate(_) => Truncate::STAT,
        OnResponse::Throttle(_) => Throttle::STAT,
        OnResponse::BodyChange(_) => BodyChange::STAT,
    }
}

/// What a decision is counted as, beside `requests_seen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Not counted: a control call, which the control route counts.
    Control,
    /// Counted now in the first counter, and in the second too if there is one.
    Now(Stat, Option<Stat>),
    /// Counted once the shared table answers: [`Stat::RetriesInjected`] if the attempt
    /// fails, else [`Stat::RequestsPassed`].
    ByAttempt,
    /// A fault on the response body: counted in this counter once the answer shows a body
    /// ([`applies`]), else as a request that passed.
    OnAnswer(Stat),
}

/// What `decision` is counted as; `paced` says whether Envoy's fault filter follows this
/// one to pace a throttle (without it a throttle passes, counted as `throttles_unpaced`).
pub fn counted(decision: &Decision, paced: bool) -> Counted {
    let now = |stat| Counted::Now(stat, None);
    match decision {
        Decision::Control(_) => Counted::Control,
        Decision::Pass => now(Stat::RequestsPassed),
        Decision::Probe => now(Stat::ProbesPassed),
        Decision::Overflow => Counted::Now(Stat::RequestsPassed, Some(Stat::DelaysOverflow)),
        Decision::Reply(Answered::Abort, _) => now(Abort::STAT),
        Decision::Reply(Answered::Response, _) => now(Response::STAT),
        Decision::Reply(Answered::Refused, _) => now(Stat::HeaderFaultsRefused),
        Decision::Hold(_) => now(Delay::STAT),
        Decision::CountAttempt(_) => Counted::ByAttempt,
        Decision::OnResponse(OnResponse::Throttle(_)) if !paced => Counted::Now(Stat::RequestsPassed, Some(Stat::ThrottlesUnpaced)),
        Decision::OnResponse(fault) if on_body(fault) => Counted::OnAnswer(counter(fault)),
        Decision::OnResponse(fault) => now(counter(fault)),
        Decision::Reset | Decision::HoldThen(_, Then::Reset) => now(Reset::STAT),
        Decision::HoldThen(_, Then::Fail(_)) => now(slow_failure::STAT),
        Decision::Rewrite(_) => now(RequestRewrite::STAT),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decide::{Attempt, Reply};
    use crate::model::duration::Millis;

    fn throttle() -> OnResponse {
        OnResponse::Throttle(Throttle::at(1024).unwrap())
    }

    fn rewrite() -> OnResponse {
        OnResponse::Rewrite { status: Some(500), add: vec![], remove: vec![] }
    }

    fn body_faults() -> [OnResponse; 3] {
        [OnResponse::Truncate(Truncate { after_bytes: 10 }), throttle(), OnResponse::BodyChange(BodyChange::Corrupt { ppm: 10_000 })]
    }

    const GET_200: Answer = Answer { head: false, status: 200, end_of_stream: false };

    #[test]
    fn answers_without_a_body() {
        assert!(GET_200.has_body());
        assert!(Answer { status: 500, ..GET_200 }.has_body());
        assert!(!Answer { head: true, ..GET_200 }.has_body());
        for status in [100, 101, 103, 199, 204, 205, 304] {
            assert!(!Answer { status, ..GET_200 }.has_body(), "{status}");
        }
        for status in [200, 201, 206, 301, 404, 503] {
            assert!(Answer { status, ..GET_200 }.has_body(), "{status}");
        }
        assert!(!Answer { end_of_stream: true, ..GET_200 }.has_body(), "headers that end the stream");
    }

    #[test]
    fn a_body_fault_applies_only_to_an_answer_with_a_body() {
        for fault in &body_faults() {
            assert!(on_body(fault) && applies(fault, GET_200), "{fault:?}");
            assert!(!applies(fault, Answer { head: true, ..GET_200 }), "{fault:?}");
            assert!(!applies(fault, Answer { status: 304, ..GET_200 }), "{fault:?}");
        }
        // Faults on the headers apply to any answer.
        let bodiless = Answer { head: true, status: 204, end_of_stream: true };
        for fault in [OnResponse::Delay(Millis(10)), rewrite()] {
            assert!(!on_body(&fault) && applies(&fault, bodiless));
        }
    }

    #[test]
    fn each_response_fault_has_its_label_and_counter() {
        let [truncate, throttle, body] = body_faults();
        let table = [
            (OnResponse::Delay(Millis(1)), "responseDelay", Stat::DelaysInjected),
            (rewrite(), "responseRewrite", Stat::ResponsesRewritten),
            (truncate, "truncate", Stat::TruncationsInjected),
            (throttle, "throttle", Stat::ThrottlesInjected),
            (body, "bodyChange", Stat::BodiesChanged),
        ];
        for (fault, name, stat) in table {
            assert_eq!((label(&fault), counter(&fault)), (name, stat));
        }
    }

    #[test]
    fn each_decision_has_its_counter() {
        let reply = Reply::Http { status: 503, headers: vec![], body: String::new() };
        let now = |stat| Counted::Now(stat, None);
        let table = [
            (Decision::Control("status=500".into()), Counted::Control),
            (Decision::Pass, now(Stat::RequestsPassed)),
            (Decision::Probe, now(Stat::ProbesPassed)),
            (Decision::Overflow, Counted::Now(Stat::RequestsPassed, Some(Stat::DelaysOverflow))),
            (Decision::Reply(Answered::Abort, reply.clone()), now(Stat::AbortsInjected)),
            (Decision::Reply(Answered::Response, reply.clone()), now(Stat::ResponsesInjected)),
            (Decision::Reply(Answered::Refused, reply.clone()), now(Stat::HeaderFaultsRefused)),
            (Decision::Hold(Millis(5)), now(Stat::DelaysInjected)),
            (Decision::CountAttempt(Attempt { id: 1, retries: 2, reply: reply.clone() }), Counted::ByAttempt),
            (Decision::OnResponse(OnResponse::Delay(Millis(5))), now(Stat::DelaysInjected)),
            (Decision::OnResponse(rewrite()), now(Stat::ResponsesRewritten)),
            (Decision::OnResponse(OnResponse::Truncate(Truncate { after_bytes: 1 })), Counted::OnAnswer(Stat::TruncationsInjected)),
            (Decision::OnResponse(throttle()), Counted::OnAnswer(Stat::ThrottlesInjected)),
            (Decision::OnResponse(OnResponse::BodyChange(BodyChange::Corrupt { ppm: 1 })), Counted::OnAnswer(Stat::BodiesChanged)),
            (Decision::Reset, now(Stat::ResetsInjected)),
            (Decision::HoldThen(Millis(5), Then::Reset), now(Stat::ResetsInjected)),
            (Decision::HoldThen(Millis(5), Then::Fail(reply)), now(Stat::SlowFailuresInjected)),
            (Decision::Rewrite(RequestRewrite::default()), now(Stat::RequestsRewritten)),
        ];
        for (decision, expected) in table {
            assert_eq!(counted(&decision, true), expected, "{decision:?}");
        }
        // Without Envoy's fault filter after this one nothing would pace the body.
        assert_eq!(counted(&Decision::OnResponse(throttle()), false), Counted::Now(Stat::RequestsPassed, Some(Stat::ThrottlesUnpaced)));
        assert_eq!(counted(&Decision::OnResponse(OnResponse::Truncate(Truncate { after_bytes: 1 })), false), Counted::OnAnswer(Stat::TruncationsInjected));
    }
}
