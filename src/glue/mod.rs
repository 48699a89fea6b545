//! The proxy-wasm glue: entry point, root context and its state (configuration, shared
//! state, delay timer), and the HTTP context, which carries out what `decide` says.

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
    // A panic kills the Wasm VM; say why through Envoy's log before it does.
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("fault-injector panicked: {info}"));
    }));
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| Box::new(root::Root::new(id)));
}}

/// Envoy's clock, in milliseconds since the epoch.
fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Logs through Envoy; a failed log call has nowhere else to go.
fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
