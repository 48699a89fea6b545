//! Cutting a response mid-body: the upstream's status, headers and first `after_bytes`
//! bytes reach the client, then the stream is reset, so the client sees a short body and a
//! connection error, never a clean end.
//!
//! The cut is made on the pieces Envoy hands the filter. A piece that crosses `after_bytes`
//! is trimmed to it and sent, and the reset follows at the next chance: the next piece, the
//! trailers, or the worker's next tick. The end of the stream never passes: a piece that
//! carries it is withheld and the stream reset instead, because sending it would end the
//! response cleanly and nothing could follow. Two cases follow from that:
//! - A body no longer than `after_bytes` is cut short of its end: one byte short when the
//!   upstream gave its `content-length` ([`within`]), else where it would have ended (every
//!   piece but the last reaches the client, then the reset). A sampled request never
//!   completes, as asked; the client gets fewer bytes than `after_bytes`, as the upstream
//!   had fewer.
//! - If `after_bytes` falls inside the last piece, the client gets what came before that
//!   piece, which can be less than `after_bytes`. How Envoy splits a body depends on how it
//!   arrived (socket reads, HTTP/2 frames), not on the filter.
//!
//! A response with no body (the headers end the stream) has nothing to cut and is left
//! alone; so are answers to HEAD and 1xx, 204, 205 and 304 (see `respond::Answer::has_body`).

use crate::faults::Kind;
use crate::model::values::from_object;
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// The most body bytes a cut lets through (1 TiB), in the query and in a document alike.
pub const MAX_AFTER_BYTES: u64 = 1 << 40;

/// What `after_bytes` (`afterBytes=`) accepts, for error messages.
pub const AFTER_BYTES_ACCEPTED: &str = "a whole number of bytes from 0 to 1099511627776 (1 TiB)";

/// A cut: `{"after_bytes": 1000}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Truncate {
    /// How many body bytes reach the client before the reset; 0 sends headers only.
    pub after_bytes: u64,
}

impl Kind for Truncate {
    const NAME: &'static str = "truncate";
    const LABEL: &'static str = "truncate";
    const STAT: Stat = Stat::TruncationsInjected;
}

/// A cut as written in a policy document.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncateSpec {
    after_bytes: u64,
}

impl TryFrom<TruncateSpec> for Truncate {
    type Error = String;
    fn try_from(spec: TruncateSpec) -> Result<Truncate, String> {
        match spec.after_bytes {
            n if n <= MAX_AFTER_BYTES => Ok(Truncate { after_bytes: n }),
            n => Err(format!("after_bytes: {n} is not accepted; expected {AFTER_BYTES_ACCEPTED}")),
        }
    }
}
from_object!(Truncate, TruncateSpec);

/// The cut for a body of `content_length` bytes, if the upstream said: one byte short of
/// the end when the body is no longer than `after_bytes`. Withholding only the end is not
/// enough there: an HTTP/1.1 client that has `content-length` bytes has a whole answer.
pub fn within(truncate: Truncate, content_length: Option<u64>) -> Truncate {
    match content_length {
        Some(length) if length <= truncate.after_bytes => Truncate { after_bytes: length.saturating_sub(1) },
        _ => truncate,
    }
}

/// What to do with one piece of the response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Send the piece whole.
    Pass,
    /// Trim the piece to its first `keep` bytes, send them, and reset the stream at the next
    /// chance ([`Cutter::reset_pending`]).
    PassThenReset {
        /// Bytes of this piece to send.
        keep: usize,
    },
    /// Reset the stream now; nothing of this piece is sent.
    ResetNow,
}

/// One response's cut.
#[derive(Clone, Debug)]
pub struct Cutter {
    after_bytes: u64,
    passed: u64,
    reset_pending: bool,
}

impl Cutter {
    /// A cut after `truncate.after_bytes` bytes.
    pub fn new(truncate: Truncate) -> Cutter {
        Cutter { after_bytes: truncate.after_bytes, passed: 0, reset_pending: false }
    }

    /// A piece of `len` bytes arrived; `end_of_stream` when it is the last.
    pub fn on_body(&mut self, len: usize, end_of_stream: bool) -> Cut {
        let remaining = self.after_bytes - self.passed;
        if self.reset_pending || end_of_stream || remaining == 0 {
            return Cut::ResetNow;
        }
        let len_u64 = len as u64;
        if len_u64 < remaining {
            self.passed += len_u64;
            return Cut::Pass;
        }
        self.passed = self.after_bytes;
        self.reset_pending = true;
        // remaining <= len here, so it fits a usize.
        Cut::PassThenReset { keep: remaining as usize }
    }

    /// The response's trailers arrived: the end of the stream, which never passes.
    pub fn on_trailers(&mut self) -> Cut {
        Cut::ResetNow
    }

