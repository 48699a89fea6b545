//! Stop conditions: injection halts by itself when the service really starts failing.
//!
//! A guard holds up to two conditions, each a share over a sliding window that counts only
//! once the window holds a minimum number of requests:
//! - `upstream_failures`: real upstream failures (a 5xx the upstream sent, an upstream
//!   reset, or a timeout or no-healthy-upstream that Envoy answers with its own 503/504);
//! - `slow_responses`: real responses slower than a threshold (counted, not a percentile,
//!   so it stays exact and cheap).
//!
//! Only requests the filter left alone are counted; the glue never records a faulted one.
//! And only the requests the guard watches ([`Guard::watches`]): those its `match` takes
//! or, without one, those a fault in force could have applied to, so unrelated failing
//! paths never halt the faults.
//! Each worker sums what it saw since its last stats flush ([`Seen`]) and, at the flush,
//! adds it into the window all workers share ([`Window`], per-second buckets kept in shared
//! data), which it then evaluates.
//!
//! Read as every JSON here is: serde derive on the guard as written (`GuardSpec`), kept
//! to be shown and stored as written, then `TryFrom` into what it means; shares are kept
//! in parts per million and shown without float formatting.

use crate::model::duration::{self, Millis};
use crate::model::rules::{Match, RequestView, Source};
use crate::model::share::{Ppm, FULL};
use crate::model::values::{self, from_given, from_object, Given};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::rc::Rc;

/// The longest window accepted, in seconds (ten minutes).
pub const MAX_WINDOW_SECONDS: u64 = 600;

/// One condition: a share over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The share that trips it when passed.
    pub above: Ppm,
    /// The window, in seconds.
    pub window: u64,
    /// Requests the window must hold before the share counts.
    pub min_requests: u64,
}

/// A validated guard, as written in the plugin configuration or a policy document:
/// `{"upstream_failures": {"above": 5, "window": "30s", "min_requests": 50}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    /// The requests it watches, in the rules' match grammar; `None`: those a fault in force
    /// could apply to.
    pub watched: Option<Match>,
    /// Halt when real upstream failures pass a share.
    pub upstream_failures: Option<Condition>,
    /// Halt when real responses slower than the threshold pass a share.
    pub slow_responses: Option<(Condition, Millis)>,
    /// The guard as written, which is what is shown and stored.
    source: Rc<GuardSpec>,
}

/// A JSON value kept as it came, shared rather than copied between copies of the state (a
/// copy of a `Value` costs the module a kilobyte of code): the trip that halted injection
/// (`halted`, see [`Window::evaluate`]). The filter writes it; a document sent back only
/// echoes it and it is ignored when sent, so it is read as any JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown(pub Rc<Value>);

impl Serialize for Shown {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Shown {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Shown, D::Error> {
        Value::deserialize(deserializer).map(|v| Shown(Rc::new(v)))
    }
}

const FAILURES: &str = "upstream_failures";
const SLOW: &str = "slow_responses";
const ABOVE_ACCEPTED: &str = "a share in percent from 0 to below 100, such as 5";
const WINDOW_ACCEPTED: &str = "whole seconds from 1s to 10m, such as 30s";
const MIN_REQUESTS_ACCEPTED: &str = "a whole number from 1, such as 50";

/// The guard as written. Its keys, and the conditions' keys, are in the order the guard
/// has always been shown.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardSpec {
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    watched: Option<Match>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_responses: Option<Slow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_failures: Option<Failures>,
}

/// `upstream_failures` as written.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailuresSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    above: Option<Above>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_requests: Option<MinRequests>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<Seconds>,
}

/// `slow_responses` as written: a condition with its threshold.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    above: Option<Above>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_requests: Option<MinRequests>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slower_than: Option<Threshold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<Seconds>,
}

/// A condition from its keys, with the defaults of those left out.
fn condition(above: Option<&Above>, window: Option<&Seconds>, min_requests: Option<&MinRequests>) -> Result<Condition, String> {
    let above = above.ok_or_else(|| format!("above: needed; give {ABOVE_ACCEPTED}"))?.1;
    Ok(Condition { above, window: window.map_or(30, |w| w.1), min_requests: min_requests.map_or(50, |m| m.0) })
}

