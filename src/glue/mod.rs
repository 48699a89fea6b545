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
    proxy_wasm::set_root_context(|id| Box::new(root::Root::new(id)));
}}

/// Envoy's clock, in milliseconds since the epoch.
fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}