    /// True once the cut is sent and only the reset is left, for the worker's tick.
    pub fn reset_pending(&self) -> bool {
        self.reset_pending
    }

    /// Body bytes sent to the client so far.
    pub fn passed(&self) -> u64 {
        self.passed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Feeds pieces of the given sizes, the last with the end of the stream; returns what
    /// each got and how many bytes reached the client, stopping at the first reset.
    fn feed(after_bytes: u64, pieces: &[usize]) -> (Vec<Cut>, u64) {
        let mut cutter = Cutter::new(Truncate { after_bytes });
        let mut cuts = Vec::new();
        let mut sent = 0;
        for (i, len) in pieces.iter().enumerate() {
            let cut = cutter.on_body(*len, i + 1 == pieces.len());
            sent += match cut {
                Cut::Pass => *len as u64,
                Cut::PassThenReset { keep } => keep as u64,
                Cut::ResetNow => 0,
            };
            cuts.push(cut);
            if cut == Cut::ResetNow {
                break;
            }
        }
        assert_eq!(sent, cutter.passed());
        (cuts, sent)
    }

    #[test]
    fn a_hundred_kib_cut_after_a_thousand_bytes() {
        let (cuts, sent) = feed(1000, &[16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 4_096]);
        assert_eq!(cuts, vec![Cut::PassThenReset { keep: 1000 }, Cut::ResetNow]);
        assert_eq!(sent, 1000);
        let (cuts, sent) = feed(1000, &[300, 300, 300, 300, 99_200]);
        assert_eq!(cuts, vec![Cut::Pass, Cut::Pass, Cut::Pass, Cut::PassThenReset { keep: 100 }, Cut::ResetNow]);
        assert_eq!(sent, 1000);
    }

    #[test]
    fn a_cut_on_a_piece_boundary_sends_the_piece_whole_then_resets() {
        assert_eq!(feed(1000, &[500, 500, 500]), (vec![Cut::Pass, Cut::PassThenReset { keep: 500 }, Cut::ResetNow], 1000));
    }

    #[test]
    fn the_end_of_the_stream_never_passes() {
        assert_eq!(feed(1000, &[102_400]), (vec![Cut::ResetNow], 0), "cut point inside the last piece");
        assert_eq!(feed(1000, &[200, 300]), (vec![Cut::Pass, Cut::ResetNow], 200), "body shorter than after_bytes");
        assert_eq!(feed(1000, &[200, 0]), (vec![Cut::Pass, Cut::ResetNow], 200), "an empty last piece");
        let mut cutter = Cutter::new(Truncate { after_bytes: 1000 });
        assert_eq!(cutter.on_body(200, false), Cut::Pass);
        assert_eq!(cutter.on_trailers(), Cut::ResetNow);
    }

    #[test]
    fn a_short_body_with_a_length_is_cut_one_byte_short() {
        let cut = Truncate { after_bytes: 1000 };
        assert_eq!(within(cut, Some(500)), Truncate { after_bytes: 499 });
        assert_eq!(within(cut, Some(1000)), Truncate { after_bytes: 999 });
        assert_eq!(within(cut, Some(1001)), cut);
        assert_eq!(within(cut, None), cut);
        assert_eq!(within(cut, Some(0)), Truncate { after_bytes: 0 });
    }

    #[test]
    fn zero_bytes_sends_headers_only() {
        assert_eq!(feed(0, &[10, 10]), (vec![Cut::ResetNow], 0));
    }

    #[test]
    fn the_reset_is_pending_only_after_the_cut() {
        let mut cutter = Cutter::new(Truncate { after_bytes: 10 });
        assert_eq!(cutter.on_body(4, false), Cut::Pass);
        assert!(!cutter.reset_pending());
        assert_eq!(cutter.on_body(8, false), Cut::PassThenReset { keep: 6 });
        assert!(cutter.reset_pending());
        assert_eq!(cutter.on_body(8, false), Cut::ResetNow);
    }

    #[test]
    fn bad_cuts_say_what_is_accepted() {
        for (json, message) in [
            (r#"{"after_bytes": -1}"#, "invalid value: integer `-1`, expected u64"),
            (r#"{"after_bytes": 1099511627777}"#, "1099511627777 is not accepted"),
            (r#"{"after_bytes": "1k"}"#, "invalid type: string \"1k\", expected u64"),
            (r#"{"bytes": 1}"#, "unknown field `bytes`, expected `after_bytes`"),
            (r#"{}"#, "missing field `after_bytes`"),
        ] {
            let error = serde_json::from_str::<Truncate>(json).unwrap_err().to_string();
            assert!(error.contains(message), "{json}: {error}");
        }
    }
}
