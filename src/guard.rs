//! Stop conditions: injection halts by itself when the service really starts failing.
//!
//! A guard holds up to two conditions, each a share over a sliding window that counts only
//! after a minimum number of requests in it:
//! - `upstream_failures`: real upstream failures (a 5xx the upstream sent, an upstream
//!   reset, or a timeout or no-healthy-upstream that Envoy answers with its own 503/504);
//! - `slow_responses`: real responses slower than a threshold (counted, not a percentile,
//!   so it stays exact and cheap).
//!
//! Only requests the filter left alone are counted: [`Seen`] makes the caller say, for each
//! request, whether it was faulted (delayed, aborted, rewritten...), and faulted ones are
//! never counted against the service.
//!
//! Each worker counts into its own [`Window`] of one-second buckets and, at each stats
//! flush, adds it into the window shared by all workers ([`Window::merge`], a sum), which
//! is stored as compact JSON; the shared window is then evaluated ([`Window::evaluate`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration::{self, Millis};
use crate::share::{self, Ppm, FULL};

/// The longest window accepted, in seconds (ten minutes).
pub const MAX_WINDOW_SECONDS: u32 = 600;
/// The window when none is given.
pub const DEFAULT_WINDOW: &str = "30s";
/// The minimum number of requests when none is given.
pub const DEFAULT_MIN_REQUESTS: u32 = 50;

/// A guard as written in the plugin configuration or a policy document:
/// `{"upstream_failures": {"above": 5, "window": "30s", "min_requests": 50}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// Halt when real upstream failures pass a share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_failures: Option<ConditionSpec>,
    /// Halt when real responses slower than a threshold pass a share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_responses: Option<SlowSpec>,
}

/// A share over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// The share, in percent, that trips the condition when passed (0 to below 100).
    pub above: f64,
    /// The sliding window, whole seconds from 1s to 10m (default 30s).
    #[serde(default = "default_window")]
    pub window: String,
    /// Requests the window must hold before the share counts (default 50).
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

/// A share of slow responses over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowSpec {
    /// A response slower than this, from the request's headers to the response's, is slow.
    pub slower_than: String,
    /// The share, in percent, that trips the condition when passed (0 to below 100).
    pub above: f64,
    /// The sliding window, whole seconds from 1s to 10m (default 30s).
    #[serde(default = "default_window")]
    pub window: String,
    /// Requests the window must hold before the share counts (default 50).
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

fn default_window() -> String {
    DEFAULT_WINDOW.into()
}

fn default_min_requests() -> u32 {
    DEFAULT_MIN_REQUESTS
}

/// Why a guard was refused; each message names the field and what is accepted.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardError {
    /// Neither condition was given.
    Empty,
    /// A share is outside [0, 100).
    BadShare {
        /// Which condition.
        condition: Kind,
        /// What was given.
        above: f64,
    },
    /// A window is not whole seconds from 1s to 10m.
    BadWindow {
        /// Which condition.
        condition: Kind,
        /// What was given.
        window: String,
    },
    /// The slow threshold is not a duration.
    BadThreshold(String),
    /// A minimum of zero requests would let one request trip the guard.
    ZeroMinRequests(Kind),
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Empty => write!(f, "guard: give at least one condition, upstream_failures or slow_responses"),
            GuardError::BadShare { condition, above } => write!(
                f,
                "guard.{condition}.above: {} is not accepted; give a share in percent from 0 to below 100, such as 5",
                share::rejected_text(*above)
            ),
            GuardError::BadWindow { condition, window } => write!(
                f,
                "guard.{condition}.window: {window:?} is not accepted; give whole seconds from 1s to 10m, such as 30s"
            ),
            GuardError::BadThreshold(text) => {
                write!(f, "guard.slow_responses.slower_than: {text:?} is not accepted; give {}", duration::ACCEPTED)
            }
            GuardError::ZeroMinRequests(condition) => {
                write!(f, "guard.{condition}.min_requests: 0 is not accepted; give at least 1, such as 50")
            }
        }
    }
}

impl std::error::Error for GuardError {}

/// Which condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Real upstream failures.
    UpstreamFailures,
    /// Real responses slower than a threshold.
    SlowResponses,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::UpstreamFailures => "upstream_failures",
            Kind::SlowResponses => "slow_responses",
        })
    }
}

