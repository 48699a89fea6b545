//! The control route's grammar: what a call to `/injector` asks, from its method and query
//! (and a `POST`'s body), before anyone is asked whether it may. `GET` with no query reads
//! the state, `GET ?document=<url-encoded JSON>` and `POST` replace it with a policy
//! document, `GET ?resume` resumes what a guard halted, `DELETE` resets, and any other
//! query edits with the parameters of [`crate::control::query`]. A write resumes what a
//! guard halted, and is refused if it sets a throttle no fault filter can pace ([`written`]).

use crate::control::query::percent_decode;
use crate::faults::throttle::NO_FAULT_FILTER;
use crate::model::policy::State;

/// Why a `POST` is refused where the listener cannot hold its body back from the router.
pub const POST_REFUSED: &str = "POST needs control.post_documents and Envoy's buffer filter after this one (docs/policy-document.md, \"POST needs a buffer\"); or send the document as GET ?document=<url-encoded JSON>";
/// Why a `POST` with a query is refused.
pub const POST_QUERY: &str = "POST takes the policy document in its body, not a query";
/// Why a `DELETE` with a query is refused.
pub const DELETE_QUERY: &str = "DELETE resets everything and takes no query; use GET ?ip=A&reset for one client";

/// What a control call asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call<'a> {
    /// A `POST` whose document is in the body still to come: ask again with it
    /// ([`with_body`]).
    AwaitBody,
    /// The state becomes this policy document (not parsed yet).
    Document(Vec<u8>),
    /// Back to the configuration's start.
    Reset,
    /// Injection a guard halted resumes; nothing else changes.
    Resume,
    /// Read (empty) or edit with these query parameters.
    Query(&'a str),
    /// Refused (400) for this reason.
    Refused(String),
}

/// What a call with `method` and `query` asks, its headers in hand; `post_documents` says
/// whether the listener holds a `POST`'s body back from the router (`control.post_documents`),
/// `end_of_stream` whether the headers ended the request (a `POST` without a body).
pub fn call<'a>(method: &str, query: &'a str, post_documents: bool, end_of_stream: bool) -> Call<'a> {
    match method {
        "POST" if !post_documents => Call::Refused(POST_REFUSED.into()),
        "POST" if !end_of_stream => Call::AwaitBody,
        "POST" => with_body(query, b""),
        "DELETE" if !query.is_empty() => Call::Refused(DELETE_QUERY.into()),
        "DELETE" => Call::Reset,
        _ => match query.strip_prefix("document=").filter(|d| !d.contains('&')) {
            Some(encoded) => match percent_decode(encoded) {
                Ok(text) => Call::Document(text.into_bytes()),
                Err(e) => Call::Refused(format!("document: {e}")),
            },
            None if query == "resume" => Call::Resume,
            None => Call::Query(query),
        },
    }
}

/// What a `POST` with `query` asks, now that its whole `body` is in hand.
pub fn with_body<'a>(query: &str, body: &[u8]) -> Call<'a> {
    if query.is_empty() {
        Call::Document(body.to_vec())
    } else {
        Call::Refused(POST_QUERY.into())
    }
}

/// The state a control call writes, `next` as its call made it: every write resumes
/// injection a guard halted. Refused where `next` has a throttle and `paced` is false: no
/// Envoy fault filter follows this one to pace it.
pub fn written(next: State, paced: bool) -> Result<State, String> {
    match next.throttle_at().filter(|_| !paced) {
        Some(at) => Err(format!("{at}: {NO_FAULT_FILTER}")),
        None => Ok(State { halted: None, ..next }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::guard::Shown;
    use crate::model::document;
    use std::rc::Rc;

    #[test]
    fn a_write_resumes_and_needs_a_pacer_for_a_throttle() {
        let throttle = document::parse(br#"{"rules": [{"fault": {"throttle": {"bytes_per_second": 1024}}}]}"#, 0).unwrap();
        let halted = State { halted: Some(Shown(Rc::new(serde_json::json!({"tripped": "errors"})))), ..throttle.clone() };
        assert_eq!(written(halted, true), Ok(throttle.clone()));
        let refused = written(throttle, false).unwrap_err();
        assert_eq!(refused, format!("rules[0].fault.throttle: {NO_FAULT_FILTER}"));
        let abort = document::parse(br#"{"policy": {"status": 503}}"#, 0).unwrap();
        assert_eq!(written(abort.clone(), false), Ok(abort));
    }

    #[test]
    fn each_method_and_query_asks_its_call() {
        assert_eq!(call("GET", "", true, true), Call::Query(""));
        assert_eq!(call("GET", "status=500&percentage=10", true, true), Call::Query("status=500&percentage=10"));
        assert_eq!(call("HEAD", "status=500", true, true), Call::Query("status=500"), "access refuses other methods");
        assert_eq!(call("GET", "resume", true, true), Call::Resume);
        assert_eq!(call("GET", "resume&status=500", true, true), Call::Query("resume&status=500"));
        assert_eq!(call("GET", "document=%7B%22policy%22%3A%22none%22%7D", true, true), Call::Document(br#"{"policy":"none"}"#.to_vec()));
        // With another parameter it is no document: the query's parser refuses it.
        assert_eq!(call("GET", "document=%7B%7D&ttl=1s", true, true), Call::Query("document=%7B%7D&ttl=1s"));
        assert!(matches!(call("GET", "document=%zz", true, true), Call::Refused(e) if e.starts_with("document: ")));
        assert_eq!(call("DELETE", "", true, true), Call::Reset);
        assert_eq!(call("DELETE", "ip=1.2.3.4", true, true), Call::Refused(DELETE_QUERY.into()));
    }

    #[test]
    fn a_post_needs_its_body_held_back() {
        assert_eq!(call("POST", "", false, false), Call::Refused(POST_REFUSED.into()));
        assert_eq!(call("POST", "", true, false), Call::AwaitBody);
        assert_eq!(call("POST", "", true, true), Call::Document(vec![]), "no body: an empty document, which the parser refuses");
        assert_eq!(call("POST", "status=500", true, true), Call::Refused(POST_QUERY.into()));
        assert_eq!(with_body("", b"{}"), Call::Document(b"{}".to_vec()));
        assert_eq!(with_body("x=1", b"{}"), Call::Refused(POST_QUERY.into()));
    }
}
