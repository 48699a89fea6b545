//! How a write of the shared policy reaches every worker without a request asking: each root
//! context has a shared queue and its token on a roster; a write sends every other one a
//! notice, each re-reads the state and acknowledges, and the control call that wrote is
//! answered once all have (or a deadline passes). Here are the roster, the messages and the
//! bookkeeping of those waits; `glue` moves them through Envoy.

use std::fmt;

/// The queue tokens of the root contexts that want notices, as stored in shared data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster(Vec<u32>);

impl Roster {
    /// Reads the stored form back; what does not read as a token is left out.
    pub fn decode(bytes: &[u8]) -> Roster {
        let text = std::str::from_utf8(bytes).unwrap_or("");
        Roster(text.split(',').filter_map(|t| t.parse().ok()).collect())
    }

    /// The stored form: tokens in decimal, comma-separated.
    pub fn encode(&self) -> Vec<u8> {
        self.0.iter().map(u32::to_string).collect::<Vec<_>>().join(",").into_bytes()
    }

    /// Adds `token`, once.
    pub fn join(&mut self, token: u32) {
        if !self.0.contains(&token) {
            self.0.push(token);
        }
    }

    /// Removes `token`.
    pub fn leave(&mut self, token: u32) {
        self.0.retain(|t| *t != token);
    }

    /// Every token but `me`.
    pub fn others(&self, me: u32) -> Vec<u32> {
        self.0.iter().copied().filter(|t| *t != me).collect()
    }
}

/// What goes through the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// The state was written: re-read it, then acknowledge.
    Notice {
        /// The write, as its writer numbers them.
        seq: u64,
        /// The writer's queue.
        reply_to: u32,
    },
    /// A root context holds the state of a write.
    Ack {
        /// The write acknowledged.
        seq: u64,
        /// The queue of the root context that has it.
        from: u32,
    },
}

impl Message {
    /// Reads a message; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let (kind, seq, token) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        if parts.next().is_some() {
            return None;
        }
        match kind {
            "notice" => Some(Message::Notice { seq, reply_to: token }),
            "ack" => Some(Message::Ack { seq, from: token }),
            _ => None,
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Notice { seq, reply_to } => write!(f, "notice {seq} {reply_to}"),
            Message::Ack { seq, from } => write!(f, "ack {seq} {from}"),
        }
    }
}

/// A control call held until every other root context has its write.
#[derive(Debug)]
struct Wait<T> {
    seq: u64,
    context: u32,
    awaiting: Vec<u32>,
    deadline_ms: u64,
    answer: T,
}

/// The control calls one root context holds, each with the answer it will get (`T`).
#[derive(Debug)]
pub struct Waits<T> {
    waits: Vec<Wait<T>>,
    next_seq: u64,
}

impl<T> Default for Waits<T> {
    fn default() -> Self {
        Waits { waits: Vec::new(), next_seq: 1 }
    }
}

/// A held control call that may be answered now.
#[derive(Debug, PartialEq, Eq)]
pub struct Done<T> {
    /// The control call's context.
    pub context: u32,
    /// Its answer.
    pub answer: T,
    /// How many root contexts never acknowledged (0 unless its deadline passed).
    pub unconfirmed: usize,
}

impl<T> Waits<T> {
    /// A number for the next write's notices.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Holds `context`'s `answer` until each of `awaiting` acknowledges `seq`, or until
    /// `deadline_ms`.
    pub fn hold(&mut self, seq: u64, context: u32, awaiting: Vec<u32>, deadline_ms: u64, answer: T) {
        self.waits.push(Wait { seq, context, awaiting, deadline_ms, answer });
    }

    /// Counts an acknowledgement; returns the call it completes, if any.
    pub fn ack(&mut self, seq: u64, from: u32) -> Option<Done<T>> {
        let at = self.waits.iter().position(|w| w.seq == seq)?;
        let wait = &mut self.waits[at];
        wait.awaiting.retain(|t| *t != from);
        if !wait.awaiting.is_empty() {
            return None;
        }
        let wait = self.waits.remove(at);
        Some(Done { context: wait.context, answer: wait.answer, unconfirmed: 0 })
    }

    /// Takes the calls whose deadline has come, with how many acknowledgements each lacked.
    pub fn expired(&mut self, now_ms: u64) -> Vec<Done<T>> {
        let (due, kept) = std::mem::take(&mut self.waits).into_iter().partition(|w| w.deadline_ms <= now_ms);
        self.waits = kept;
        due.into_iter().map(|w: Wait<T>| Done { context: w.context, answer: w.answer, unconfirmed: w.awaiting.len() }).collect()
    }

    /// Forgets `context`'s call (its client hung up).
    pub fn cancel(&mut self, context: u32) {
        self.waits.retain(|w| w.context != context);
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.waits.iter().map(|w| w.deadline_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roster_reads_back_and_keeps_each_token_once() {
        let mut roster = Roster::default();
        roster.join(7);
        roster.join(9);
        roster.join(7);
        assert_eq!(roster.encode(), b"7,9");
        assert_eq!(Roster::decode(&roster.encode()), roster);
        assert_eq!(roster.others(7), vec![9]);
        roster.leave(7);
        assert_eq!(roster.others(0), vec![9]);
        assert_eq!(Roster::decode(b""), Roster::default());
        assert_eq!(Roster::decode(b"3,x,4"), Roster(vec![3, 4]));
    }

    #[test]
    fn messages_read_back_and_nothing_else_reads() {
        for m in [Message::Notice { seq: 1, reply_to: 42 }, Message::Ack { seq: u64::MAX, from: 3 }] {
            assert_eq!(Message::decode(m.to_string().as_bytes()), Some(m));
        }
        for bad in ["", "notice", "notice 1", "ack 1 x", "ack 1 2 3", "nudge 1 2", "notice -1 2"] {
            assert_eq!(Message::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_call_is_answered_when_the_last_ack_arrives() {
        let mut waits = Waits::default();
        let (a, b) = (waits.next_seq(), waits.next_seq());
        assert_ne!(a, b);
        waits.hold(a, 100, vec![1, 2], 50, "first");
        waits.hold(b, 101, vec![2], 60, "second");
        assert_eq!(waits.next_deadline(), Some(50));
        assert!(waits.ack(a, 1).is_none());
        assert!(waits.ack(a, 1).is_none(), "a repeated ack counts once");
        assert_eq!(waits.ack(b, 2), Some(Done { context: 101, answer: "second", unconfirmed: 0 }));
        assert_eq!(waits.ack(a, 2), Some(Done { context: 100, answer: "first", unconfirmed: 0 }));
        assert!(waits.ack(a, 2).is_none(), "answered once");
        assert_eq!(waits.next_deadline(), None);
    }

    #[test]
    fn a_deadline_answers_with_what_is_missing_and_cancel_forgets() {
        let mut waits = Waits::default();
        waits.hold(1, 100, vec![1, 2], 50, ());
        waits.hold(2, 101, vec![3], 80, ());
        waits.hold(3, 102, vec![4], 90, ());
        assert!(waits.ack(1, 2).is_none());
        assert!(waits.expired(49).is_empty());
        assert_eq!(waits.expired(50), vec![Done { context: 100, answer: (), unconfirmed: 1 }]);
        waits.cancel(101);
        assert_eq!(waits.next_deadline(), Some(90));
        assert_eq!(waits.expired(1000), vec![Done { context: 102, answer: (), unconfirmed: 1 }]);
    }
}
