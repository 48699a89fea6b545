//! Changing the upstream's own response body: replacing it, or corrupting a share of its
//! bytes in place, so that a client's parser and fallbacks meet a broken answer.
//!
//! Responses that carry no body are left alone: answers to HEAD, 1xx, 204, 205 and 304,
//! and any response whose headers end the stream. A replaced body gets a matching
//! `content-length` and loses `content-encoding` (the new body is sent as written); a
//! corrupted one keeps both, so a compressed body reaches the client's decoder broken.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::faults::Kind;
use crate::model::percentage::Percentage;
use crate::model::share::{self, FULL as FULL_PPM};
use crate::stats::Stat;

/// How a body change is written in a policy document, with one of its two members:
/// `{"replace": {"body": "oops", "content_type": "text/plain"}}` or
/// `{"corrupt": {"percentage": 5}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyChangeSpec {
    /// The body is replaced whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<ReplaceSpec>,
    /// A share of the body's bytes is changed, keeping its length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptSpec>,
}

/// The new body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSpec {
    /// The body sent instead of the upstream's.
    pub body: String,
    /// A `content-type` to send with it; without one the upstream's is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// How much to corrupt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptSpec {
    /// The share of bytes changed, in percent, above 0 and at most 100; read as the
    /// query's `corrupt=` is, so both round alike.
    pub percentage: Percentage,
}

/// Why a body change was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum BodyChangeError {
    /// The corrupted share is outside (0, 100] or finer than one part per million.
    BadShare(f64),
    /// The content type is not a valid header value.
    BadContentType(String),
    /// Both members, or neither.
    NotOne,
}

impl fmt::Display for BodyChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyChangeError::BadShare(p) => write!(
                f,
                "corrupt.percentage: {} is not accepted; give the share of bytes to change in percent, from 0.0001 to 100",
                share::rejected_text(*p)
            ),
            BodyChangeError::BadContentType(t) => write!(
                f,
                "replace.content_type: {t:?} is not accepted; give a header value of visible ASCII and spaces, such as \"text/plain\""
            ),
            BodyChangeError::NotOne => write!(f, "give one of replace, corrupt"),
        }
    }
}

impl std::error::Error for BodyChangeError {}

/// A validated body change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BodyChangeSpec", into = "BodyChangeSpec")]
pub enum BodyChange {
    /// Send `body` instead, with `content_type` if given.
    Replace {
        /// The new body.
        body: String,
        /// Its content type, if it replaces the upstream's.
        content_type: Option<String>,
    },
    /// Change about `ppm` parts per million of the bytes.
    Corrupt {
        /// The share, in parts per million, from 1 to 1,000,000.
        ppm: u32,
    },
}

impl TryFrom<BodyChangeSpec> for BodyChange {
    type Error = BodyChangeError;

    fn try_from(spec: BodyChangeSpec) -> Result<BodyChange, BodyChangeError> {
        match (spec.replace, spec.corrupt) {
            (Some(ReplaceSpec { body, content_type }), None) => {
                if let Some(t) = &content_type {
                    if t.is_empty() || !t.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                        return Err(BodyChangeError::BadContentType(t.clone()));
                    }
                }
                Ok(BodyChange::Replace { body, content_type })
            }
            (None, Some(CorruptSpec { percentage })) => BodyChange::corrupt(percentage),
            _ => Err(BodyChangeError::NotOne),
        }
    }
}

impl BodyChange {
    /// Corrupting `share` of the bytes, from the document (`corrupt.percentage`) or the
    /// query (`corrupt=`) alike; refused at 0.
    pub fn corrupt(share: Percentage) -> Result<BodyChange, BodyChangeError> {
        match share.0 {
            0 => Err(BodyChangeError::BadShare(share.as_f64())),
            ppm => Ok(BodyChange::Corrupt { ppm }),
        }
    }
}

impl Kind for BodyChange {
    const NAME: &'static str = "body_change";
    const LABEL: &'static str = "bodyChange";
    const STAT: Stat = Stat::BodiesChanged;
}

impl From<BodyChange> for BodyChangeSpec {
    fn from(change: BodyChange) -> BodyChangeSpec {
        match change {
            BodyChange::Replace { body, content_type } => BodyChangeSpec { replace: Some(ReplaceSpec { body, content_type }), corrupt: None },
            BodyChange::Corrupt { ppm } => BodyChangeSpec { replace: None, corrupt: Some(CorruptSpec { percentage: Percentage(ppm) }) },
        }
    }
}

