//! fault-injector: an HTTP fault-injection filter for Envoy, built as a proxy-wasm plugin.
//!
//! Everything that decides (parsing, policy, sampling, retry counting, delay scheduling)
//! lives in plain modules that never touch the proxy-wasm ABI and are unit-tested on the
//! host. The `glue` module, compiled only for Wasm, wires them to Envoy.
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod decide;
pub mod delays;
pub mod exchange;
pub mod faults;
pub mod guard;
pub mod model;
pub mod notices;
pub mod observe;
pub mod respond;
pub mod stats;

// Not in test builds: the unit tests run compiled to Wasm too (test.sh), as a WASI program
// that is not a proxy-wasm plugin.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod glue;
