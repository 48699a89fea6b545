//! The control route's page (docs/control-page.md): `GET /injector` from a browser answers
//! one static HTML page (`src/control/page.html`) that shows the state and changes it with
//! the calls curl makes; every other caller keeps getting the JSON it always got. Which of
//! the two a call gets is decided here, from its `Accept`.

use crate::control::access::Refusal;
use std::borrow::Cow;

/// The page, as written.
const PAGE: &str = include_str!("page.html");

/// Where the page says whether the listener takes POSTed documents, which its JSON does
/// not tell: the page shows its document text area only where it does.
const POST_DOCUMENTS_OFF: &str = "data-post-documents=\"false\"";
const POST_DOCUMENTS_ON: &str = "data-post-documents=\"true\"";

/// The page's Content-Security-Policy: its own inline script and style only (named by
/// their SHA-256, which build.rs computes from the page), calls to its own origin only,
/// and no frame may hold it.
pub const CSP: &str = concat!(
    "default-src 'none'; script-src 'sha256-",
    env!("CONTROL_PAGE_SCRIPT_SHA256"),
    "'; style-src 'sha256-",
    env!("CONTROL_PAGE_STYLE_SHA256"),
    "'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
);

/// The headers the page is answered with. It is never stored: the same URL answers JSON
/// to other callers, and the page differs by listener.
pub const HEADERS: [(&str, &str); 6] = [
    ("content-type", "text/html; charset=utf-8"),
    ("content-security-policy", CSP),
    ("cache-control", "no-store"),
    ("vary", "accept"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// Whether a control call is answered with the page: a `GET` without a query whose
/// `Accept` prefers HTML to JSON. Calls with a query always get JSON, as do curl's
/// `*/*`, no `Accept`, and `application/json`.
pub fn wanted(method: &str, query: &str, accept: Option<&str>) -> bool {
    method == "GET" && query.is_empty() && prefers_html(accept)
}

/// Whether `accept` ranks `text/html` above `application/json` (RFC 9110, 12.5.1): each
/// takes the quality of the most specific range that matches it, 0 where none does. A
/// tie, `*/*` among them, goes to JSON, the route's answer since before the page.
pub fn prefers_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        let html = quality(accept, "text", "html");
        html > 0 && html > quality(accept, "application", "json")
    })
}

/// The quality `accept` gives `kind/sub`, in thousandths. An element whose `q` is not a
/// qvalue is left out.
fn quality(accept: &str, kind: &str, sub: &str) -> u16 {
    let mut best: Option<(u8, u16)> = None;
    for element in accept.split(',') {
        let mut parts = element.split(';');
        let range = parts.next().unwrap_or("").trim();
        let Some((k, s)) = range.split_once('/') else { continue };
        let specificity = match (k.trim(), s.trim()) {
            ("*", "*") => 1,
            (k, "*") if k.eq_ignore_ascii_case(kind) => 2,
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(sub) => 3,
            _ => continue,
        };
        let q = parts.find_map(|p| p.split_once('=').filter(|(name, _)| name.trim().eq_ignore_ascii_case("q")));
        let Some(q) = q.map_or(Some(1000), |(_, value)| thousandths(value.trim())) else { continue };
        if best.is_none_or(|(at, _)| specificity > at) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0, |(_, q)| q)
}

/// A qvalue (`0`, `0.5`, `1.000`: RFC 9110, 12.4.2) in thousandths. Read by hand: Rust's
/// float parsing would add 17 KB to the module for these few forms.
fn thousandths(q: &str) -> Option<u16> {
    let (whole, fraction) = q.split_once('.').unwrap_or((q, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let fraction = fraction.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, |n, digit| n * 10 + u16::from(digit - b'0'));
    Some(whole + fraction).filter(|&q| q <= 1000)
}

/// The page for a listener, with its document text area where `control.post_documents`
/// is on.
pub fn page(post_documents: bool) -> Cow<'static, str> {
    if post_documents {
        Cow::Owned(PAGE.replacen(POST_DOCUMENTS_OFF, POST_DOCUMENTS_ON, 1))
    } else {
        Cow::Borrowed(PAGE)
    }
}

