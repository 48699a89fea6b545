//! fault-injector: an HTTP fault-injection filter for Envoy, built as a proxy-wasm plugin.
//!
//! Everything that decides (parsing, policy, sampling, retry counting, delay scheduling)
//! lives in plain modules that never touch the proxy-wasm ABI and are unit-tested on the
//! host. The `glue` module, compiled only for Wasm, wires them to Envoy.
#![deny(missing_docs)]

pub mod body_change;
pub mod config;
pub mod control;
pub mod control_page;
pub mod delay_shape;
pub mod decide;
pub mod delays;
pub mod document;
pub mod duration;
pub mod grpc;
pub mod guard;
pub mod header_faults;
pub mod matching;
pub mod net;
pub mod notices;
pub mod observe;
pub mod outbound;
pub mod percentage;
pub mod policy;
pub mod query;
pub mod request_rewrite;
pub mod retries;
pub mod rules;
pub mod sampling;
pub mod share;
pub mod stats;
pub mod throttle;
pub mod truncate;
pub mod stored;
pub mod values;

// Not in test builds: the unit tests run compiled to Wasm too (test.sh), as a WASI program
// that is not a proxy-wasm plugin.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod glue;