/// What to do to the response headers before a body change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderEdits<'a> {
    /// Set `content-length` to this; `None` keeps the upstream's (or its absence).
    pub content_length: Option<usize>,
    /// Set `content-type` to this.
    pub content_type: Option<&'a str>,
    /// Remove these headers.
    pub remove: &'static [&'static str],
}

impl BodyChange {
    /// The header changes that go with this body change.
    pub fn header_edits(&self) -> HeaderEdits<'_> {
        match self {
            BodyChange::Replace { body, content_type } => HeaderEdits {
                content_length: Some(body.len()),
                content_type: content_type.as_deref(),
                // The new body is not encoded, and the upstream's validators no longer fit it.
                remove: &["content-encoding", "etag", "content-md5"],
            },
            BodyChange::Corrupt { .. } => HeaderEdits { content_length: None, content_type: None, remove: &[] },
        }
    }
}

/// What a piece of a replaced body becomes: the first piece carries the whole replacement
/// and every later one is emptied. So nothing of the upstream's body is sent, nothing is
/// buffered, and it works the same whether the body ends with its last piece or with
/// trailers (gRPC), where no last body piece would come to carry it.
pub fn replaced_piece(replacement: &str, first: bool) -> &[u8] {
    if first {
        replacement.as_bytes()
    } else {
        &[]
    }
}

/// Corrupts a body chunk by chunk, each byte with the same chance, keeping the length.
///
/// The gap to the next corrupted byte is drawn from the geometric distribution, so the
/// work is per corrupted byte, not per byte, and chunk boundaries change nothing.
#[derive(Clone, Debug)]
pub struct Corrupter {
    ppm: u32,
    /// Bytes to pass before the next corrupted one; `None` before the first draw.
    gap: Option<u64>,
}

impl Corrupter {
    /// Corrupts about `ppm` parts per million of the bytes (1,000,000: every byte).
    pub fn new(ppm: u32) -> Corrupter {
        Corrupter { ppm: ppm.min(FULL_PPM), gap: None }
    }

    /// Changes bytes of `chunk` in place, each to a different value; `random` gives
    /// uniform 64-bit numbers (the request's random source). Returns how many changed.
    pub fn corrupt(&mut self, chunk: &mut [u8], random: &mut impl FnMut() -> u64) -> usize {
        if self.ppm == 0 {
            return 0;
        }
        let mut changed = 0;
        let mut at = 0usize;
        loop {
            let gap = match self.gap {
                Some(gap) => gap,
                None => self.draw_gap(random()),
            };
            let remaining = (chunk.len() - at) as u64;
            if gap >= remaining {
                self.gap = Some(gap - remaining);
                return changed;
            }
            // gap < remaining, so it fits a usize.
            at += gap as usize;
            if let Some(byte) = chunk.get_mut(at) {
                // XOR with a value from 1 to 255 always changes the byte.
                *byte ^= (random() % 255 + 1) as u8;
                changed += 1;
            }
            at += 1;
            self.gap = None;
        }
    }