/// `upstream_failures` as written and what it means.
#[derive(Debug, PartialEq)]
struct Failures(FailuresSpec, Condition);

impl TryFrom<FailuresSpec> for Failures {
    type Error = String;
    fn try_from(spec: FailuresSpec) -> Result<Failures, String> {
        let condition = condition(spec.above.as_ref(), spec.window.as_ref(), spec.min_requests.as_ref())?;
        Ok(Failures(spec, condition))
    }
}
from_object!(Failures, FailuresSpec);

/// `slow_responses` as written and what it means.
#[derive(Debug, PartialEq)]
struct Slow(SlowSpec, Condition, Millis);

impl TryFrom<SlowSpec> for Slow {
    type Error = String;
    fn try_from(spec: SlowSpec) -> Result<Slow, String> {
        let threshold = spec.slower_than.as_ref().ok_or_else(|| format!("slower_than: needed; give {}", duration::ACCEPTED))?.1;
        let condition = condition(spec.above.as_ref(), spec.window.as_ref(), spec.min_requests.as_ref())?;
        Ok(Slow(spec, condition, threshold))
    }
}
from_object!(Slow, SlowSpec);

impl Serialize for Failures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Serialize for Slow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `above`: a share in percent below 100, and the number as written.
#[derive(Debug, PartialEq)]
struct Above(serde_json::Number, Ppm);

impl TryFrom<Given> for Above {
    type Error = String;
    fn try_from(given: Given) -> Result<Above, String> {
        let share = match &given {
            Given::Number(n) => n.as_f64().and_then(Ppm::from_percent).filter(|p| p.0 < FULL).map(|p| Above(n.clone(), p)),
            _ => None,
        };
        share.ok_or_else(|| given.refused(ABOVE_ACCEPTED))
    }
}
from_given!(Above);

impl Serialize for Above {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `window`: whole seconds, and the text as written.
#[derive(Debug, PartialEq)]
struct Seconds(String, u64);

impl TryFrom<Given> for Seconds {
    type Error = String;
    fn try_from(given: Given) -> Result<Seconds, String> {
        let ms = given.as_str().and_then(duration::parse).map(|m| m.0).filter(|ms| ms % 1000 == 0);
        let seconds = ms.map(|ms| ms / 1000).filter(|s| (1..=MAX_WINDOW_SECONDS).contains(s));
        match (given, seconds) {
            (Given::Text(text), Some(seconds)) => Ok(Seconds(text, seconds)),
            (given, _) => Err(given.refused(WINDOW_ACCEPTED)),
        }
    }
}
from_given!(Seconds);

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `slower_than`: a duration, and the text as written.
#[derive(Debug, PartialEq)]
struct Threshold(String, Millis);

impl TryFrom<Given> for Threshold {
    type Error = String;
    fn try_from(given: Given) -> Result<Threshold, String> {
        match (given.as_str().and_then(duration::parse), given) {
            (Some(threshold), Given::Text(text)) => Ok(Threshold(text, threshold)),
            (_, given) => Err(given.refused(duration::ACCEPTED)),
        }
    }
}
from_given!(Threshold);

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `min_requests`: a whole number from 1.
#[derive(Debug, PartialEq, Serialize)]
#[serde(transparent)]
struct MinRequests(u64);

impl TryFrom<Given> for MinRequests {
    type Error = String;
    fn try_from(given: Given) -> Result<MinRequests, String> {
        given.as_u64().filter(|n| *n > 0).map(MinRequests).ok_or_else(|| given.refused(MIN_REQUESTS_ACCEPTED))
    }
}
from_given!(MinRequests);

impl TryFrom<GuardSpec> for Guard {
    type Error = String;
    fn try_from(spec: GuardSpec) -> Result<Guard, String> {
        if spec.upstream_failures.is_none() && spec.slow_responses.is_none() {
            let shown = values::shown_text(serde_json::to_string(&spec).unwrap_or_default());
            return Err(format!("{shown} is not accepted; expected an object of upstream_failures, slow_responses or both, and optionally match"));
        }
        Ok(Guard {
            watched: spec.watched.clone(),
            upstream_failures: spec.upstream_failures.as_ref().map(|f| f.1),
            slow_responses: spec.slow_responses.as_ref().map(|s| (s.1, s.2)),
            source: Rc::new(spec),
        })
    }
}
from_object!(Guard, GuardSpec);

impl Serialize for Guard {
    /// As written, as [`crate::model::values::Pattern`] keeps its source.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(serializer)
    }
}

