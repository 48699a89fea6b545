//! The control route's gatekeeping: which requests are control calls, and who may make them.

use crate::config::Control;
use crate::model::net::NoClient;
use subtle::ConstantTimeEq;
use std::net::{IpAddr, Ipv6Addr};

/// Why a control call is turned away before its query is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's address is not in `control.allowed_cidrs` (403).
    Forbidden,
    /// Envoy took the client's address from `X-Forwarded-For`, which any client can
    /// write: the listener lacks `use_remote_address` (403).
    Forwarded,
    /// A browser sent the call for a page of another site (403).
    CrossSite,
    /// The call's `Origin` is not the control route's own (403).
    ForeignOrigin,
    /// A browser's call names the route by a host name not known to be this one, as a
    /// DNS-rebinding page does (403).
    UnlistedHost,
    /// A token is required and was missing or wrong (401).
    Unauthorized,
    /// Only GET, POST and DELETE are served (405).
    MethodNotAllowed,
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Forbidden | Refusal::Forwarded | Refusal::CrossSite | Refusal::ForeignOrigin | Refusal::UnlistedHost => 403,
            Refusal::Unauthorized => 401,
            Refusal::MethodNotAllowed => 405,
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Forbidden => "the control route answers only allowed client addresses (control.allowed_cidrs)",
            Refusal::Forwarded => "the client address came from X-Forwarded-For, which any client can write, not from the connection: set use_remote_address: true (without xff_num_trusted_hops) on this listener's HttpConnectionManager; behind trusted proxies, set xff_num_trusted_hops in the plugin configuration instead",
            Refusal::CrossSite => "a browser sent this call from another site's page (Sec-Fetch-Site: cross-site or same-site); the control route answers only direct clients such as curl, and pages of its own origin",
            Refusal::ForeignOrigin => "the call's Origin is not the control route's own scheme://host; the control route answers only direct clients such as curl, and pages of its own origin",
            Refusal::UnlistedHost => "a browser's call must name the control route by an IP address, localhost, or a name in control.allowed_hosts (the Host header), so that a DNS-rebinding page cannot reach it",
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

/// What [`admit`] reads of a control call's request headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `authorization`.
    pub authorization: Option<&'a str>,
    /// `:scheme` (`http` when absent).
    pub scheme: Option<&'a str>,
    /// `:authority` (HTTP/1.1's `Host`).
    pub authority: Option<&'a str>,
    /// `origin`.
    pub origin: Option<&'a str>,
    /// `sec-fetch-site`.
    pub fetch_site: Option<&'a str>,
    /// Whether any `sec-fetch-*` header came: browsers add them, curl and scripts do not.
    pub fetch_marked: bool,
}

impl<'a> Caller<'a> {
    /// What [`admit`] reads of the request headers, as Envoy lists them (lower-case
    /// names, pseudo-headers included); the first of a repeated header counts.
    pub fn from_headers(method: &'a str, headers: &'a [(String, String)]) -> Caller<'a> {
        let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        Caller {
            method,
            authorization: find("authorization"),
            scheme: find(":scheme"),
            authority: find(":authority"),
            origin: find("origin"),
            fetch_site: find("sec-fetch-site"),
            fetch_marked: headers.iter().any(|(name, _)| name.starts_with("sec-fetch-")),
        }
    }
}

/// Decides whether a control call from `client` may proceed.
pub fn admit(control: &Control, client: Result<IpAddr, NoClient>, caller: &Caller) -> Result<(), Refusal> {
    match client {
        Err(NoClient::Forwarded) => return Err(Refusal::Forwarded),
        Ok(ip) if control.allowed.iter().any(|c| c.contains(ip)) => {}
        _ => return Err(Refusal::Forbidden),
    }
    from_no_other_page(control, caller)?;
    if let Some(token) = &control.token {
        let given = caller.authorization.and_then(bearer).unwrap_or("");
        // Compared without stopping at the first difference, so timing does not leak it.
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Err(Refusal::Unauthorized);
        }
    }
    if !ALLOWED_METHODS.contains(&caller.method) {
        return Err(Refusal::MethodNotAllowed);
    }
    Ok(())
}

/// The token of `Bearer <token>`: the scheme in any case (RFC 9110, 11.1), then spaces.
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
}