/// Who may load the page, from the control route's decision on the call made without a
/// token (`admitted`): whoever the route admits, with or without `control.token`. The
/// page holds no state, and a browser cannot send a bearer token when it opens a URL: the
/// page's own calls carry it, from its token field.
pub fn admit(admitted: Result<(), Refusal>) -> Result<(), Refusal> {
    match admitted {
        Err(Refusal::Unauthorized) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control::access as control;
    use crate::model::net::NoClient;

    const CHROMIUM: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
    const FIREFOX: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[test]
    fn browsers_get_the_page() {
        for accept in [CHROMIUM, FIREFOX, "text/html", "TEXT/HTML", "text/*", " text/html ; q=0.9 , application/json;q=0.5"] {
            assert!(prefers_html(Some(accept)), "{accept}");
        }
    }

    #[test]
    fn curl_scripts_and_ties_get_json() {
        for accept in ["*/*", "", "application/json", "application/*", "text/plain", "application/json, text/html", "text/html;q=0.5, application/json", "text/html;q=0", "text/html;q=0, */*", "*/*;q=0.9, application/json;q=0.1, text/html;q=0.1"] {
            assert!(!prefers_html(Some(accept)), "{accept:?}");
        }
        assert!(!prefers_html(None));
    }

    #[test]
    fn the_most_specific_range_sets_the_quality() {
        assert_eq!(quality("text/*;q=0.3, text/html;q=0.7, */*;q=0.5", "text", "html"), 700);
        assert_eq!(quality("text/*;q=0.3, */*;q=0.5", "text", "html"), 300);
        assert_eq!(quality("*/*;q=0.5", "application", "json"), 500);
        assert_eq!(quality("image/png", "text", "html"), 0);
    }

    #[test]
    fn qvalues_are_read_as_thousandths() {
        for (q, want) in [("0", 0), ("1", 1000), ("0.5", 500), ("0.05", 50), ("0.123", 123), ("1.0", 1000), ("1.000", 1000), ("0.", 0)] {
            assert_eq!(thousandths(q), Some(want), "{q}");
        }
        for bad in ["", "1.001", "2", "0.1234", "-1", "abc", ".5", "0.5a", "+1", "0x1", "1e0"] {
            assert_eq!(thousandths(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_bad_quality_leaves_its_range_out() {
        assert!(!prefers_html(Some("text/html;q=abc")));
        assert!(!prefers_html(Some("text/html;q=2")));
        assert!(!prefers_html(Some("text/html;q=-1, application/json")));
        assert!(prefers_html(Some("text/html;q=nope, text/*;q=0.9, */*;q=0.1")));
        assert!(!prefers_html(Some("texthtml, ,;,")));
    }

    #[test]
    fn only_a_get_without_a_query_gets_the_page() {
        assert!(wanted("GET", "", Some(CHROMIUM)));
        assert!(!wanted("GET", "status=503", Some(CHROMIUM)));
        assert!(!wanted("GET", "", Some("*/*")));
        assert!(!wanted("POST", "", Some(CHROMIUM)));
        assert!(!wanted("DELETE", "", Some(CHROMIUM)));
    }

    #[test]
    fn the_document_area_is_shown_only_where_documents_are_posted() {
        assert_eq!(PAGE.matches(POST_DOCUMENTS_OFF).count(), 1);
        assert!(!PAGE.contains(POST_DOCUMENTS_ON));
        assert_eq!(page(false), PAGE);
        let on = page(true);
        assert_eq!(on.matches(POST_DOCUMENTS_ON).count(), 1);
        assert!(!on.contains(POST_DOCUMENTS_OFF));
    }

    #[test]
    fn the_page_loads_nothing_and_runs_only_what_the_policy_hashes() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script, hashed by build.rs");
        assert_eq!(PAGE.matches("<style").count(), 1, "one inline style, hashed by build.rs");
        for loads in ["src=", "http:", "https:", "@import", "url(", " style=", "innerHTML", "eval("] {
            assert!(!PAGE.contains(loads), "{loads}");
        }
        let handlers = regex_lite::Regex::new(r"\son[a-z]+\s*=").unwrap();
        assert!(!handlers.is_match(PAGE), "an inline event handler would need 'unsafe-inline'");
        let hrefs: Vec<_> = PAGE.match_indices("href=").map(|(at, _)| &PAGE[at..at + 13]).collect();
        assert_eq!(hrefs, ["href=\"data:,\""], "the empty icon only, so no browser asks for /favicon.ico");
        assert!(CSP.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(!CSP.contains("unsafe") && !CSP.contains('*'));
        assert!(HEADERS.contains(&("content-security-policy", CSP)));
    }

    #[test]
    fn the_page_needs_an_allowed_client_but_not_the_token() {
        let c = Config::parse(br#"{"control":{"token":"s3cret","allowed_cidrs":["10.0.0.0/8"]}}"#).unwrap().control;
        let get = control::Caller { method: "GET", ..control::Caller::default() };
        let page = |client: Result<&str, NoClient>| admit(control::admit(&c, client.map(|ip| ip.parse().unwrap()), &get));
        assert_eq!(page(Ok("10.1.2.3")), Ok(()));
        assert_eq!(page(Ok("192.168.1.1")), Err(Refusal::Forbidden));
        assert_eq!(page(Err(NoClient::Missing)), Err(Refusal::Forbidden));
        let open = Config::parse(b"{}").unwrap().control;
        assert_eq!(admit(control::admit(&open, Ok("127.0.0.1".parse().unwrap()), &get)), Ok(()));
    }
}