/// A validated condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The share that trips it when passed.
    pub above: Ppm,
    /// The window, in seconds.
    pub window_seconds: u32,
    /// Requests the window must hold.
    pub min_requests: u32,
}

/// A validated guard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GuardSpec", into = "GuardSpec")]
pub struct Guard {
    /// The upstream failure condition.
    pub upstream_failures: Option<Condition>,
    /// The slow response condition and its threshold.
    pub slow_responses: Option<(Condition, Millis)>,
}

impl Guard {
    /// The longest window of the conditions, in seconds: what a [`Window`] must hold.
    pub fn longest_window(&self) -> u32 {
        let failures = self.upstream_failures.map_or(0, |c| c.window_seconds);
        let slow = self.slow_responses.map_or(0, |(c, _)| c.window_seconds);
        failures.max(slow)
    }
}

fn condition(kind: Kind, above: f64, window: String, min_requests: u32) -> Result<Condition, GuardError> {
    let share = match Ppm::from_percent(above) {
        Some(share) if share.0 < FULL => share,
        _ => return Err(GuardError::BadShare { condition: kind, above }),
    };
    let seconds = match duration::parse(&window) {
        Some(Millis(ms)) if ms % 1000 == 0 && (1..=u64::from(MAX_WINDOW_SECONDS)).contains(&(ms / 1000)) => ms / 1000,
        _ => return Err(GuardError::BadWindow { condition: kind, window }),
    };
    if min_requests == 0 {
        return Err(GuardError::ZeroMinRequests(kind));
    }
    // At most MAX_WINDOW_SECONDS, checked just above.
    Ok(Condition { above: share, window_seconds: seconds as u32, min_requests })
}

impl TryFrom<GuardSpec> for Guard {
    type Error = GuardError;

    fn try_from(spec: GuardSpec) -> Result<Guard, GuardError> {
        let upstream_failures = spec
            .upstream_failures
            .map(|c| condition(Kind::UpstreamFailures, c.above, c.window, c.min_requests))
            .transpose()?;
        let slow_responses = match spec.slow_responses {
            None => None,
            Some(s) => {
                let threshold = duration::parse(&s.slower_than).ok_or(GuardError::BadThreshold(s.slower_than))?;
                Some((condition(Kind::SlowResponses, s.above, s.window, s.min_requests)?, threshold))
            }
        };
        if upstream_failures.is_none() && slow_responses.is_none() {
            return Err(GuardError::Empty);
        }
        Ok(Guard { upstream_failures, slow_responses })
    }
}

impl From<Guard> for GuardSpec {
    fn from(guard: Guard) -> GuardSpec {
        let above = |c: Condition| c.above.percent();
        let window = |c: Condition| Millis(u64::from(c.window_seconds) * 1000).to_string();
        GuardSpec {
            upstream_failures: guard.upstream_failures.map(|c| ConditionSpec {
                above: above(c),
                window: window(c),
                min_requests: c.min_requests,
            }),
            slow_responses: guard.slow_responses.map(|(c, threshold)| SlowSpec {
                slower_than: threshold.to_string(),
                above: above(c),
                window: window(c),
                min_requests: c.min_requests,
            }),
        }
    }
}

/// How a real request failed upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The upstream answered with a 5xx.
    UpstreamStatus,
    /// The upstream reset or closed the stream, before or after its response started.
    UpstreamReset,
    /// The upstream did not answer in time; Envoy answered 504.
    UpstreamTimeout,
    /// No healthy upstream host; Envoy answered 503.
    NoHealthyUpstream,
}

/// Classifies a finished request from its final status and Envoy's response code details
/// (the `response.code_details` property: `via_upstream` when the upstream answered,
/// otherwise why Envoy answered or reset). `None`: not an upstream failure, such as a
/// success, a 4xx, another filter's local reply, or the client going away.
pub fn classify(status: u16, code_details: &str) -> Option<Failure> {
    const TIMEOUTS: [&str; 4] =
        ["response_timeout", "upstream_per_try_timeout", "upstream_per_try_idle_timeout", "upstream_max_stream_duration_reached"];
    if code_details == "via_upstream" {
        (status >= 500).then_some(Failure::UpstreamStatus)
    } else if code_details.starts_with("upstream_reset_before_response_started")
        || code_details.starts_with("upstream_reset_after_response_started")
    {
        Some(Failure::UpstreamReset)
    } else if TIMEOUTS.contains(&code_details) {
        Some(Failure::UpstreamTimeout)
    } else if code_details == "no_healthy_upstream" {
        Some(Failure::NoHealthyUpstream)
    } else {
        None
    }
}

