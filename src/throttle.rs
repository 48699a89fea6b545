//! Pacing a response body at about `bytes_per_second` when the host can only hold the
//! body it has buffered and later release all of it at once.
//!
//! The pacer models a link of that speed: a chunk starts through the link when it has
//! arrived and the link is free, and has passed when its last byte would have. What the
//! host holds is released once the link has passed all of it but the largest chunk seen,
//! since the host hands bodies over in chunks and a release cannot be finer. So the client
//! is never more than one chunk ahead of a link of that speed, and a body of N bytes in
//! chunks of up to C bytes takes at least (N - C) / bytes_per_second.
//!
//! The granularity is the host's: each release is everything buffered until then. When
//! the upstream sends at the rate or slower, each chunk goes out as it arrives or when
//! the link has room for it. When it sends faster, chunks arriving during a hold join it,
//! each pushing the release later, so the body goes out in few large pieces, the last
//! when the whole body would have passed the link: the total time is kept, the trickle
//! is not. Releasing earlier would put the client ahead of the rate with no way back,
//! because what the host holds can only be released whole.
//!
//! Envoy resets a stream whose held body passes its buffer limit (a paused Wasm filter
//! buffers without backpressure), so the glue should release early once
//! [`Pacer::held_bytes`] nears that limit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The fastest rate accepted, 1 GiB/s; anything faster throttles nothing a proxy carries.
pub const MAX_BYTES_PER_SECOND: u64 = 1 << 30;

/// What `bytes_per_second` (`bytesPerSecond=`) accepts, for error messages.
pub const ACCEPTED: &str = "a whole number of bytes per second from 1 to 1073741824 (1 GiB/s), such as 102400";

/// A throttle as written in a policy document: `{"bytes_per_second": 102400}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// The rate, in bytes per second, from 1 to 1 GiB/s.
    pub bytes_per_second: u64,
}

/// Why a throttle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleError(pub u64);

impl fmt::Display for ThrottleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The form of every member's refusal: `rules[0].fault.throttle: bytes_per_second: ...`.
        write!(f, "bytes_per_second: {} is not accepted; expected {ACCEPTED}", self.0)
    }
}

impl std::error::Error for ThrottleError {}

/// A validated rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ThrottleSpec", into = "ThrottleSpec")]
pub struct Throttle {
    bytes_per_second: u64,
}

impl Throttle {
    /// The rate in bytes per second.
    pub fn bytes_per_second(self) -> u64 {
        self.bytes_per_second
    }
}

impl TryFrom<ThrottleSpec> for Throttle {
    type Error = ThrottleError;

    fn try_from(spec: ThrottleSpec) -> Result<Throttle, ThrottleError> {
        if (1..=MAX_BYTES_PER_SECOND).contains(&spec.bytes_per_second) {
            Ok(Throttle { bytes_per_second: spec.bytes_per_second })
        } else {
            Err(ThrottleError(spec.bytes_per_second))
        }
    }
}

impl From<Throttle> for ThrottleSpec {
    fn from(t: Throttle) -> ThrottleSpec {
        ThrottleSpec { bytes_per_second: t.bytes_per_second }
    }
}

/// What the host does with the body it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Release it now (continue the stream).
    Release,
    /// Keep holding it; release at this time (ms), on the worker's timer.
    HoldUntil(u64),
}

/// One response's pacing state.
#[derive(Clone, Debug)]
pub struct Pacer {
    bytes_per_second: u64,
    /// When the modelled link has passed every byte seen so far, in microseconds, so that
    /// rounding does not add up over many chunks.
    link_free_us: u64,
    /// Bytes the host holds.
    held: u64,
    /// The largest chunk seen: how far ahead of the link a release may put the client.
    largest_chunk: u64,
}

impl Pacer {
    /// A pacer for one response.
    pub fn new(throttle: Throttle) -> Pacer {
        Pacer { bytes_per_second: throttle.bytes_per_second.max(1), link_free_us: 0, held: 0, largest_chunk: 0 }
    }

