//! The glue of [`crate::peers`]: this root context's queue and its place on the roster, the
//! notices a write of the state sends the other root contexts, and the control calls held
//! until they all have the write. A request then never asks whether the state moved.

use super::reply;
use super::root::Worker;
use super::{log, now_ms, shared};
use crate::peers::{Done, Message, Roster};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, LogLevel};

const ROSTER_KEY: &str = "fault_injector.roster";
/// Numbers the queues, so that every root context's queue has a name of its own: a name
/// registered twice moves the queue to the second registrant.
const QUEUES_KEY: &str = "fault_injector.queues";
/// How long a control call waits for the other root contexts. Each acknowledges when its
/// worker's event loop next turns, so only a stuck one, or one gone without leaving the
/// roster (its VM failed: Envoy skips `on_done`), makes it wait this long. Such an entry is
/// kept: a worker taken off the roster for being slow would miss every later write, where
/// a dead entry costs each write this wait, shown in its answer and logged.
const ACK_DEADLINE_MS: u64 = 1000;

/// The header on a control call's answer that some root contexts did not confirm in time.
const UNCONFIRMED: &str = "x-fault-injector-unconfirmed";

/// A held control call's answer: a JSON body (written out) with status 200.
pub type Answer = String;

/// Gives this root context a queue and puts it on the roster; on failure it stays off, and
/// its requests look at the version stamp instead (`Worker::refresh`). The root context
/// reads the state after joining: a write made before it joined is one it reads.
pub fn join(worker: &mut Worker) {
    let number = |bytes: &[u8]| std::str::from_utf8(bytes).ok().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let Some(taken) = shared::rewrite(QUEUES_KEY, |n| (number(n) + 1).to_string().into_bytes()) else {
        log(LogLevel::Warn, "fault-injector: no queue for policy notices; requests will check the state_version gauge");
        return;
    };
    let Ok(token) = hostcalls::register_shared_queue(&format!("fault_injector.notices.{}", number(&taken))) else {
        log(LogLevel::Warn, "fault-injector: could not register a queue for policy notices; requests will check the state_version gauge");
        return;
    };
    let joined = shared::rewrite(ROSTER_KEY, |bytes| {
        let mut roster = Roster::decode(bytes);
        roster.join(token);
        roster.encode()
    });
    if joined.is_some() {
        worker.queue = Some(token);
    }
}

/// Takes this root context off the roster (Envoy is done with it).
pub fn leave(worker: &mut Worker) {
    if let Some(token) = worker.queue.take() {
        shared::rewrite(ROSTER_KEY, |bytes| {
            let mut roster = Roster::decode(bytes);
            roster.leave(token);
            roster.encode()
        });
    }
}

/// Sends every other root context on the roster a notice of write `seq`; returns those it
/// reached. Called after the write: one that joins later reads the state itself.
pub fn notify(worker: &Worker, seq: u64) -> Vec<u32> {
    let me = worker.queue.unwrap_or(0);
    let notice = Message::Notice { seq, reply_to: me }.to_string();
    let roster = Roster::decode(&shared::read(ROSTER_KEY));
    roster.others(me).into_iter().filter(|t| hostcalls::enqueue_shared_queue(*t, Some(notice.as_bytes())).is_ok()).collect()
}

/// Answers the control call that wrote the state, `answer`, once every other root context
/// has the write: at once if there are none, or if this one has no queue to hear them on
/// (then saying how many it could not wait for).
pub fn publish(worker: &mut Worker, context: u32, answer: Answer) -> Action {
    let seq = worker.waits.next_seq();
    let awaiting = notify(worker, seq);
    if awaiting.is_empty() {
        return reply::json_text(200, &answer, vec![]);
    }
    if worker.queue.is_none() {
        return reply::json_text(200, &answer, vec![(UNCONFIRMED, &awaiting.len().to_string())]);
    }
    let now = now_ms();
    let deadline = now + ACK_DEADLINE_MS;
    worker.waits.hold(seq, context, awaiting, deadline, answer);
    worker.arm(deadline, now, context);
    Action::Pause
}

/// Reads what waits on this root context's queue: re-reads the state on a notice and
/// acknowledges it; returns the held control calls that acknowledgements complete.
pub fn receive(worker: &mut Worker) -> Vec<Done<Answer>> {
    let Some(me) = worker.queue else { return Vec::new() };
    let mut done = Vec::new();
    while let Ok(Some(bytes)) = hostcalls::dequeue_shared_queue(me) {
        match Message::decode(&bytes) {
            Some(Message::Notice { seq, reply_to }) => {
                worker.reload();
                let ack = Message::Ack { seq, from: me }.to_string();
                let _ = hostcalls::enqueue_shared_queue(reply_to, Some(ack.as_bytes()));
            }
            Some(Message::Ack { seq, from }) => done.extend(worker.waits.ack(seq, from)),
            None => {}
        }
    }
    done
}

/// Answers a held control call, in its own context.
pub fn answer((context, answer, unconfirmed): Done<Answer>) {
    if hostcalls::set_effective_context(context).is_err() {
        return;
    }
    if unconfirmed == 0 {
        reply::json_text(200, &answer, vec![]);
        return;
    }
    let message = format!("fault-injector: policy written, but {unconfirmed} root context(s) did not confirm it within {ACK_DEADLINE_MS} ms");
    log(LogLevel::Warn, &message);
    reply::json_text(200, &answer, vec![(UNCONFIRMED, &unconfirmed.to_string())]);
}
