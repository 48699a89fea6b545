//! The control call's query: `/injector?status=500&percentage=100&ip=10.1.2.3` split and
//! percent-decoded into a [`Call`] (whose parameters [`crate::model::change`] reads), with
//! the checks that only a query needs: parameters that stand alone, and calls that would
//! change nothing.

pub use crate::model::change::{Call, ControlError, PARAMETERS};
use crate::model::outbound::Destination;

const TTL_NEEDS: &str = "give it with the change it ends (status=500&ttl=30s), or with reset";
const BINDING_NEEDS: &str = "give it with the change to bind (status=500, policy=none, ...) or with reset";

impl Call {
    /// Parses a query string (the part after `?`): `key=value` pairs joined by `&`.
    pub fn parse_query(query: &str) -> Result<Call, ControlError> {
        let mut pairs = Vec::new();
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((percent_decode(key)?, percent_decode(value)?));
        }
        // `resume` and `document` are each the whole call when alone (the control route
        // takes them before this parse); here they came with another parameter.
        let standing_alone = [("resume", "no value: '?resume' alone"), ("document", "a url-encoded JSON document: '?document=<JSON>' alone")];
        for (alone, accepted) in standing_alone {
            if let Some((_, value)) = pairs.iter().find(|(k, _)| k == alone) {
                return Err(match pairs.iter().find(|(k, _)| k != alone) {
                    Some((other, _)) => ControlError::Alone(alone, other.clone()),
                    None if pairs.len() > 1 => ControlError::Repeated(alone),
                    None => ControlError::BadValue { parameter: alone, value: value.clone(), accepted },
                });
            }
        }
        let call = Call::from_pairs(&mut pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        // A call with only these would answer 200 and change nothing.
        if !call.has_values() && !call.reset {
            if call.ttl.is_some() {
                return Err(ControlError::Needs("ttl", TTL_NEEDS));
            }
            match (&call.ip, &call.destination) {
                (Some(_), _) => return Err(ControlError::Needs("ip", BINDING_NEEDS)),
                (_, Some(Destination::Host(_))) => return Err(ControlError::Needs("host", BINDING_NEEDS)),
                (_, Some(Destination::Addresses(_))) => return Err(ControlError::Needs("dest", BINDING_NEEDS)),
                _ => {}
            }
        }
        Ok(call)
    }

}

