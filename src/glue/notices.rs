//! The transport of [`crate::notices`]: this root context's queue and its place on the
//! roster, the notices a write of the state sends the other root contexts, their
//! acknowledgements, and the answers of the control calls held until they all have the
//! write. A request then never asks whether the state moved.

use super::reply;
use super::shared;
use crate::notices::{Done, Message, Roster};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Action;

const ROSTER_KEY: &str = "fault_injector.roster";
/// Numbers the queues, so that every root context's queue has a name of its own: a name
/// registered twice moves the queue to the second registrant.
const QUEUES_KEY: &str = "fault_injector.queues";
/// How long a control call waits for the other root contexts. Each acknowledges when its
/// worker's event loop next turns, so only a stuck one, or one gone without leaving the
/// roster (its VM failed: Envoy skips `on_done`), makes it wait this long. Such an entry is
/// kept: a worker taken off the roster for being slow would miss every later write, where
/// a dead entry costs each write this wait, shown in its answer and logged.
pub const ACK_DEADLINE_MS: u64 = 1000;

/// The header on a control call's answer that some root contexts did not confirm in time.
const UNCONFIRMED: &str = "x-fault-injector-unconfirmed";

/// A held control call's answer: a JSON body (written out) with status 200.
pub type Answer = String;

/// Registers a queue of its own for this root context and puts it on the roster; its
/// token, or `None` (logged) when either fails.
pub fn join() -> Option<u32> {
    let number = |bytes: &[u8]| std::str::from_utf8(bytes).ok().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let Some(taken) = shared::rewrite(QUEUES_KEY, |n| (number(n) + 1).to_string().into_bytes()) else {
        log::warn!("fault-injector: no queue for policy notices; requests will check the state_version gauge");
        return None;
    };
    let Ok(token) = hostcalls::register_shared_queue(&format!("fault_injector.notices.{}", number(&taken))) else {
        log::warn!("fault-injector: could not register a queue for policy notices; requests will check the state_version gauge");
        return None;
    };
    let joined = shared::rewrite(ROSTER_KEY, |bytes| {
        let mut roster = Roster::decode(bytes);
        roster.join(token);
        roster.encode()
    });
    joined.map(|_| token)
}

/// Takes queue `token` off the roster.
pub fn leave(token: u32) {
    shared::rewrite(ROSTER_KEY, |bytes| {
        let mut roster = Roster::decode(bytes);
        roster.leave(token);
        roster.encode()
    });
}

/// Sends every queue on the roster but `me` a notice of write `seq`; returns those it
/// reached.
pub fn notify(me: u32, seq: u64) -> Vec<u32> {
    let notice = Message::Notice { seq, reply_to: me }.to_string();
    let roster = Roster::decode(&shared::read(ROSTER_KEY));
    roster.others(me).into_iter().filter(|t| hostcalls::enqueue_shared_queue(*t, Some(notice.as_bytes())).is_ok()).collect()
}

/// The next message on queue `me`, if any; what does not read as one is skipped.
pub fn next(me: u32) -> Option<Message> {
    while let Ok(Some(bytes)) = hostcalls::dequeue_shared_queue(me) {
        if let Some(message) = Message::decode(&bytes) {
            return Some(message);
        }
    }
    None
}

/// Tells queue `reply_to` that `from` has write `seq`.
pub fn acknowledge(reply_to: u32, seq: u64, from: u32) {
    let ack = Message::Ack { seq, from }.to_string();
    let _ = hostcalls::enqueue_shared_queue(reply_to, Some(ack.as_bytes()));
}

/// Answers a control call whose write every other root context has.
pub fn confirmed(answer: &Answer) -> Action {
    reply::json_text(200, answer, vec![])
}

/// Answers a control call whose write `unconfirmed` root contexts did not confirm.
pub fn unconfirmed(answer: &Answer, unconfirmed: usize) -> Action {
    reply::json_text(200, answer, vec![(UNCONFIRMED, &unconfirmed.to_string())])
}

/// Answers a held control call, in its own context.
pub fn answer(Done { context, answer, unconfirmed }: Done<Answer>) {
    if hostcalls::set_effective_context(context).is_err() {
        return;
    }
    if unconfirmed == 0 {
        confirmed(&answer);
        return;
    }
    log::warn!("fault-injector: policy written, but {unconfirmed} root context(s) did not confirm it within {ACK_DEADLINE_MS} ms");
    self::unconfirmed(&answer, unconfirmed);
}