    /// `len` more body bytes arrived at `now_ms` and joined what the host holds: whether
    /// to release all of it now or when. Call it for the last chunk too. While a body is
    /// held, Envoy reports the size of everything held, so `len` is the growth since the
    /// last call, not that size.
    pub fn on_chunk(&mut self, len: u64, now_ms: u64) -> Pace {
        let now_us = now_ms.saturating_mul(1000);
        self.link_free_us = self.link_free_us.max(now_us).saturating_add(self.passing_us(len));
        self.held = self.held.saturating_add(len);
        self.largest_chunk = self.largest_chunk.max(len);
        self.pace(now_ms)
    }

    /// The worker's timer fired at `now_ms` for this response: release now, or (if more
    /// arrived since the hold began) hold on until the new time.
    pub fn on_timer(&mut self, now_ms: u64) -> Pace {
        self.pace(now_ms)
    }

    /// The host released everything it held.
    pub fn released(&mut self) {
        self.held = 0;
    }

    /// Bytes the host holds, to compare with its buffer limit.
    pub fn held_bytes(&self) -> u64 {
        self.held
    }

    /// How long `len` bytes take to pass the link, in microseconds.
    fn passing_us(&self, len: u64) -> u64 {
        // Saturates only for chunks of over 18 TB.
        len.saturating_mul(1_000_000) / self.bytes_per_second
    }