impl Guard {
    /// Whether a request the filter left alone counts for this guard: one its `match`
    /// takes or, without one, one a fault in force could have applied to (`source`: a
    /// rule matched it, sampled out, or a query policy applies to its client).
    pub fn watches(&self, source: Source, request: &mut dyn RequestView) -> bool {
        match &self.watched {
            Some(watched) => watched.matches(request),
            None => matches!(source, Source::Rule(_) | Source::Policy),
        }
    }
}

/// Whether Envoy's `response.code_details` with final status `status` is a real upstream
/// failure: a 5xx the upstream sent (`via_upstream`), an upstream reset, or a timeout or
/// no-healthy-upstream that Envoy answered itself. Another filter's local reply, a 4xx or
/// the client going away is not.
pub fn is_failure(status: u64, details: &str) -> bool {
    match details {
        "via_upstream" => status >= 500,
        "response_timeout" | "upstream_per_try_timeout" | "upstream_per_try_idle_timeout" | "upstream_max_stream_duration_reached"
        | "no_healthy_upstream" => true,
        _ => details.starts_with("upstream_reset_"),
    }
}

/// Whether `response.code_details` is read to tell whether a request that ended with final
/// status `status` failed ([`is_failure`]): a request with a status from 1 to 499 is
/// counted as no failure without it, so most requests cost one property read, not two;
/// 0 (no answer) and 5xx need it. An upstream reset after a 2xx started is therefore not
/// counted as a failure.
pub fn needs_details(status: u64) -> bool {
    !(1..500).contains(&status)
}

/// Real requests a worker saw since its last flush: `[requests, failures, slow]`.
pub type Seen = [u32; 3];

/// Adds one real request to `seen`: its final status and `response.code_details`, and how
/// long it took, in milliseconds.
pub fn record(seen: &mut Seen, guard: &Guard, status: u64, details: &str, elapsed_ms: u64) {
    let slow = guard.slow_responses.is_some_and(|(_, threshold)| elapsed_ms > threshold.0);
    for (count, add) in seen.iter_mut().zip([true, is_failure(status, details), slow]) {
        *count = count.saturating_add(u32::from(add));
    }
}

/// The counts of real requests per second over the guard's longest window, summed over
/// all workers, kept in shared data as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The second (since the epoch) of the last bucket.
    end: u64,
    /// When the window was last emptied (ms since the epoch): counts a worker began before
    /// then are refused (see [`Window::add`]).
    emptied_ms: u64,
    /// `[requests, failures, slow]` for each second up to `end`, oldest first.
    buckets: Vec<Seen>,
}

impl Window {
    /// An empty window that takes only what workers count from `now_ms` on.
    pub fn emptied(now_ms: u64) -> Window {
        Window { emptied_ms: now_ms, ..Window::default() }
    }

