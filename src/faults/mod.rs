//! The faults, one module each: what a fault's wire form is, what it checks, and what it
//! does to a request or to the upstream's answer.

pub mod body_change;
pub mod delay_shape;
pub mod grpc;
pub mod header_faults;
pub mod request_rewrite;
pub mod retries;
pub mod throttle;
pub mod truncate;