/// Decodes `%XX` escapes and `+` (a space in form encoding); refuses bad escapes and non-UTF-8.
/// Kept here rather than taken from `percent-encoding` or `form_urlencoded`: the first passes
/// a bad escape (`%G1`) through as text and leaves `+` alone, the second decodes non-UTF-8
/// lossily, where the control API refuses both with "not UTF-8" and changes nothing.
pub fn percent_decode(text: &str) -> Result<String, ControlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(ControlError::NotUtf8)?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ControlError::NotUtf8)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::duration::Millis;
    use crate::model::percentage::Percentage;
    use crate::model::policy::{Settings, Seed, State, MAX_CLIENTS};

    fn apply(state: &State, query: &str) -> Result<State, ControlError> {
        Call::parse_query(query)?.apply(state, &State::default(), 0)
    }

    #[test]
    fn seed_calls_set_the_default_policy() {
        let s = State::default();
        let d = |q: &str| apply(&s, q).unwrap().default;
        assert_eq!(d("policy=simpleResponse").name(), "simpleResponse");
        assert_eq!(d("timeout=0.25").name(), "delayResponse");
        assert_eq!(d("timeout=0.25").given.delay, Millis(250));
        assert_eq!(d("timeout=2s").given.delay, Millis(2000));
        assert_eq!(d("policy=timeoutTest").given.delay, Millis(10_000));
        assert_eq!(d("status=404").name(), "statusResponse");
        assert_eq!(d("status=404").given.status, 404);
        assert_eq!(d("policy=statusResponse").given.status, 503);
        let given = Settings { retries: 3, ..Settings::default() };
        let fault = Seed::build("boundedRetries", &given, &crate::model::policy::Canned::default()).unwrap();
        assert_eq!(d("boundedRetries=3"), Seed { fault, until_ms: None, given });
        assert_eq!(d("boundedRetries=3&status=500").given.status, 500);
        assert_eq!(d("policy=boundedRetries").given.retries, 10);
        assert_eq!(d("percentage=12.5").percentage(), Percentage(125_000));
        assert_eq!(d("percentage=100").name(), "none");
    }

    #[test]
    fn values_not_given_keep_theirs() {
        let s = apply(&State::default(), "timeout=2&percentage=50").unwrap();
        let s = apply(&s, "status=500").unwrap();
        assert_eq!(s.default.name(), "statusResponse");
        assert_eq!(s.default.percentage(), Percentage(500_000));
        let s = apply(&s, "policy=delayResponse").unwrap();
        assert_eq!(s.default.given.delay, Millis(2000));
        assert_eq!(apply(&s, "policy=none").unwrap().default.name(), "none");
    }

    #[test]
    fn ip_edits_a_binding_that_starts_from_the_default() {
        let s = apply(&State::default(), "percentage=30").unwrap();
        let s = apply(&s, "status=500&percentage=100&ip=10.1.2.3").unwrap();
        assert_eq!(s.default.name(), "none");
        let ip = Some("10.1.2.3".parse().unwrap());
        assert_eq!(s.policy_for(ip).given.status, 500);
        assert_eq!(s.policy_for(ip).percentage(), Percentage(1_000_000));
        let s = apply(&s, "ip=10.1.2.3&timeout=1").unwrap();
        assert_eq!(s.policy_for(ip).name(), "delayResponse");
        assert_eq!(s.bindings.len(), 1);
        let s = apply(&s, "ip=10.1.2.3&reset").unwrap();
        assert!(s.bindings.is_empty());
    }

    #[test]
    fn reset_returns_to_the_start_then_applies() {
        let s = apply(&State::default(), "status=500&ip=10.0.0.0/8").unwrap();
        let s = apply(&s, "status=418").unwrap();
        assert_eq!(apply(&s, "reset").unwrap(), State::default());
        assert_eq!(apply(&s, "reset&status=502").unwrap().default.given.status, 502);
    }

    #[test]
    fn request_rewrite_is_a_query_policy_kept_part_by_part() {
        let s = apply(&State::default(), "policy=requestRewrite&path=/x&setHeaders=x-a:1&percentage=100").unwrap();
        let rewrite = s.default.given.by_kind.rewrite.clone().unwrap();
        assert_eq!((rewrite.path.as_deref(), rewrite.set_headers.len()), (Some("/x"), 1));
        let s = apply(&s, "method=POST").unwrap();
        let rewrite = s.default.given.by_kind.rewrite.clone().unwrap();
        assert_eq!((rewrite.path.as_deref(), rewrite.method.as_deref()), (Some("/x"), Some("POST")));
        assert!(matches!(s.default.fault, Some(crate::faults::Fault::RequestRewrite(_))));
        let message = apply(&State::default(), "policy=requestRewrite").unwrap_err().to_string();
        assert_eq!(message, "requestRewrite: give at least one of path, method, setHeaders, removeHeaders, query");
        let message = Call::parse_query("policy=requestRewrite&method=get").unwrap_err().to_string();
        assert!(message.starts_with("method: 'get' is not accepted; expected a method in capitals"), "{message}");
        let shown = crate::model::document::Document::of(&s, 0).policy;
        assert_eq!((shown.get("path").as_deref(), shown.get("method").as_deref()), (Some("/x"), Some("POST")));
        assert_eq!(shown.get("setHeaders").as_deref(), Some("x-a:1"));
    }

    #[test]
    fn only_a_whole_reset_starts_bounded_retries_over() {
        let over = |q: &str| Call::parse_query(q).unwrap().starts_over();
        assert!(over("reset") && over("reset&boundedRetries=2"));
        assert!(!over("boundedRetries=2") && !over("ip=10.0.0.1&reset") && !over("host=catalog&reset"));
    }

    #[test]
    fn bad_calls_name_the_parameter_and_what_is_accepted() {
        let cases = [
            ("foo=1", "unknown parameter 'foo'"),
            ("policy=chaos", "policy: 'chaos'"),
            ("status=700", "status: '700'"),
            ("status=199", "from 200 to 599"),
            ("status=abc", "status: 'abc'"),
            ("percentage=101", "percentage: '101'"),
            ("percentage=-1", "from 0 to 100"),
            ("timeout=-1", "timeout: '-1'"),
            ("timeout=soon", "unit `ms`"),
            ("timeout=2h", "timeout"),
            ("ip=10.1.2", "ip: '10.1.2'"),
            ("ip=10.0.0.0/40", "CIDR"),
            ("boundedRetries=-3", "boundedRetries"),
            ("status=500&status=502", "more than once"),
            ("status=%FF", "not UTF-8"),
            ("status=%G1", "not UTF-8"),
            ("timeout=1&status=500", "different faults"),
            ("timeout=1&boundedRetries=2", "different faults"),
            ("reset=yes", "reset"),
            ("after=soon", "after: 'soon'"),
            ("afterBytes=-1", "afterBytes: '-1'"),
            ("bytesPerSecond=0", "bytesPerSecond: '0'"),
            ("p50=0", "p50: '0'"),
            ("corrupt=0", "corrupt: '0'"),
        ];
        for (query, needle) in cases {
            let message = Call::parse_query(query).unwrap_err().to_string();
            assert!(message.contains(needle), "{query}: {message}");
        }
    }

    #[test]
    fn an_hour_is_written_1h() {
        let s = apply(&State::default(), "timeout=1h").unwrap();
        assert_eq!(s.default.given.delay, Millis(3_600_000));
        assert_eq!(Call::parse_query("status=500&ttl=1h").unwrap().ttl, Some(Millis(3_600_000)));
        assert!(Call::parse_query("timeout=2h").unwrap_err().to_string().contains("`h`, from 0 to 1h"));
    }

    #[test]
    fn resume_and_document_stand_alone() {
        let message = |q: &str| Call::parse_query(q).unwrap_err().to_string();
        assert_eq!(message("resume&status=500"), "'resume' stands alone: give it without other parameters (here 'status')");
        assert_eq!(message("status=500&resume"), "'resume' stands alone: give it without other parameters (here 'status')");
        assert_eq!(message("document=%7B%7D&status=500"), "'document' stands alone: give it without other parameters (here 'status')");
        assert_eq!(message("resume=1"), "resume: '1' is not accepted; expected no value: '?resume' alone");
        assert_eq!(message("resume&resume"), "parameter 'resume' is given more than once");
        assert_eq!(message("reset=yes"), "reset: 'yes' is not accepted; expected no value: 'reset', or 'ip=A&reset'");
        assert!(message("colour=red").ends_with("query; alone: resume, document"));
    }

    #[test]
    fn a_call_that_would_change_nothing_says_what_it_needs() {
        let message = |q: &str| Call::parse_query(q).unwrap_err().to_string();
        assert_eq!(message("ttl=30s"), "'ttl' alone changes nothing; give it with the change it ends (status=500&ttl=30s), or with reset");
        assert!(message("ip=10.0.0.1").starts_with("'ip' alone changes nothing; give it with the change to bind"));
        assert!(message("ip=10.0.0.1&ttl=30s").starts_with("'ttl' alone changes nothing"));
        assert!(message("host=payments").starts_with("'host' alone changes nothing"));
        assert!(message("dest=10.0.0.0/8").starts_with("'dest' alone changes nothing"));
        for fine in ["", "reset&ttl=30s", "ip=10.0.0.1&reset", "ip=10.0.0.1&percentage=5", "status=500&ttl=30s"] {
            assert!(Call::parse_query(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn numbers_have_one_form() {
        for query in ["status=%2B500", "status=0500", "boundedRetries=03", "afterBytes=+1", "bytesPerSecond=0100", "percentage=050", "timeout=01"] {
            assert!(Call::parse_query(query).is_err(), "{query}");
        }
        assert_eq!(Call::parse_query("boundedRetries=0").unwrap().retries, Some(0));
        assert_eq!(Call::parse_query("afterBytes=0").unwrap().by_kind.after_bytes, Some(0));
        let message = Call::parse_query("status=18446744073709551616").unwrap_err().to_string();
        assert!(message.starts_with("status: '18446744073709551616' is not accepted"), "{message}");
    }

    #[test]
    fn after_bytes_has_one_limit_in_the_query_and_in_a_document() {
        assert!(Call::parse_query("afterBytes=1099511627776").is_ok());
        let query = Call::parse_query("afterBytes=1099511627777").unwrap_err().to_string();
        let doc = br#"{"rules": [{"fault": {"truncate": {"after_bytes": 1099511627777}}}]}"#;
        let document = crate::model::document::parse(doc, 0).unwrap_err().to_string();
        let accepted = "expected a whole number of bytes from 0 to 1099511627776 (1 TiB)";
        assert!(query.ends_with(accepted) && document.ends_with(accepted), "{query} / {document}");
    }

    #[test]
    fn new_fault_parameters_are_kept_and_checked() {
        let s = apply(&State::default(), "policy=truncateResponse&afterBytes=10").unwrap();
        let s = apply(&s, "policy=longTailDelay&p50=200ms&p99=3s").unwrap();
        assert_eq!((s.default.given.by_kind.after_bytes, s.default.given.by_kind.p50, s.default.given.by_kind.p99), (Some(10), Some(Millis(200)), Some(Millis(3000))));
        let message = apply(&s, "p50=3s").unwrap_err().to_string();
        assert_eq!(message, "longTailDelay: p99 must be longer than p50; percentiles rise with their rank");
        // A p50 that does not fit is fine while another fault is in force.
        assert!(apply(&s, "policy=resetStream&p50=3s").is_ok());
        assert!(apply(&apply(&s, "policy=resetStream&p50=3s").unwrap(), "policy=longTailDelay").is_err());
    }

    #[test]
    fn corrupt_rounds_alike_in_the_query_and_in_a_document() {
        for share in ["0.00005", "12.34565", "100"] {
            let query = apply(&State::default(), &format!("policy=corruptBody&corrupt={share}")).unwrap().default.given.by_kind.corrupt;
            let doc = format!(r#"{{"rules": [{{"fault": {{"body_change": {{"corrupt": {{"percentage": {share}}}}}}}}}]}}"#);
            let rule = crate::model::document::parse(doc.as_bytes(), 0).unwrap().rules.remove(0);
            let ppm = match rule.fault {
                crate::faults::Fault::BodyChange(crate::faults::body_change::BodyChange::Corrupt { ppm }) => Some(ppm),
                _ => None,
            };
            assert_eq!(query, ppm, "{share}");
        }
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let message = Call::parse_query(&format!("{}=1", "x".repeat(5000))).unwrap_err().to_string();
        assert!(message.len() < 400 && message.contains("xxx..."), "{message}");
    }

    #[test]
    fn percent_decoding_and_empty_pieces() {
        let call = Call::parse_query("&policy=%73tatusResponse&&").unwrap();
        assert_eq!(call.kind, Some("statusResponse"));
        assert!(!Call::parse_query("").unwrap().changes_anything());
    }

    #[test]
    fn a_ttl_only_removes_the_fault_it_came_with() {
        let at = |s: &State, q: &str, now| Call::parse_query(q).unwrap().apply(s, &State::default(), now).unwrap();
        let s = at(&State::default(), "status=500&percentage=100", 0);
        let mut s = at(&s, "timeout=1&ttl=30s", 1000);
        assert_eq!(s.default.name(), "delayResponse");
        assert_eq!(crate::model::document::Document::of(&s, 11_000).policy.get("ttl").as_deref(), Some("20s"));
        s.settle(31_000);
        // The delay ends; the abort from before it does not come back.
        assert_eq!((s.default.name(), s.default.until_ms), ("none", None));
        // The issue's case: a later write without ttl replaces the fault and its TTL.
        let s = at(&State::default(), "status=500", 0);
        let s = at(&s, "status=503&percentage=100&ttl=3s", 0);
        let mut s = at(&s, "policy=none", 1000);
        assert_eq!((s.default.name(), s.default.until_ms), ("none", None));
        assert_eq!(crate::model::document::Document::of(&s, 1000).policy.get("ttl"), None);
        s.settle(5000);
        assert_eq!(s.default.name(), "none");
        // A write without ttl keeps its fault past the earlier TTL, and inherits none.
        let s = at(&State::default(), "status=503&ttl=3s", 0);
        let mut s = at(&s, "status=500", 1000);
        s.settle(5000);
        assert_eq!((s.default.name(), s.default.given.status), ("statusResponse", 500));
        // Bindings: one given with ttl goes away; a later write without ttl stays.
        let s = at(&State::default(), "ip=10.0.0.1&status=418", 0);
        let mut s = at(&s, "ip=10.0.0.1&status=502&ttl=1", 0);
        s.settle(1000);
        assert!(s.bindings.is_empty(), "the earlier 418 binding does not come back");
        let s = at(&State::default(), "ip=10.0.0.1&status=418&ttl=1", 0);
        let mut s = at(&s, "ip=10.0.0.1&status=502", 500);
        s.settle(2000);
        assert_eq!(s.policy_for(Some("10.0.0.1".parse().unwrap())).given.status, 502);
        assert!(Call::parse_query("ttl=0").is_err());
        assert!(Call::parse_query("ttl=2h").unwrap_err().to_string().contains("ttl: '2h'"));
    }

    #[test]
    fn binding_cap_is_enforced() {
        let mut s = State::default();
        for i in 0..MAX_CLIENTS {
            s = apply(&s, &format!("ip=10.0.{}.{}&status=500", i / 256, i % 256)).unwrap();
        }
        assert_eq!(apply(&s, "ip=10.9.9.9&status=500"), Err(ControlError::TooManyClients));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::model::policy::State;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any query either parses and applies, or is refused with a message; never a panic.
        #[test]
        fn any_query_is_accepted_or_refused_cleanly(query in "[a-zA-Z%=&+0-9./:\\-\u{0}-\u{ff}]{0,80}") {
            match Call::parse_query(&query) {
                Ok(call) => { let _ = call.apply(&State::default(), &State::default(), 0); }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// Queries made of real parameter names with arbitrary values.
        #[test]
        fn known_parameters_with_any_value(
            pairs in proptest::collection::vec(
                (prop::sample::select(vec!["policy", "timeout", "status", "boundedRetries", "percentage", "ip", "reset"]), "[ -~]{0,12}"),
                0..5,
            )
        ) {
            let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Ok(call) = Call::parse_query(&query.join("&")) {
                let _ = call.apply(&State::default(), &State::default(), 0);
            }
        }
    }
}