/// What a worker saw of one finished request. The caller says for every request whether
/// the filter faulted it, so that a faulted one cannot be counted by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The filter faulted this request (delayed, aborted, reset, rewrote...): not counted.
    Faulted,
    /// The filter left this request alone; this is the upstream's real behaviour.
    Real {
        /// How it failed upstream, if it did ([`classify`]).
        failure: Option<Failure>,
        /// From the request's headers to the response's, in milliseconds.
        elapsed_ms: u64,
    },
}

/// Counts of real requests in one second: `[requests, failures, slow]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counts([u32; 3]);

impl Counts {
    fn add(&mut self, other: Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = mine.saturating_add(theirs);
        }
    }
}

/// Per-second counts of real requests over the last `capacity` seconds, kept by each
/// worker and, summed, in shared data. Stored as `{"end":S,"counts":[[r,f,s],...]}`: the
/// counts of the seconds up to S (seconds since the epoch), oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    end: u64,
    counts: Vec<Counts>,
}

impl Window {
    /// Records one finished request at `now_ms` under `guard`.
    pub fn record(&mut self, guard: &Guard, now_ms: u64, seen: Seen) {
        let Seen::Real { failure, elapsed_ms } = seen else {
            return;
        };
        let slow = guard.slow_responses.is_some_and(|(_, threshold)| elapsed_ms > threshold.0);
        let counts = Counts([1, u32::from(failure.is_some()), u32::from(slow)]);
        self.add(guard.longest_window(), now_ms / 1000, counts);
    }

    /// Adds another window's counts (a worker's since its last flush) into this one, for
    /// a guard whose longest window is `capacity_seconds`.
    pub fn merge(&mut self, capacity_seconds: u32, other: &Window) {
        let first = other.end + 1 - other.counts.len() as u64;
        for (i, counts) in other.counts.iter().enumerate() {
            self.add(capacity_seconds, first + i as u64, *counts);
        }
    }

    /// True when nothing was recorded; a worker with an empty window has nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Forgets all counts (a worker's, after its flush).
    pub fn clear(&mut self) {
        self.counts.clear();
    }

    /// The first condition of `guard` that trips at `now_ms`, if any. A window of W seconds
    /// is the current second, counted so far, and the W - 1 before it.
    pub fn evaluate(&self, guard: &Guard, now_ms: u64) -> Option<Trip> {
        let failures = guard.upstream_failures.map(|c| (Kind::UpstreamFailures, c, 1));
        let slow = guard.slow_responses.map(|(c, _)| (Kind::SlowResponses, c, 2));
        failures.into_iter().chain(slow).find_map(|(kind, c, index)| {
            let (requests, matching) = self.sum(now_ms / 1000, c.window_seconds, index);
            // Counts stay far below 2^64 / 10^6 (u32 per second, at most 600 seconds).
            let trips = requests >= u64::from(c.min_requests)
                && matching.saturating_mul(u64::from(FULL)) > u64::from(c.above.0).saturating_mul(requests);
            trips.then(|| Trip {
                condition: kind,
                measured: Ppm::of(matching, requests),
                above: c.above,
                requests,
                window_seconds: c.window_seconds,
                at_ms: now_ms,
            })
        })
    }

    /// Requests and those counted at `index` in the `window` seconds up to `now_second`.
    fn sum(&self, now_second: u64, window: u32, index: usize) -> (u64, u64) {
        let oldest = (now_second + 1).saturating_sub(u64::from(window));
        let first = (self.end + 1).saturating_sub(self.counts.len() as u64);
        self.counts
            .iter()
            .enumerate()
            .filter(|(i, _)| (oldest..=now_second).contains(&(first + *i as u64)))
            .fold((0, 0), |(r, m), (_, c)| (r + u64::from(c.0[0]), m + u64::from(c.0[index])))
    }