/// Refuses what a browser sends on a page's behalf unless the page is the control
/// route's own, reached by a name that DNS rebinding cannot take over. A caller with
/// neither `Origin` nor `Sec-Fetch-*` is not a browser page's (curl, scripts, other
/// services) and passes whatever its `Host`.
fn from_no_other_page(control: &Control, caller: &Caller) -> Result<(), Refusal> {
    if !caller.fetch_marked && caller.origin.is_none() {
        return Ok(());
    }
    // `none` is a navigation the user made (typed, bookmarked); `same-origin` the route's own page.
    if caller.fetch_site.is_some_and(|site| site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")) {
        return Err(Refusal::CrossSite);
    }
    let authority = caller.authority.unwrap_or("");
    if let Some(origin) = caller.origin {
        let own = origin_of(caller.scheme.unwrap_or("http"), authority);
        if own.is_none() || origin_of_header(origin) != own {
            return Err(Refusal::ForeignOrigin);
        }
    }
    let host = host_of(authority).to_ascii_lowercase();
    let known = is_ip_literal(&host) || host == "localhost" || control.allowed_hosts.contains(&host);
    if !known {
        return Err(Refusal::UnlistedHost);
    }
    Ok(())
}

/// `authority` without its port.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => authority,
    }
}

fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => host.parse::<IpAddr>().is_ok(),
    }
}

