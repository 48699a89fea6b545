//! The proxy-wasm glue: entry point, root context and its state (configuration, shared
//! state, delay timer), and the HTTP context, which carries out what `decide` says.

mod body;
mod control_route;
mod http;
mod notices;
mod reply;
mod root;
mod root_state;
mod shared;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // The SDK hands the `log` macros to Envoy's log, at this level and above.
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic kills the Wasm VM; say why through Envoy's log before it does. Set after the
    // log level, which installs the SDK's own hook in its place.
    std::panic::set_hook(Box::new(|info| log::error!("fault-injector panicked: {info}")));
    proxy_wasm::set_root_context(|id| Box::new(root::Root::new(id, |id, worker| Box::new(http::Request::new(id, worker)))));
}}

/// Envoy's clock, in milliseconds since the epoch.
fn now_ms() -> u64 {
    now_ns() / crate::delays::MS
}

/// Envoy's clock, in nanoseconds since the epoch: what the timer of held requests runs on.
fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

extern "C" {
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> proxy_wasm::types::Status;
}

/// Leaves `value` in the current request's filter state, where Envoy keeps it as
/// `wasm.fault_injector` for the access log's `%FILTER_STATE(wasm.fault_injector:PLAIN)%`.
/// Through the ABI: the SDK's `set_property` panics, killing the VM, when Envoy refuses.
fn set_filter_state(value: &[u8]) {
    const PATH: &[u8] = b"fault_injector";
    // SAFETY: both buffers are valid for their lengths for the call; the host only reads them.
    let _ = unsafe { proxy_set_property(PATH.as_ptr(), PATH.len(), value.as_ptr(), value.len()) };
}
