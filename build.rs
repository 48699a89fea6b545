//! Hashes the control page's inline script and style (src/control/page.html) for its
//! Content-Security-Policy, so the policy allows exactly the page's own code and the
//! page stays one static file: `CONTROL_PAGE_SCRIPT_SHA256` and `CONTROL_PAGE_STYLE_SHA256`
//! hold the base64 SHA-256 that CSP's `'sha256-...'` sources name.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::error::Error;

const PAGE: &str = "src/control/page.html";

/// The text between the page's one `<tag>` and its `</tag>`.
fn inline<'a>(page: &'a str, tag: &str) -> Result<&'a str, String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = page.find(&open).ok_or_else(|| format!("{PAGE}: no {open}"))? + open.len();
    let end = page[start..].find(&close).ok_or_else(|| format!("{PAGE}: no {close}"))? + start;
    if page[end..].contains(&open) {
        return Err(format!("{PAGE}: more than one {open}; the policy hashes one"));
    }
    Ok(&page[start..end])
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PAGE}");
    let page = std::fs::read_to_string(PAGE)?;
    for (tag, name) in [("script", "CONTROL_PAGE_SCRIPT_SHA256"), ("style", "CONTROL_PAGE_STYLE_SHA256")] {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(inline(&page, tag)?));
        println!("cargo:rustc-env={name}={hash}");
    }
    Ok(())
}
