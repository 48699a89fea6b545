//! The control route, `/injector`: who may call it, what a call asks (its grammar), the
//! query parameters it reads, and the page it shows a browser.

pub mod access;
pub mod destination;
pub mod page;
pub mod query;
pub mod route;
