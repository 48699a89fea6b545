//! The control route's gatekeeping: which requests are control calls, and who may make them.

use crate::config::Control;
use std::net::IpAddr;

/// Why a control call is turned away before its query is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's address is not in `control.allowed_cidrs` (403).
    Forbidden,
    /// A token is required and was missing or wrong (401).
    Unauthorized,
    /// Only GET, POST and DELETE are served (405).
    MethodNotAllowed,
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Forbidden => 403,
            Refusal::Unauthorized => 401,
            Refusal::MethodNotAllowed => 405,
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Forbidden => "the control route answers only allowed client addresses (control.allowed_cidrs)",
            Refusal::Unauthorized => "the control route needs 'authorization: Bearer <control.token>'",
            Refusal::MethodNotAllowed => "the control route answers GET, POST (a policy document) and DELETE (reset)",
        }
    }
}

/// If the request is a control call by its path, its query string. What it takes of the
/// request is read only as far as needed, cheapest first: with `control.filter_state` set,
/// `marked` (whether the request's connection carries that filter-state object), then
/// `path` (`:path`, with its query). With `control.port` set, the caller then checks the
/// port too ([`on_control_port`]).
pub fn control_query<'a>(control: &Control, marked: impl FnOnce(&str) -> bool, path: impl FnOnce() -> &'a str) -> Option<&'a str> {
    if !control.enabled || !control.filter_state.as_deref().is_none_or(marked) {
        return None;
    }
    let path = path();
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    (route == control.path).then_some(query)
}

/// Whether a request on the control path arrived at `control.port`, if one is set;
/// `local_port` is asked only then.
pub fn on_control_port(control: &Control, local_port: impl FnOnce() -> Option<u16>) -> bool {
    control.port.is_none_or(|port| local_port() == Some(port))
}

/// The methods the control route serves, as the `allow` header lists them.
pub const ALLOW: &str = "GET, POST, DELETE";
const ALLOWED_METHODS: [&str; 3] = ["GET", "POST", "DELETE"];

/// Decides whether a control call may proceed.
pub fn admit(control: &Control, client: Option<IpAddr>, method: &str, authorization: Option<&str>) -> Result<(), Refusal> {
    if !client.is_some_and(|ip| control.allowed.iter().any(|c| c.contains(ip))) {
        return Err(Refusal::Forbidden);
    }
    if let Some(token) = &control.token {
        let given = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(Refusal::Unauthorized);
        }
    }
    if !ALLOWED_METHODS.contains(&method) {
        return Err(Refusal::MethodNotAllowed);
    }
    Ok(())
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn control(json: &str) -> Control {
        Config::parse(json.as_bytes()).unwrap().control
    }

    /// `control_query` then `on_control_port`, on a connection without a mark.
    fn query<'a>(c: &Control, path: &'a str, local_port: impl FnOnce() -> Option<u16>) -> Option<&'a str> {
        control_query(c, |_| false, || path).filter(|_| on_control_port(c, local_port))
    }

    #[test]
    fn only_the_exact_path_is_the_control_route() {
        let c = control("{}");
        assert_eq!(query(&c, "/injector", || None), Some(""));
        assert_eq!(query(&c, "/injector?status=500", || None), Some("status=500"));
        for other in ["/injector/", "//injector", "/Injector", "/%69njector", "/injectors", "/"] {
            assert_eq!(query(&c, other, || None), None, "{other}");
        }
        assert_eq!(query(&control(r#"{"control":{"enabled":false}}"#), "/injector", || None), None);
        assert_eq!(query(&control(r#"{"control":{"path":"/fault"}}"#), "/fault?x", || None), Some("x"));
    }

    #[test]
    fn a_control_port_limits_the_route_to_that_listener() {
        let c = control(r#"{"control":{"port":8282}}"#);
        assert_eq!(query(&c, "/injector?reset", || Some(8282)), Some("reset"));
        assert_eq!(query(&c, "/injector?reset", || Some(8080)), None);
        assert_eq!(query(&c, "/injector?reset", || None), None);
        let asked = std::cell::Cell::new(false);
        assert_eq!(query(&c, "/app", || { asked.set(true); Some(8282) }), None);
        assert!(!asked.get(), "the port is read only for the control path");
    }

    #[test]
    fn a_control_filter_state_limits_the_route_to_marked_connections() {
        let c = control(r#"{"control":{"filter_state":"fault_injector.control"}}"#);
        assert_eq!(control_query(&c, |key| key == "fault_injector.control", || "/injector?reset"), Some("reset"));
        let read = std::cell::Cell::new(false);
        assert_eq!(control_query(&c, |_| false, || { read.set(true); "/injector?reset" }), None);
        assert!(!read.get(), "an unmarked connection's path is not read");
        let off = control(r#"{"control":{"enabled":false,"filter_state":"fault_injector.control"}}"#);
        assert_eq!(control_query(&off, |_| true, || "/injector"), None);
        let asked = std::cell::Cell::new(false);
        assert_eq!(control_query(&control("{}"), |_| { asked.set(true); false }, || "/injector"), Some(""));
        assert!(!asked.get(), "without control.filter_state nothing is looked up");
    }

    #[test]
    fn loopback_only_by_default() {
        let c = control("{}");
        assert_eq!(admit(&c, Some("127.0.0.5".parse().unwrap()), "GET", None), Ok(()));
        assert_eq!(admit(&c, Some("::1".parse().unwrap()), "GET", None), Ok(()));
        assert_eq!(admit(&c, Some("10.0.0.1".parse().unwrap()), "GET", None), Err(Refusal::Forbidden));
        assert_eq!(admit(&c, None, "GET", None), Err(Refusal::Forbidden));
        assert_eq!(admit(&c, Some("127.0.0.1".parse().unwrap()), "PUT", None), Err(Refusal::MethodNotAllowed));
        assert_eq!(admit(&c, Some("127.0.0.1".parse().unwrap()), "POST", None), Ok(()));
        assert_eq!(admit(&c, Some("127.0.0.1".parse().unwrap()), "DELETE", None), Ok(()));
    }

    #[test]
    fn token_must_match() {
        let c = control(r#"{"control":{"token":"s3cret","allowed_cidrs":["0.0.0.0/0"]}}"#);
        let ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(admit(&c, ip, "GET", Some("Bearer s3cret")), Ok(()));
        for bad in [None, Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("s3cret"), Some("Bearer ")] {
            assert_eq!(admit(&c, ip, "GET", bad), Err(Refusal::Unauthorized), "{bad:?}");
        }
    }
}