/// An origin as compared: scheme and host in lower case, and the port unless it is the
/// scheme's default. `None` when `authority` is empty or has a path or user part.
fn origin_of(scheme: &str, authority: &str) -> Option<(String, String, Option<String>)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = host_of(authority);
    let port = authority[host.len()..].strip_prefix(':');
    let default = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => "",
    };
    let port = port.filter(|p| *p != default).map(str::to_string);
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// An `Origin` header (`https://example.com:8443`) as [`origin_of`] gives it; `null` and
/// anything else is `None`.
fn origin_of_header(origin: &str) -> Option<(String, String, Option<String>)> {
    let (scheme, authority) = origin.split_once("://")?;
    origin_of(scheme, authority)
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

    fn ip(text: &str) -> Result<IpAddr, NoClient> {
        Ok(text.parse().unwrap())
    }

    fn get<'a>() -> Caller<'a> {
        Caller { method: "GET", ..Caller::default() }
    }

    #[test]
    fn loopback_only_by_default() {
        let c = control("{}");
        let with = |method| Caller { method, ..get() };
        assert_eq!(admit(&c, ip("127.0.0.5"), &get()), Ok(()));
        assert_eq!(admit(&c, ip("::1"), &get()), Ok(()));
        assert_eq!(admit(&c, ip("10.0.0.1"), &get()), Err(Refusal::Forbidden));
        assert_eq!(admit(&c, Err(NoClient::Missing), &get()), Err(Refusal::Forbidden));
        assert_eq!(admit(&c, ip("127.0.0.1"), &with("PUT")), Err(Refusal::MethodNotAllowed));
        assert_eq!(admit(&c, ip("127.0.0.1"), &with("POST")), Ok(()));
        assert_eq!(admit(&c, ip("127.0.0.1"), &with("DELETE")), Ok(()));
    }

    #[test]
    fn a_forwarded_address_is_refused_naming_use_remote_address() {
        let open = control(r#"{"control":{"allowed_cidrs":["0.0.0.0/0"]}}"#);
        assert_eq!(admit(&open, Err(NoClient::Forwarded), &get()), Err(Refusal::Forwarded));
        assert!(Refusal::Forwarded.message().contains("use_remote_address: true"));
        assert_eq!(Refusal::Forwarded.status(), 403);
    }

    #[test]
    fn token_must_match() {
        let c = control(r#"{"control":{"token":"s3cret","allowed_cidrs":["0.0.0.0/0"]}}"#);
        let with = |authorization| Caller { authorization, ..get() };
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"] {
            assert_eq!(admit(&c, ip("10.0.0.1"), &with(Some(good))), Ok(()), "{good}");
        }
        for bad in [None, Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("s3cret"), Some("Bearer "), Some("Bearers3cret"), Some("Basic s3cret"), Some("Bearer\ts3cret")] {
            assert_eq!(admit(&c, ip("10.0.0.1"), &with(bad)), Err(Refusal::Unauthorized), "{bad:?}");
        }
    }

    /// A call as a browser sends it for a page at `origin`, to `authority`.
    fn browser<'a>(site: &'a str, origin: Option<&'a str>, authority: &'a str) -> Caller<'a> {
        Caller { scheme: Some("http"), authority: Some(authority), origin, fetch_site: Some(site), fetch_marked: true, ..get() }
    }

    #[test]
    fn no_other_page_drives_the_route() {
        let c = control("{}");
        let local = ip("127.0.0.1");
        // The route's own page, and what a user types in the address bar.
        for ok in [
            browser("same-origin", None, "localhost:8282"),
            browser("same-origin", Some("http://localhost:8282"), "localhost:8282"),
            browser("same-origin", Some("http://LOCALHOST:8282"), "localhost:8282"),
            browser("none", None, "127.0.0.1:8282"),
            browser("same-origin", Some("http://[::1]:8282"), "[::1]:8282"),
            browser("same-origin", Some("http://127.0.0.1"), "127.0.0.1:80"),
            Caller { scheme: Some("http"), authority: Some("127.0.0.1:8282"), origin: Some("http://127.0.0.1:8282"), ..get() },
        ] {
            assert_eq!(admit(&c, local, &ok), Ok(()), "{ok:?}");
        }
        for (refused, why) in [
            (browser("cross-site", Some("https://evil.example"), "127.0.0.1:8282"), Refusal::CrossSite),
            (browser("cross-site", None, "127.0.0.1:8282"), Refusal::CrossSite),
            (browser("same-site", Some("http://localhost:3000"), "localhost:8282"), Refusal::CrossSite),
            (browser("Cross-Site", None, "127.0.0.1:8282"), Refusal::CrossSite),
            (browser("same-origin", Some("https://evil.example"), "127.0.0.1:8282"), Refusal::ForeignOrigin),
            (browser("same-origin", Some("http://localhost:8283"), "localhost:8282"), Refusal::ForeignOrigin),
            (browser("same-origin", Some("https://localhost:8282"), "localhost:8282"), Refusal::ForeignOrigin),
            (browser("same-origin", Some("null"), "localhost:8282"), Refusal::ForeignOrigin),
            (Caller { origin: Some("https://evil.example"), ..get() }, Refusal::ForeignOrigin),
            (Caller { origin: Some("http://x"), authority: Some("x/y"), ..get() }, Refusal::ForeignOrigin),
            // DNS rebinding: the page's own name now points at loopback.
            (browser("same-origin", Some("http://rebind.evil.example:8282"), "rebind.evil.example:8282"), Refusal::UnlistedHost),
            (browser("none", None, "rebind.evil.example:8282"), Refusal::UnlistedHost),
            (browser("same-origin", None, "localhost.evil.example"), Refusal::UnlistedHost),
            (Caller { fetch_marked: true, ..get() }, Refusal::UnlistedHost),
        ] {
            assert_eq!(admit(&c, local, &refused), Err(why), "{refused:?}");
        }
        // Callers that are not browsers keep working whatever their Host.
        let curl = Caller { scheme: Some("http"), authority: Some("injector.svc.cluster.local:8282"), ..get() };
        assert_eq!(admit(&c, local, &curl), Ok(()));
        // The address is checked first: a browser-marked call from elsewhere is Forbidden.
        assert_eq!(admit(&c, ip("10.0.0.1"), &browser("cross-site", None, "x")), Err(Refusal::Forbidden));
    }

    #[test]
    fn allowed_hosts_name_the_route_for_browsers() {
        let c = control(r#"{"control":{"allowed_hosts":["injector.example.internal"]}}"#);
        let local = ip("127.0.0.1");
        let page = browser("same-origin", Some("http://injector.example.internal:8282"), "Injector.Example.Internal:8282");
        assert_eq!(admit(&c, local, &page), Ok(()));
        assert_eq!(admit(&c, local, &browser("none", None, "other.example.internal")), Err(Refusal::UnlistedHost));
    }

    #[test]
    fn what_is_read_of_the_headers() {
        let headers: Vec<(String, String)> = [
            (":authority", "localhost:8282"), (":scheme", "http"), ("sec-fetch-mode", "cors"),
            ("origin", "http://localhost:8282"), ("authorization", "Bearer t"), ("origin", "https://second.example"),
        ].iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let caller = Caller::from_headers("POST", &headers);
        assert_eq!((caller.method, caller.authority, caller.scheme), ("POST", Some("localhost:8282"), Some("http")));
        assert_eq!((caller.origin, caller.authorization, caller.fetch_site), (Some("http://localhost:8282"), Some("Bearer t"), None));
        assert!(caller.fetch_marked);
        let curl = [(":authority".to_string(), "x".to_string()), ("user-agent".to_string(), "curl/8".to_string())];
        let caller = Caller::from_headers("GET", &curl);
        assert!(!caller.fetch_marked && caller.origin.is_none());
    }

    #[test]
    fn hosts_and_origins() {
        assert_eq!(host_of("[::1]:8282"), "[::1]");
        assert_eq!(host_of("localhost:8282"), "localhost");
        assert_eq!(host_of("localhost"), "localhost");
        assert_eq!(host_of("::1"), "::1");
        assert!(is_ip_literal("[::1]") && is_ip_literal("10.0.0.1") && !is_ip_literal("[10.0.0.1]") && !is_ip_literal("localhost"));
        assert_eq!(origin_of_header("https://x:443"), origin_of("https", "x"));
        assert_eq!(origin_of_header("http://x:8080"), Some(("http".into(), "x".into(), Some("8080".into()))));
        assert_eq!(origin_of_header("http://x/"), None);
        assert_eq!(origin_of_header("http://u@x"), None);
        assert_eq!(origin_of_header("null"), None);
    }
}
