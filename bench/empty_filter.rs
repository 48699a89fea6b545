//! The floor for any proxy-wasm filter: an HTTP filter built with the same SDK, toolchain and
//! release profile as fault-injector that looks at nothing and lets every request through.
//! The benchmark compares fault-injector against it to see what the filter itself adds
//! beyond the fixed price of the Wasm hop.
//!
//! Built only for `wasm32-wasip1` (`cargo build --release --target wasm32-wasip1 --example
//! empty_filter`); on the host, where `cargo test` also compiles examples, it is empty.
#![cfg(target_arch = "wasm32")]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root));
}}

/// The root context: only creates the per-request contexts.
struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pass))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A request's context: every callback keeps its default, which continues.
struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}
