//! The policy document: the whole state as one JSON object, `{"rules": [...], "policy":
//! {...}, "clients": [...]}`. `GET /injector` shows it and `POST /injector` replaces the
//! state with one, so what is read can be sent back. `policy` and `clients` are the views
//! the query parameters edit, so the query and the document never disagree.

use crate::policy::{State, MAX_CLIENTS};
use crate::query::Call;
use crate::rules::{DocError, Rule};
use crate::json::{self, Map};

const KEYS: &[&str] = &["rules", "policy", "clients", "configuration"];

fn error(path: impl Into<String>, message: impl Into<String>) -> DocError {
    DocError { path: path.into(), message: message.into() }
}

/// Reads a document into the state it describes, at `now_ms` (for `ttl`). Keys left out
/// take their start values: no rules, no fault at 20%, no bindings. `configuration` (shown
/// by `GET`) is accepted and ignored, since a document cannot change it.
pub fn parse(bytes: &[u8], now_ms: u64) -> Result<State, DocError> {
    let value = json::parse(bytes).map_err(|e| error("$", format!("not JSON: {e}")))?;
    let map = value.as_object().ok_or_else(|| error("$", "expected a JSON object with rules, policy and clients"))?;
    if let Some(k) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(error(k.clone(), format!("unknown key; accepted: {}", KEYS.join(", "))));
    }
    let mut state = State::default();
    if let Some(policy) = map.get("policy") {
        let object = policy.as_object().ok_or_else(|| error("policy", "expected an object of control parameters"))?;
        state = apply(&state, "policy", object, false, now_ms)?;
    }
    if let Some(clients) = map.get("clients") {
        let list = clients.as_array().ok_or_else(|| error("clients", "expected a list of objects with 'ip'"))?;
        if list.len() > MAX_CLIENTS {
            return Err(error("clients", format!("at most {MAX_CLIENTS} client bindings")));
        }
        for (i, client) in list.iter().enumerate() {
            let path = format!("clients[{i}]");
            let object = client.as_object().ok_or_else(|| error(path.clone(), "expected an object with 'ip'"))?;
            state = apply(&state, &path, object, true, now_ms)?;
        }
    }
    if let Some(rules) = map.get("rules") {
        state.rules = Rule::parse_list("rules", rules, now_ms)?;
    }
    Ok(state)
}

fn apply(state: &State, path: &str, object: &Map, needs_ip: bool, now_ms: u64) -> Result<State, DocError> {
    let call = Call::from_object(object).map_err(|(name, e)| {
        error(name.map_or_else(|| path.to_string(), |n| format!("{path}.{n}")), e.to_string())
    })?;
    if call.reset {
        return Err(error(format!("{path}.reset"), "not accepted in a document; DELETE /injector resets"));
    }
    if needs_ip != call.ip.is_some() {
        let message = if needs_ip { "each client needs 'ip'" } else { "'ip' belongs in clients" };
        return Err(error(path, message));
    }
    call.apply(state, &State::default(), now_ms).map_err(|e| error(path, e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::policy::FaultKind;
    use crate::rules::Fault;

    #[test]
    fn what_is_read_can_be_sent_back() {
        let text = br#"{
            "rules": [{"match": {"path": {"prefix": "/checkout"}, "method": "POST"}, "fault": {"abort": {"status": 503}}, "ttl": "10m"}],
            "policy": {"policy": "delayResponse", "timeout": "250ms", "percentage": 5, "ttl": "1m"},
            "clients": [{"ip": "10.1.2.3", "status": 500, "percentage": 100}],
            "configuration": {"id": "0", "version": null}
        }"#;
        let state = parse(text, 1_000).unwrap();
        assert_eq!(state.rules[0].fault, Fault::Abort { status: 503, grpc_status: None });
        assert_eq!(state.rules[0].until_ms, Some(601_000));
        assert_eq!(state.default.kind, FaultKind::DelayResponse);
        assert_eq!(state.bindings.len(), 1);
        let shown = state.to_json(1_000).to_string();
        assert_eq!(parse(shown.as_bytes(), 1_000).unwrap(), state, "{shown}");
    }

    #[test]
    fn empty_document_is_the_start() {
        assert_eq!(parse(b"{}", 0).unwrap(), State::default());
    }

    #[test]
    fn errors_name_the_json_path() {
        for (text, needle) in [
            (&b"nope"[..], "$: not JSON"),
            (b"[]", "$: expected a JSON object"),
            (b"{\"rule\": []}", "rule: unknown key"),
            (b"{\"policy\": {\"status\": 700}}", "policy: status: '700'"),
            (b"{\"policy\": {\"percentage\": true}}", "policy.percentage"),
            (b"{\"policy\": {\"ip\": \"10.0.0.1\"}}", "policy: 'ip' belongs in clients"),
            (b"{\"policy\": {\"reset\": \"\"}}", "policy.reset"),
            (b"{\"clients\": [{\"status\": 500}]}", "clients[0]: each client needs 'ip'"),
            (b"{\"clients\": [{\"ip\": \"x\"}]}", "clients[0]: ip: 'x'"),
            (b"{\"rules\": [{\"fault\": {\"delay\": {\"fixed\": \"soon\"}}}]}", "rules[0].fault.delay.fixed"),
        ] {
            let message = parse(text, 0).unwrap_err().to_string();
            assert!(message.starts_with(needle), "{}: {message}", String::from_utf8_lossy(text));
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::json::Value;
    use proptest::prelude::*;

    /// A JSON value built from the document's own words, nested, with arbitrary leaves.
    fn value() -> impl Strategy<Value = Value> {
        let word = prop::sample::select(vec![
            "rules", "policy", "clients", "match", "fault", "path", "exact", "prefix", "regex", "method", "headers",
            "name", "present", "delay", "fixed", "jitter", "abort", "status", "grpc_status", "response", "body",
            "bounded_retries", "retries", "response_delay", "response_rewrite", "add_headers", "remove_headers",
            "percentage", "sample_by", "ttl", "ip", "timeout", "boundedRetries",
        ]);
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| json::parse(n.to_string().as_bytes()).unwrap_or_default()),
            (0u32..2000, 0u32..100).prop_map(|(w, f)| json::parse(format!("{w}.{f}").as_bytes()).unwrap_or_default()),
            "[ -~]{0,12}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((word.clone(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any document is a state or an error with a JSON path; never a panic. A state it
        /// gives reads back the same through the document's own shape.
        #[test]
        fn any_document(v in value()) {
            let text = json::object([("rules", v.get("rules").cloned().unwrap_or(Value::Array(vec![v.clone()])))]).to_string();
            for bytes in [v.to_string(), text] {
                match parse(bytes.as_bytes(), 1_000) {
                    Ok(state) => {
                        let shown = state.to_json(1_000).to_string();
                        prop_assert_eq!(parse(shown.as_bytes(), 1_000).ok(), Some(state));
                    }
                    Err(e) => prop_assert!(!e.path.is_empty() && !e.message.is_empty()),
                }
            }
        }

        /// Arbitrary bytes, too.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = parse(&bytes, 0) {
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}