    /// Reads the stored form; anything else is an empty window.
    pub fn decode(bytes: &[u8]) -> Window {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Adds a worker's `seen`, counted from `from_ms` to `now_ms`, dropping what is older
    /// than the guard's longest window. There is a bucket for each second of that window,
    /// so a worker whose clock read a little behind another's still adds to its own second.
    /// Counts begun before the window was emptied are dropped: a worker may flush what it
    /// saw before a resume or a new policy only after the write emptied the window.
    pub fn add(&mut self, guard: &Guard, from_ms: u64, now_ms: u64, seen: Seen) {
        if from_ms < self.emptied_ms {
            return;
        }
        let windows = [guard.upstream_failures.map_or(1, |c| c.window), guard.slow_responses.map_or(1, |(c, _)| c.window)];
        let capacity = windows[0].max(windows[1]) as usize;
        let second = now_ms / 1000;
        if self.buckets.len() != capacity {
            // A new guard, or nothing stored yet: start afresh.
            self.end = second;
            self.buckets.clear();
            self.buckets.resize(capacity, [0; 3]);
        }
        let shift = second.saturating_sub(self.end).min(capacity as u64) as usize;
        self.buckets.copy_within(shift.., 0);
        self.buckets[capacity - shift..].fill([0; 3]);
        self.end = self.end.max(second);
        let back = (self.end - second) as usize;
        if let Some(bucket) = capacity.checked_sub(back + 1).and_then(|i| self.buckets.get_mut(i)) {
            for (count, add) in bucket.iter_mut().zip(seen) {
                *count = count.saturating_add(add);
            }
        }
    }

    /// The first condition of `guard` that trips at `now_ms`: what `GET /injector` shows
    /// as `halted`. A window of W seconds is the current second, counted so far, and the
    /// W - 1 before it.
    pub fn evaluate(&self, guard: &Guard, now_ms: u64) -> Option<Value> {
        let conditions = [(FAILURES, guard.upstream_failures, 1), (SLOW, guard.slow_responses.map(|(c, _)| c), 2)];
        conditions.into_iter().find_map(|(name, c, index)| {
            let c = c?;
            // Bucket i holds second end + 1 + i - len, kept unsigned on both sides.
            let oldest = (now_ms / 1000 + 1).saturating_sub(c.window) + self.buckets.len() as u64;
            let (mut requests, mut matching) = (0, 0);
            for (i, bucket) in self.buckets.iter().enumerate() {
                if self.end + 1 + i as u64 >= oldest {
                    requests += u64::from(bucket[0]);
                    matching += u64::from(bucket[index]);
                }
            }
            let trips = requests >= c.min_requests && matching * u64::from(FULL) > u64::from(c.above.0) * requests;
            let values: [Value; 4] = [name.into(), Ppm::of(matching, requests).percent().into(), requests.into(), now_ms.into()];
            trips.then(|| {
                let mut trip = serde_json::Map::new();
                for (key, value) in TRIP_KEYS.iter().zip(values) {
                    trip.insert(key.to_string(), value);
                }
                Value::Object(trip)
            })
        })
    }
}

/// The members of a trip, as `halted` shows them: the share it had to pass and the window
/// are the guard's, shown beside it.
const TRIP_KEYS: [&str; 4] = ["condition", "measured", "requests", "at_ms"];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn guard(json: &str) -> Result<Guard, String> {
        values::read::<Guard>(json.as_bytes(), values::UnknownKeys::InPath).map_err(|e| e.to_string())
    }

    fn ten_percent() -> Guard {
        guard(r#"{"upstream_failures": {"above": 10, "window": "5s", "min_requests": 50}}"#).unwrap()
    }

    /// A window that saw `ok` good and `bad` failed requests at `at_ms`.
    fn feed(w: &mut Window, g: &Guard, at_ms: u64, ok: u32, bad: u32) {
        w.add(g, at_ms, at_ms, [ok + bad, bad, 0]);
    }

    #[test]
    fn the_minimum_of_requests_is_respected() {
        let g = ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 1_000, 0, 49);
        assert_eq!(w.evaluate(&g, 1_500), None, "49 failures of 49 requests");
        feed(&mut w, &g, 1_600, 0, 1);
        assert_eq!(w.evaluate(&g, 1_700).unwrap()["requests"], 50);
    }