    fn pace(&self, now_ms: u64) -> Pace {
        let due_ms = self.link_free_us.saturating_sub(self.passing_us(self.largest_chunk)).div_ceil(1000);
        if self.held == 0 || due_ms <= now_ms {
            Pace::Release
        } else {
            Pace::HoldUntil(due_ms)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn throttle(bytes_per_second: u64) -> Throttle {
        Throttle::try_from(ThrottleSpec { bytes_per_second }).unwrap()
    }

    /// A host that buffers chunks and releases the whole buffer on continue, driven by
    /// chunk arrivals `(ms, len)` and a timer. Returns the releases `(ms, bytes)`.
    fn run(rate: u64, arrivals: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut pacer = Pacer::new(throttle(rate));
        let mut releases = Vec::new();
        let mut timer: Option<u64> = None;
        let mut act = |pace: Pace, now: u64, pacer: &mut Pacer, timer: &mut Option<u64>| match pace {
            Pace::Release => {
                releases.push((now, pacer.held_bytes()));
                pacer.released();
                *timer = None;
            }
            Pace::HoldUntil(due) => *timer = Some(due),
        };
        let mut next = arrivals.iter().peekable();
        loop {
            let arrival = next.peek().map(|(ms, _)| *ms);
            match (arrival, timer) {
                (Some(a), Some(t)) if t <= a => {
                    let pace = pacer.on_timer(t);
                    act(pace, t, &mut pacer, &mut timer);
                }
                (Some(a), _) => {
                    let (_, len) = next.next().copied().unwrap();
                    let pace = pacer.on_chunk(len, a);
                    act(pace, a, &mut pacer, &mut timer);
                }
                (None, Some(t)) => {
                    let pace = pacer.on_timer(t);
                    act(pace, t, &mut pacer, &mut timer);
                }
                (None, None) => return releases,
            }
        }
    }

    fn chunks(total: u64, size: u64, every_ms: u64) -> Vec<(u64, u64)> {
        (0..total.div_ceil(size)).map(|i| (i * every_ms, size.min(total - i * size))).collect()
    }

    #[test]
    fn five_hundred_kib_at_a_hundred_kib_per_second_takes_about_five_seconds() {
        // Upstreams at least as fast as the rate: 8 KiB every 80 ms is exactly 100 KiB/s.
        for (size, every_ms) in [(16 * KIB, 0), (16 * KIB, 1), (16 * KIB, 150), (64 * KIB, 0), (64 * KIB, 600), (8 * KIB, 80), (100_000, 20)] {
            {
                let releases = run(100 * KIB, &chunks(500 * KIB, size, every_ms));
                let (end, _) = *releases.last().unwrap();
                assert_eq!(releases.iter().map(|r| r.1).sum::<u64>(), 500 * KIB, "the body is intact");
                assert!((4000..=7000).contains(&end), "{size} every {every_ms}ms: ends at {end}ms");
            }
        }
    }

    #[test]
    fn the_client_is_never_more_than_a_chunk_ahead_of_the_link() {
        for (size, every_ms) in [(16 * KIB, 0), (16 * KIB, 100), (64 * KIB, 300), (4 * KIB, 7), (16 * KIB, 1000)] {
            let mut sent = 0;
            for (ms, bytes) in run(100 * KIB, &chunks(500 * KIB, size, every_ms)) {
                sent += bytes;
                assert!(sent * 1000 <= ms * 100 * KIB + size * 1000, "{size} every {every_ms}: {sent} bytes by {ms}ms");
            }
        }
    }

    #[test]
    fn a_body_arriving_at_the_rate_trickles_chunk_by_chunk() {
        let releases = run(100 * KIB, &chunks(500 * KIB, 16 * KIB, 160));
        assert_eq!(releases.len(), 32, "one release per chunk");
        assert!(releases.iter().all(|(_, bytes)| *bytes <= 16 * KIB));
    }

    #[test]
    fn a_slower_upstream_is_not_held() {
        let releases = run(100 * KIB, &chunks(64 * KIB, 16 * KIB, 1000));
        assert_eq!(releases, vec![(0, 16 * KIB), (1000, 16 * KIB), (2000, 16 * KIB), (3000, 16 * KIB)]);
    }

    #[test]
    fn a_fast_upstream_merges_pieces_but_keeps_the_average_rate() {
        assert_eq!(run(100 * KIB, &chunks(500 * KIB, 16 * KIB, 0)), vec![(0, 16 * KIB), (4840, 484 * KIB)]);
        let releases = run(100 * KIB, &chunks(500 * KIB, 16 * KIB, 100));
        assert_eq!(releases, vec![(0, 16 * KIB), (160, 16 * KIB), (4840, 468 * KIB)]);
    }

    #[test]
    fn very_fast_rates_hold_for_the_time_the_bytes_take() {
        let mut pacer = Pacer::new(throttle(MAX_BYTES_PER_SECOND));
        assert_eq!(pacer.on_chunk(1 << 20, 50), Pace::Release, "one chunk ahead");
        pacer.released();
        assert_eq!(pacer.on_chunk(1 << 20, 50), Pace::HoldUntil(51), "the second waits for the first");
        assert_eq!(pacer.on_timer(51), Pace::Release);
        pacer.released();
        assert_eq!(pacer.on_timer(52), Pace::Release, "nothing held");
        assert_eq!(pacer.on_chunk(0, 60), Pace::Release, "an empty last chunk");
    }

    #[test]
    fn bad_rates_say_what_is_accepted() {
        for (json, message) in [
            (r#"{"bytes_per_second": 0}"#, "bytes_per_second: 0 is not accepted; expected a whole number of bytes per second from 1 to 1073741824"),
            (r#"{"bytes_per_second": 1073741825}"#, "1073741825 is not accepted"),
            (r#"{"bytes_per_second": -1}"#, "invalid value: integer `-1`, expected u64"),
            (r#"{"bytes_per_second": 1.5}"#, "invalid type: floating point `1.5`, expected u64"),
            (r#"{"rate": 1}"#, "unknown field `rate`, expected `bytes_per_second`"),
        ] {
            let error = serde_json::from_str::<Throttle>(json).unwrap_err().to_string();
            assert!(error.contains(message), "{json}: {error}");
        }
        let t: Throttle = serde_json::from_str(r#"{"bytes_per_second": 102400}"#).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"bytes_per_second":102400}"#);
    }
}
