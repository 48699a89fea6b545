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
//! Read through `serde_json::Value` rather than serde's derive, whose visitors cost the
//! module kilobytes; shares are kept in parts per million and shown without float
//! formatting.

use crate::decide::Source;
use crate::model::duration::{self, Millis};
use crate::model::rules::{Match, RequestView};
use crate::model::share::{Ppm, FULL};
use crate::model::values::not_accepted;
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
    source: Shown,
}

/// A JSON value kept as it came, shared rather than copied between copies of the state (a
/// copy of a `Value` costs the module a kilobyte of code).
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
const MATCH: &str = "match";
const KEYS: [&str; 4] = ["above", "window", "min_requests", "slower_than"];

/// How a key of a condition reads: its default, what is accepted, and its reader.
type Reader = (&'static str, Option<u64>, &'static str, fn(&Value) -> Option<u64>);

/// The keys of a condition, as whole numbers: the share in parts per million, the window
/// in seconds, the minimum of requests, and the slow threshold in milliseconds.
const READERS: [Reader; 4] = [
    (KEYS[0], None, "a share in percent from 0 to below 100, such as 5", |v| {
        v.as_f64().and_then(Ppm::from_percent).map(|p| u64::from(p.0)).filter(|p| *p < u64::from(FULL))
    }),
    (KEYS[1], Some(30), "whole seconds from 1s to 10m, such as 30s", |v| {
        let ms = duration::parse(v.as_str()?)?.0;
        Some(ms / 1000).filter(|s| ms % 1000 == 0 && (1..=MAX_WINDOW_SECONDS).contains(s))
    }),
    (KEYS[2], Some(50), "a whole number from 1, such as 50", |v| v.as_u64().filter(|n| *n > 0)),
    (KEYS[3], None, duration::ACCEPTED, |v| Some(duration::parse(v.as_str()?)?.0)),
];

/// `key` of `object` through `read` (a plain `fn`, so one copy serves every key); `default`
/// when absent.
fn field(object: &serde_json::Map<String, Value>, key: &str, default: Option<u64>, accepted: &str, read: fn(&Value) -> Option<u64>) -> Result<u64, String> {
    match object.get(key) {
        None => default.ok_or_else(|| format!("{key}: needed; give {accepted}")),
        Some(v) => read(v).ok_or_else(|| format!("{key}: {}", not_accepted(v, accepted))),
    }
}

/// Reads one condition of the guard; `slow` when it has `slower_than`.
fn condition(value: &Value, slow: bool) -> Result<(Condition, Millis), String> {
    let keys = if slow { &KEYS[..] } else { &KEYS[..3] };
    let Some(object) = value.as_object().filter(|o| o.keys().all(|k| keys.contains(&k.as_str()))) else {
        let accepted = if slow { "an object of slower_than, above, window, min_requests" } else { "an object of above, window, min_requests" };
        return Err(not_accepted(value, accepted));
    };
    let mut read = [0; 4];
    for (value, (key, default, accepted, reader)) in read.iter_mut().zip(&READERS[..keys.len()]) {
        *value = field(object, key, *default, accepted, *reader)?;
    }
    let [above, window, min_requests, slower_than] = read;
    // Below FULL, checked above.
    Ok((Condition { above: Ppm(above as u32), window, min_requests }, Millis(slower_than)))
}

impl TryFrom<Shown> for Guard {
    type Error = String;
    fn try_from(source: Shown) -> Result<Guard, String> {
        let value = &*source.0;
        let known = |o: &&serde_json::Map<String, Value>| {
            (o.contains_key(FAILURES) || o.contains_key(SLOW)) && o.keys().all(|k| k == FAILURES || k == SLOW || k == MATCH)
        };
        let Some(object) = value.as_object().filter(known) else {
            return Err(not_accepted(value, "an object of upstream_failures, slow_responses or both, and optionally match"));
        };
        // Read from bytes as the rules' matches are, which adds no code: deserialized from
        // a Value, the match grammar cost the module 13 KB.
        let watched = match object.get(MATCH) {
            Some(given) => {
                let bytes = serde_json::to_vec(given).map_err(|e| e.to_string())?;
                let read = crate::model::values::read::<Match>(&bytes, crate::model::values::UnknownKeys::InMessage);
                Some(read.map_err(|e| if e.path == "$" { format!("{MATCH}: {}", e.message) } else { format!("{MATCH}.{e}") })?)
            }
            None => None,
        };
        let mut guard = Guard { watched, upstream_failures: None, slow_responses: None, source: source.clone() };
        for (name, slow) in [(FAILURES, false), (SLOW, true)] {
            let Some(given) = object.get(name) else { continue };
            let read = condition(given, slow).map_err(|e| format!("{name}: {e}"))?;
            if slow {
                guard.slow_responses = Some(read);
            } else {
                guard.upstream_failures = Some(read.0);
            }
        }
        Ok(guard)
    }
}

impl<'de> Deserialize<'de> for Guard {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Guard, D::Error> {
        Guard::try_from(Shown::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

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
        Guard::try_from(Shown(Rc::new(serde_json::from_str(json).unwrap())))
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
            (r#"{}"#, "{} is not accepted; expected an object of upstream_failures, slow_responses or both"),
            (r#"[]"#, "[] is not accepted; expected an object of upstream_failures"),
            (r#"{"errors": {"above": 5}}"#, r#"{"errors":{"above":5}} is not accepted; expected an object of upstream_failures"#),
            (r#"{"upstream_failures": 5}"#, "upstream_failures: 5 is not accepted; expected an object of above, window, min_requests"),
            (r#"{"upstream_failures": {"above": 100}}"#, "upstream_failures: above: 100 is not accepted; expected a share in percent from 0 to below 100"),
            (r#"{"upstream_failures": {"above": -1}}"#, "above: -1 is not accepted"),
            (r#"{"upstream_failures": {"window": "5s"}}"#, "upstream_failures: above: needed; give a share"),
            (r#"{"upstream_failures": {"above": 5, "window": "1500ms"}}"#, "upstream_failures: window: \"1500ms\" is not accepted; expected whole seconds from 1s to 10m"),
            (r#"{"upstream_failures": {"above": 5, "window": "11m"}}"#, "window: \"11m\" is not accepted"),
            (r#"{"upstream_failures": {"above": 5, "window": 0}}"#, "window: 0 is not accepted"),
            (r#"{"upstream_failures": {"above": 5, "min_requests": 0}}"#, "upstream_failures: min_requests: 0 is not accepted; expected a whole number from 1"),
            (r#"{"upstream_failures": {"above": 5, "slower_than": "1s"}}"#, "expected an object of above, window, min_requests"),
            (r#"{"slow_responses": {"slower_than": "fast", "above": 5}}"#, "slow_responses: slower_than: \"fast\" is not accepted; expected seconds"),
            (r#"{"slow_responses": {"above": 5}}"#, "slow_responses: slower_than: needed"),
            (r#"{"match": {"path": {"prefix": "/a"}}}"#, "is not accepted; expected an object of upstream_failures, slow_responses or both, and optionally match"),
            (r#"{"upstream_failures": {"above": 5}, "match": {"route": "/a"}}"#, "match: unknown field `route`"),
            (r#"{"upstream_failures": {"above": 5}, "match": {"method": "get"}}"#, "match.method: \"get\" is not accepted; expected a method in capitals"),
        ] {
            let error = guard(json).unwrap_err();
            assert!(error.contains(message), "{json}: {error}");
        }
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