    #[test]
    fn trips_when_the_share_passes_the_threshold() {
        let g = ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 10_000, 90, 10);
        assert_eq!(w.evaluate(&g, 10_000), None, "exactly 10% does not pass 10%");
        feed(&mut w, &g, 11_000, 0, 1);
        let trip = w.evaluate(&g, 11_200).unwrap();
        assert_eq!(
            trip.to_string(),
            r#"{"at_ms":11200,"condition":"upstream_failures","measured":10.891,"requests":101}"#
        );
    }

    #[test]
    fn the_window_slides_and_keeps_only_the_longest_window() {
        let g = ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 100_000, 50, 50);
        assert!(w.evaluate(&g, 104_999).is_some(), "second 100 is inside seconds 100-104");
        assert_eq!(w.evaluate(&g, 105_000), None, "and outside 101-105");
        feed(&mut w, &g, 105_000, 100, 0);
        feed(&mut w, &g, 107_000, 0, 20);
        assert!(w.evaluate(&g, 107_000).is_some(), "20 of 120 in seconds 103-107");
        feed(&mut w, &g, 110_500, 200, 0);
        assert_eq!(w.evaluate(&g, 110_500), None, "20 of 220 in seconds 106-110");
        assert_eq!(w.buckets.len(), 5);
        feed(&mut w, &g, 1_000_000, 1, 0);
        assert_eq!(w.buckets, vec![[0; 3], [0; 3], [0; 3], [0; 3], [1, 0, 0]], "a long pause forgets everything");
    }

    #[test]
    fn workers_add_up_and_a_late_clock_adds_to_its_own_second() {
        let g = ten_percent();
        let mut shared = Window::default();
        feed(&mut shared, &g, 21_900, 40, 4);
        feed(&mut shared, &g, 20_500, 45, 3);
        assert_eq!(shared.buckets[3..], [[48, 3, 0], [44, 4, 0]]);
        assert_eq!(shared.evaluate(&g, 22_000), None, "7 of 92 is 7.6%");
        feed(&mut shared, &g, 22_100, 0, 3);
        assert_eq!(shared.evaluate(&g, 22_200).unwrap()["measured"], 10.5263);
        feed(&mut shared, &g, 1_000, 0, 300);
        assert_eq!(shared.buckets.iter().map(|b| b[0]).sum::<u32>(), 95, "older than the window: dropped");
    }

    #[test]
    fn the_stored_form_reads_back_and_anything_else_is_empty() {
        let g = ten_percent();
        let mut w = Window::default();
        feed(&mut w, &g, 1_700_000_000_000, 3, 1);
        feed(&mut w, &g, 1_700_000_002_000, 2, 0);
        assert_eq!(
            String::from_utf8(w.encode()).unwrap(),
            r#"{"end":1700000002,"emptied_ms":0,"buckets":[[0,0,0],[0,0,0],[4,1,0],[0,0,0],[2,0,0]]}"#
        );
        assert_eq!(Window::decode(&w.encode()), w);
        let emptied = Window::emptied(1_700_000_003_000);
        assert_eq!(Window::decode(&emptied.encode()), emptied);
        for bad in [&b""[..], b"x", b"12345678", br#"{"end": 1, "emptied_ms": 0, "buckets": [[1, 2]]}"#] {
            assert_eq!(Window::decode(bad), Window::default(), "{bad:?}");
        }
    }

    #[test]
    fn counts_begun_before_the_window_was_emptied_are_dropped() {
        let g = ten_percent();
        let mut w = Window::emptied(10_000);
        w.add(&g, 9_999, 10_050, [60, 60, 0]);
        assert_eq!(w.evaluate(&g, 10_100), None, "counted before a resume: not the new policy's");
        w.add(&g, 10_000, 10_100, [60, 60, 0]);
        assert_eq!(w.evaluate(&g, 10_100).unwrap()["requests"], 60);
    }

    #[test]
    fn slow_responses_are_counted_against_their_threshold() {
        let g = guard(r#"{"slow_responses": {"slower_than": "1s", "above": 5, "min_requests": 20}}"#).unwrap();
        let mut seen = Seen::default();
        (0..95).for_each(|_| record(&mut seen, &g, 200, "via_upstream", 1000));
        (0..5).for_each(|_| record(&mut seen, &g, 200, "via_upstream", 1001));
        assert_eq!(seen, [100, 0, 5]);
        let mut w = Window::default();
        w.add(&g, 4_000, 5_000, seen);
        assert_eq!(w.evaluate(&g, 5_000), None, "5 of 100 does not pass 5%");
        w.add(&g, 6_000, 6_000, [1, 1, 1]);
        assert_eq!(w.evaluate(&g, 6_000).unwrap()["condition"], SLOW);
    }

    #[test]
    fn each_condition_uses_its_own_window() {
        let g = guard(
            r#"{"upstream_failures": {"above": 50, "window": "2s", "min_requests": 10},
                "slow_responses": {"slower_than": "100ms", "above": 50, "window": "20s", "min_requests": 10}}"#,
        )
        .unwrap();
        let mut w = Window::default();
        w.add(&g, 1_000, 1_000, [10, 10, 10]);
        assert_eq!(w.evaluate(&g, 1_000).unwrap()["condition"], FAILURES, "the first that trips");
        assert_eq!(w.evaluate(&g, 3_000).unwrap()["condition"], SLOW, "failures left their 2s window");
        assert_eq!(w.evaluate(&g, 21_000), None);
    }

    #[test]
    fn details_are_read_where_the_status_leaves_a_failure_open() {
        assert!(needs_details(0) && needs_details(500) && needs_details(503) && needs_details(599));
        assert!(!needs_details(1) && !needs_details(200) && !needs_details(404) && !needs_details(499));
    }

    #[test]
    fn only_upstream_failures_are_failures() {
        for (status, details, failure) in [
            (500, "via_upstream", true),
            (503, "via_upstream", true),
            (200, "via_upstream", false),
            (404, "via_upstream", false),
            (503, "upstream_reset_before_response_started{connection_failure}", true),
            (200, "upstream_reset_after_response_started{remote_reset}", true),
            (504, "response_timeout", true),
            (504, "upstream_per_try_timeout", true),
            (503, "no_healthy_upstream", true),
            (503, "wasm_fail_stream", false),
            (404, "route_not_found", false),
            (0, "downstream_remote_disconnect", false),
            (429, "request_rate_limited", false),
        ] {
            assert_eq!(is_failure(status, details), failure, "{status} {details}");
        }
    }

    /// A request with only a path.
    struct Path(&'static str);

    impl RequestView for Path {
        fn path(&mut self) -> String {
            self.0.into()
        }
        fn method(&mut self) -> String {
            "GET".into()
        }
        fn header(&mut self, _: &str) -> Option<String> {
            None
        }
        fn client(&mut self) -> Option<std::net::IpAddr> {
            None
        }
        fn destination(&mut self) -> Option<std::net::IpAddr> {
            None
        }
    }

    #[test]
    fn a_guard_watches_what_its_match_takes_or_what_a_fault_could_touch() {
        let unmatched = ten_percent();
        assert_eq!(unmatched.watched, None);
        for (source, watched) in [(Source::Rule(0), true), (Source::Policy, true), (Source::Nothing, false), (Source::Header, false)] {
            assert_eq!(unmatched.watches(source, &mut Path("/anything")), watched, "{source:?}");
        }
        let checkout = guard(r#"{"upstream_failures": {"above": 5}, "match": {"path": {"prefix": "/checkout"}}}"#).unwrap();
        assert!(checkout.watches(Source::Nothing, &mut Path("/checkout/pay")), "its match, whatever the faults");
        assert!(!checkout.watches(Source::Rule(0), &mut Path("/health")));
        assert!(!checkout.watches(Source::Policy, &mut Path("/health")));
        let both = guard(r#"{"upstream_failures": {"above": 5}, "match": {"path": {"regex": "/(checkout|pay)(/.*)?"}}}"#).unwrap();
        assert!(both.watches(Source::Nothing, &mut Path("/pay")) && both.watches(Source::Nothing, &mut Path("/checkout/1")));
        assert!(!both.watches(Source::Rule(0), &mut Path("/payments")));
        let shown = serde_json::to_string(&checkout).unwrap();
        assert!(shown.contains(r#""match":{"path":{"prefix":"/checkout"}}"#), "{shown}");
    }

    #[test]
    fn bad_guards_say_what_is_wrong_and_what_is_accepted() {
        for (json, message) in [
            (r#"{}"#, "$: {} is not accepted; expected an object of upstream_failures, slow_responses or both"),
            (r#"[]"#, "$: a list is not accepted; expected an object"),
            (r#"{"errors": {"above": 5}}"#, "errors: unknown key; accepted: match, slow_responses, upstream_failures"),
            (r#"{"upstream_failures": 5}"#, "upstream_failures: 5 is a number; expected an object"),
            (r#"{"upstream_failures": {"above": 100}}"#, "upstream_failures.above: 100 is not accepted; expected a share in percent from 0 to below 100"),
            (r#"{"upstream_failures": {"above": -1}}"#, "upstream_failures.above: -1 is not accepted"),
            (r#"{"upstream_failures": {"above": "5"}}"#, "upstream_failures.above: \"5\" is not accepted"),
            (r#"{"upstream_failures": {"window": "5s"}}"#, "upstream_failures: above: needed; give a share"),
            (r#"{"upstream_failures": {"above": 5, "window": "1500ms"}}"#, "upstream_failures.window: \"1500ms\" is not accepted; expected whole seconds from 1s to 10m"),
            (r#"{"upstream_failures": {"above": 5, "window": "11m"}}"#, "upstream_failures.window: \"11m\" is not accepted"),
            (r#"{"upstream_failures": {"above": 5, "window": 0}}"#, "upstream_failures.window: 0 is not accepted"),
            (r#"{"upstream_failures": {"above": 5, "min_requests": 0}}"#, "upstream_failures.min_requests: 0 is not accepted; expected a whole number from 1"),
            (r#"{"upstream_failures": {"above": 5, "slower_than": "1s"}}"#, "upstream_failures.slower_than: unknown key; accepted: above, min_requests, window"),
            (r#"{"slow_responses": {"slower_than": "fast", "above": 5}}"#, "slow_responses.slower_than: \"fast\" is not accepted; expected seconds"),
            (r#"{"slow_responses": {"above": 5}}"#, "slow_responses: slower_than: needed"),
            (r#"{"match": {"path": {"prefix": "/a"}}}"#, "is not accepted; expected an object of upstream_failures, slow_responses or both, and optionally match"),
            (r#"{"upstream_failures": {"above": 5}, "match": {"route": "/a"}}"#, "match.route: unknown key; accepted: path, method"),
            (r#"{"upstream_failures": {"above": 5}, "match": {"method": "get"}}"#, "match.method: \"get\" is not accepted; expected a method in capitals"),
        ] {
            let error = guard(json).unwrap_err();
            assert!(error.starts_with(message) || (message.starts_with("is not") && error.contains(message)), "{json}: {error}");
        }
    }

    #[test]
    fn a_bad_guard_value_is_named_by_its_path_in_a_document_and_a_configuration() {
        let guard = r#"{"upstream_failures": {"above": 5}, "slow_responses": {"slower_than": "1s", "above": 5, "window": "90s", "min_requests": 0}}"#;
        let document = format!(r#"{{"rules": [], "guard": {guard}}}"#);
        let error = crate::model::document::parse(document.as_bytes(), 0).unwrap_err().to_string();
        assert_eq!(error, "guard.slow_responses.min_requests: 0 is not accepted; expected a whole number from 1, such as 50");
        let error = crate::config::Config::parse(format!(r#"{{"guard": {guard}}}"#).as_bytes()).unwrap_err().to_string();
        assert_eq!(error, "invalid plugin configuration: guard.slow_responses.min_requests: 0 is not accepted; expected a whole number from 1, such as 50");
        let error = crate::config::Config::parse(br#"{"guard": {"upstream_failures": {"above": 5, "windw": "9s"}}}"#).unwrap_err().to_string();
        assert!(error.starts_with("invalid plugin configuration: guard.upstream_failures: unknown field `windw`; accepted: "), "{error}");
    }

    #[test]
    fn defaults_and_round_trip() {
        let g = guard(r#"{"upstream_failures": {"above": 5}, "slow_responses": {"slower_than": "1.5s", "above": 0.5, "window": "1m"}}"#).unwrap();
        assert_eq!(g.upstream_failures, Some(Condition { above: Ppm(50_000), window: 30, min_requests: 50 }));
        assert_eq!(g.slow_responses, Some((Condition { above: Ppm(5_000), window: 60, min_requests: 50 }, Millis(1500))));
        let text = serde_json::to_string(&g).unwrap();
        assert_eq!(text, r#"{"slow_responses":{"above":0.5,"slower_than":"1.5s","window":"1m"},"upstream_failures":{"above":5}}"#);
        assert_eq!(guard(&text).unwrap(), g);
    }
}