    /// Adds `counts` to `second`'s bucket, moving the window forward if `second` is newer
    /// and dropping counts older than `capacity` seconds.
    fn add(&mut self, capacity: u32, second: u64, counts: Counts) {
        let capacity = u64::from(capacity.max(1));
        if self.counts.is_empty() {
            self.end = second;
        }
        if second > self.end {
            let fresh = (second - self.end).min(capacity);
            self.counts.extend((0..fresh).map(|_| Counts::default()));
            self.end = second;
        }
        let excess = (self.counts.len() as u64).saturating_sub(capacity);
        self.counts.drain(..excess as usize);
        if self.counts.is_empty() {
            self.counts.push(Counts::default());
        }
        // An older second still inside the window (a worker's late flush) gets its bucket.
        let first = self.end + 1 - self.counts.len() as u64;
        if second < first && self.end - second < capacity {
            self.counts.splice(0..0, (second..first).map(|_| Counts::default()));
        }
        let first = self.end + 1 - self.counts.len() as u64;
        if let Some(bucket) = second.checked_sub(first).and_then(|i| self.counts.get_mut(i as usize)) {
            bucket.add(counts);
        }
    }
}

/// A tripped condition: what `GET /injector` shows as `halted`, with the shares in percent;
/// stored in shared data as the same JSON, so every worker reads the same trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    /// Which condition tripped.
    pub condition: Kind,
    /// The share measured (rounded down to a part per million).
    pub measured: Ppm,
    /// The share it had to pass.
    pub above: Ppm,
    /// Real requests in the window.
    pub requests: u64,
    /// The window, in seconds.
    pub window_seconds: u32,
    /// When it tripped, in ms since the epoch.
    pub at_ms: u64,
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}% of {} requests over {}s (above {}%)",
            self.condition, self.measured, self.requests, self.window_seconds, self.above
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn guard(json: &str) -> Result<Guard, String> {
        serde_json::from_str::<Guard>(json).map_err(|e| e.to_string())
    }

    fn real(failure: Option<Failure>, elapsed_ms: u64) -> Seen {
        Seen::Real { failure, elapsed_ms }
    }

    const OK: Seen = Seen::Real { failure: None, elapsed_ms: 10 };
    const FAILED: Seen = Seen::Real { failure: Some(Failure::UpstreamStatus), elapsed_ms: 10 };

    /// Records `ok` good and `bad` failed requests at `at_ms`.
    fn feed(w: &mut Window, g: &Guard, at_ms: u64, ok: u32, bad: u32) {
        (0..ok).for_each(|_| w.record(g, at_ms, OK));
        (0..bad).for_each(|_| w.record(g, at_ms, FAILED));
    }

    fn five_xx_over_ten_percent() -> Guard {
        guard(r#"{"upstream_failures": {"above": 10, "window": "5s", "min_requests": 50}}"#).unwrap()
    }

    #[test]
    fn minimum_requests_are_respected() {
        let g = five_xx_over_ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 1_000, 0, 49);
        assert_eq!(w.evaluate(&g, 1_500), None, "49 failures of 49 requests");
        feed(&mut w, &g, 1_600, 0, 1);
        let trip = w.evaluate(&g, 1_700).unwrap();
        assert_eq!((trip.requests, trip.measured), (50, Ppm(FULL)));
    }

    #[test]
    fn trips_when_the_share_passes_the_threshold() {
        let g = five_xx_over_ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 10_000, 90, 10);
        assert_eq!(w.evaluate(&g, 10_000), None, "exactly 10% does not pass 10%");
        feed(&mut w, &g, 11_000, 0, 1);
        let trip = w.evaluate(&g, 11_200).unwrap();
        assert_eq!(trip, Trip {
            condition: Kind::UpstreamFailures,
            measured: Ppm(108_910),
            above: Ppm(100_000),
            requests: 101,
            window_seconds: 5,
            at_ms: 11_200,
        });
        assert_eq!(trip.to_string(), "upstream_failures at 10.891% of 101 requests over 5s (above 10%)");
        let text = serde_json::to_string(&trip).unwrap();
        assert_eq!(
            text,
            r#"{"condition":"upstream_failures","measured":10.891,"above":10.0,"requests":101,"window_seconds":5,"at_ms":11200}"#
        );
        assert_eq!(serde_json::from_str::<Trip>(&text).unwrap(), trip);
    }

    #[test]
    fn faulted_requests_never_count() {
        let g = five_xx_over_ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 1_000, 100, 0);
        (0..1000).for_each(|_| w.record(&g, 1_000, Seen::Faulted));
        assert_eq!(w.sum(1, 5, 1), (100, 0));
        assert_eq!(w.evaluate(&g, 1_000), None);
    }

    #[test]
    fn the_window_slides() {
        let g = five_xx_over_ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 100_000, 50, 50);
        assert!(w.evaluate(&g, 104_999).is_some(), "second 100 is inside seconds 100-104");
        assert_eq!(w.evaluate(&g, 105_000), None, "and outside 101-105");
        feed(&mut w, &g, 105_000, 100, 0);
        feed(&mut w, &g, 107_000, 0, 20);
        assert!(w.evaluate(&g, 107_000).is_some(), "20 of 120 in seconds 103-107");
        feed(&mut w, &g, 110_500, 200, 0);
        assert_eq!(w.evaluate(&g, 110_500), None, "20 of 220 in seconds 106-110");
        assert_eq!(w.counts.len(), 5, "only the longest window is kept");
    }

    #[test]
    fn a_long_pause_forgets_everything() {
        let g = five_xx_over_ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 1_000, 0, 100);
        feed(&mut w, &g, 1_000_000, 1, 0);
        assert_eq!(w.counts, vec![Counts::default(), Counts::default(), Counts::default(), Counts::default(), Counts([1, 0, 0])]);
        assert_eq!(w.evaluate(&g, 1_000_000), None);
    }

    #[test]
    fn two_workers_counts_add_up_in_the_shared_window() {
        let g = five_xx_over_ten_percent();
        let (mut one, mut two) = (Window::default(), Window::default());
        feed(&mut one, &g, 20_000, 40, 3);
        feed(&mut one, &g, 21_000, 5, 0);
        feed(&mut two, &g, 21_900, 40, 4);
        assert_eq!(one.evaluate(&g, 22_000), None, "3 of 48");
        assert_eq!(two.evaluate(&g, 22_000), None, "44 requests, under the minimum");
        let mut shared = Window::default();
        shared.merge(g.longest_window(), &one);
        shared.merge(g.longest_window(), &two);
        assert_eq!(shared.sum(22, 5, 1), (92, 7));
        assert_eq!(shared.evaluate(&g, 22_000), None, "7 of 92 is 7.6%");
        two.clear();
        assert!(two.is_empty());
        feed(&mut two, &g, 22_100, 0, 3);
        shared.merge(g.longest_window(), &two);
        let trip = shared.evaluate(&g, 22_200).unwrap();
        assert_eq!((trip.requests, trip.measured), (95, Ppm(105_263)));
    }

    #[test]
    fn a_late_flush_of_an_old_second_is_added_or_dropped() {
        let g = five_xx_over_ten_percent();
        let mut shared = Window::default();
        feed(&mut shared, &g, 30_000, 10, 0);
        let mut late = Window::default();
        feed(&mut late, &g, 27_000, 5, 0);
        feed(&mut late, &g, 28_000, 5, 0);
        shared.merge(5, &late);
        assert_eq!(shared.sum(30, 5, 1), (20, 0));
        let mut too_late = Window::default();
        feed(&mut too_late, &g, 20_000, 5, 0);
        shared.merge(5, &too_late);
        assert_eq!(shared.sum(30, 5, 1), (20, 0));
    }

    #[test]
    fn slow_responses_are_counted_against_their_threshold() {
        let g = guard(r#"{"slow_responses": {"slower_than": "1s", "above": 5, "window": "30s", "min_requests": 20}}"#).unwrap();
        let mut w = Window::default();
        (0..95).for_each(|_| w.record(&g, 5_000, real(None, 1000)));
        (0..5).for_each(|_| w.record(&g, 5_000, real(None, 1001)));
        assert_eq!(w.evaluate(&g, 5_000), None, "5 of 100 does not pass 5%");
        w.record(&g, 6_000, real(Some(Failure::UpstreamTimeout), 30_000));
        let trip = w.evaluate(&g, 6_000).unwrap();
        assert_eq!((trip.condition, trip.requests), (Kind::SlowResponses, 101));
    }

    #[test]
    fn each_condition_uses_its_own_window() {
        let g = guard(
            r#"{"upstream_failures": {"above": 50, "window": "2s", "min_requests": 10},
                "slow_responses": {"slower_than": "100ms", "above": 50, "window": "20s", "min_requests": 10}}"#,
        )
        .unwrap();
        assert_eq!(g.longest_window(), 20);
        let mut w = Window::default();
        (0..10).for_each(|_| w.record(&g, 1_000, real(Some(Failure::UpstreamReset), 500)));
        assert_eq!(w.evaluate(&g, 1_000).unwrap().condition, Kind::UpstreamFailures, "the first that trips");
        assert_eq!(w.evaluate(&g, 3_000).unwrap().condition, Kind::SlowResponses, "failures left their 2s window");
        assert_eq!(w.evaluate(&g, 21_000), None);
    }

    #[test]
    fn the_shared_window_is_compact_json() {
        let g = five_xx_over_ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 1_700_000_000_000, 3, 1);
        feed(&mut w, &g, 1_700_000_002_000, 2, 0);
        let text = serde_json::to_string(&w).unwrap();
        assert_eq!(text, r#"{"end":1700000002,"counts":[[4,1,0],[0,0,0],[2,0,0]]}"#);
        assert_eq!(serde_json::from_str::<Window>(&text).unwrap(), w);
    }

    #[test]
    fn only_upstream_failures_are_failures() {
        for (status, details, failure) in [
            (500, "via_upstream", Some(Failure::UpstreamStatus)),
            (503, "via_upstream", Some(Failure::UpstreamStatus)),
            (200, "via_upstream", None),
            (404, "via_upstream", None),
            (503, "upstream_reset_before_response_started{connection_failure}", Some(Failure::UpstreamReset)),
            (503, "upstream_reset_before_response_started{remote_reset}", Some(Failure::UpstreamReset)),
            (200, "upstream_reset_after_response_started{remote_reset}", Some(Failure::UpstreamReset)),
            (504, "response_timeout", Some(Failure::UpstreamTimeout)),
            (504, "upstream_per_try_timeout", Some(Failure::UpstreamTimeout)),
            (503, "no_healthy_upstream", Some(Failure::NoHealthyUpstream)),
            (503, "fault_injector", None),
            (404, "route_not_found", None),
            (0, "downstream_remote_disconnect", None),
            (429, "request_rate_limited", None),
        ] {
            assert_eq!(classify(status, details), failure, "{status} {details}");
        }
    }

    #[test]
    fn bad_guards_say_what_is_wrong_and_what_is_accepted() {
        for (json, message) in [
            (r#"{}"#, "guard: give at least one condition, upstream_failures or slow_responses"),
            (r#"{"upstream_failures": {"above": 100}}"#, "guard.upstream_failures.above: 100 is not accepted; give a share in percent from 0 to below 100"),
            (r#"{"upstream_failures": {"above": -1}}"#, "above: -1 is not accepted"),
            (r#"{"upstream_failures": {"above": 5, "window": "1500ms"}}"#, "guard.upstream_failures.window: \"1500ms\" is not accepted; give whole seconds from 1s to 10m"),
            (r#"{"upstream_failures": {"above": 5, "window": "11m"}}"#, "window: \"11m\" is not accepted"),
            (r#"{"upstream_failures": {"above": 5, "window": "0"}}"#, "window: \"0\" is not accepted"),
            (r#"{"upstream_failures": {"above": 5, "min_requests": 0}}"#, "guard.upstream_failures.min_requests: 0 is not accepted; give at least 1"),
            (r#"{"slow_responses": {"slower_than": "fast", "above": 5}}"#, "guard.slow_responses.slower_than: \"fast\" is not accepted; give seconds"),
            (r#"{"slow_responses": {"above": 5}}"#, "missing field `slower_than`"),
            (r#"{"upstream_failures": {"above": 5, "windo": "5s"}}"#, "unknown field `windo`, expected one of `above`, `window`, `min_requests`"),
            (r#"{"errors": {"above": 5}}"#, "unknown field `errors`, expected `upstream_failures` or `slow_responses`"),
        ] {
            let error = guard(json).unwrap_err();
            assert!(error.contains(message), "{json}: {error}");
        }
    }

    #[test]
    fn defaults_and_round_trip() {
        let g = guard(r#"{"upstream_failures": {"above": 5}}"#).unwrap();
        assert_eq!(g.upstream_failures, Some(Condition { above: Ppm(50_000), window_seconds: 30, min_requests: 50 }));
        let text = serde_json::to_string(&g).unwrap();
        assert_eq!(text, r#"{"upstream_failures":{"above":5.0,"window":"30s","min_requests":50}}"#);
        assert_eq!(guard(&text).unwrap(), g);
    }
}