    /// Bytes passed before the next corrupted one: geometric with success chance ppm/1e6.
    fn draw_gap(&self, u: u64) -> u64 {
        if self.ppm >= FULL_PPM {
            return 0;
        }
        let p = f64::from(self.ppm) / f64::from(FULL_PPM);
        let uniform = ((u >> 12) as f64 + 0.5) / (1u64 << 52) as f64;
        // `as` saturates, and the value is finite and at least 0 here.
        (uniform.ln() / (-p).ln_1p()).floor() as u64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::sampling::Sampler;

    fn change(json: &str) -> Result<BodyChange, String> {
        serde_json::from_str::<BodyChange>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn replacing_sets_length_and_drops_encoding() {
        let c = change(r#"{"replace": {"body": "{\"x\": 1}", "content_type": "application/json"}}"#).unwrap();
        let edits = c.header_edits();
        assert_eq!(edits.content_length, Some(8));
        assert_eq!(edits.content_type, Some("application/json"));
        assert!(edits.remove.contains(&"content-encoding"));
        let c = change(r#"{"replace": {"body": "héllo"}}"#).unwrap();
        assert_eq!(c.header_edits().content_length, Some(6), "bytes, not characters");
        assert_eq!(c.header_edits().content_type, None);
    }

    #[test]
    fn a_replaced_body_goes_out_whole_with_the_first_piece() {
        let sent: Vec<Vec<u8>> = [true, false, false].iter().map(|first| replaced_piece("new", *first).to_vec()).collect();
        assert_eq!(sent, vec![b"new".to_vec(), vec![], vec![]]);
    }

    #[test]
    fn corrupting_keeps_headers() {
        let c = change(r#"{"corrupt": {"percentage": 5}}"#).unwrap();
        assert_eq!(c.header_edits(), HeaderEdits { content_length: None, content_type: None, remove: &[] });
    }

    fn corrupted_share(ppm: u32, chunks: &[usize], seed: u64) -> (usize, usize) {
        let original: Vec<u8> = (0..chunks.iter().sum::<usize>()).map(|i| (i % 251) as u8).collect();
        let mut body = original.clone();
        let mut corrupter = Corrupter::new(ppm);
        let mut sampler = Sampler::new(seed);
        let mut random = || sampler.next_u64();
        let mut start = 0;
        let mut reported = 0;
        for len in chunks {
            reported += corrupter.corrupt(&mut body[start..start + len], &mut random);
            start += len;
        }
        let differing = original.iter().zip(&body).filter(|(a, b)| a != b).count();
        assert_eq!(body.len(), original.len());
        (differing, reported)
    }

    #[test]
    fn corrupts_about_the_asked_share_and_keeps_length() {
        for (ppm, low, high) in [(50_000, 4_500, 5_500), (10_000, 850, 1_150), (500_000, 49_000, 51_000)] {
            let (differing, reported) = corrupted_share(ppm, &[16_384; 6].iter().copied().chain([1_696]).collect::<Vec<_>>(), 3);
            assert_eq!(differing, reported);
            assert!((low..high).contains(&differing), "{ppm}: {differing} of 100,000");
        }
        assert_eq!(corrupted_share(FULL_PPM, &[7, 1, 0, 100], 1), (108, 108));
        assert_eq!(corrupted_share(0, &[100], 1), (0, 0));
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_share() {
        let whole = corrupted_share(20_000, &[100_000], 9).0;
        let bytewise = corrupted_share(20_000, &[1; 100_000], 9).0;
        assert!((1_700..2_300).contains(&whole) && (1_700..2_300).contains(&bytewise), "{whole} {bytewise}");
    }

    #[test]
    fn bad_changes_say_what_is_accepted() {
        for (json, message) in [
            (r#"{"corrupt": {"percentage": 0}}"#, "corrupt.percentage: 0 is not accepted; give the share of bytes"),
            (r#"{"corrupt": {"percentage": 100.5}}"#, "100.5 is not accepted; expected a number from 0 to 100"),
            (r#"{"corrupt": {"percentage": -3}}"#, "-3 is not accepted"),
            (r#"{"corrupt": {"percentage": "5"}}"#, "\"5\" is not accepted; expected a number"),
            (r#"{"corrupt": {"share": 5}}"#, "unknown field `share`, expected `percentage`"),
            (r#"{"replace": {"body": "x", "content_type": "a\nb"}}"#, "replace.content_type: \"a\\nb\" is not accepted"),
            (r#"{"replace": {"body": "x", "status": 200}}"#, "unknown field `status`, expected `body` or `content_type`"),
            (r#"{"scramble": {}}"#, "unknown field `scramble`, expected `replace` or `corrupt`"),
            (r#"{}"#, "give one of replace, corrupt"),
            (r#"{"replace": {"body": "x"}, "corrupt": {"percentage": 5}}"#, "give one of replace, corrupt"),
        ] {
            let error = change(json).unwrap_err();
            assert!(error.contains(message), "{json}: {error}");
        }
    }

    #[test]
    fn reads_back_what_it_writes() {
        for json in [r#"{"corrupt":{"percentage":12.5}}"#, r#"{"replace":{"body":"x","content_type":"text/plain"}}"#] {
            assert_eq!(serde_json::to_string(&change(json).unwrap()).unwrap(), json);
        }
        assert_eq!(change(r#"{"corrupt": {"percentage": 0.0001}}"#).unwrap(), BodyChange::Corrupt { ppm: 1 });
    }
}
