//! lodge: a multi-tenant web hosting control panel.
//!
//! The parts: the panel (`panel`), where people and scripts describe tenants and their
//! sites and which stores that description (`store`); the agent (`agent`, root), which makes
//! it real on the machine and supervises everything; the proxy (`proxy`), which serves every
//! site and passes PHP to the tenants' pools over FastCGI (`fastcgi`). Every name is parsed
//! into a checked type (`domain`); what two processes share is in `contract`.

#![recursion_limit = "256"]

// Public: what the binary, the integration tests and the benchmarks use. Everything else is
// the crate's own, so the compiler sees what nothing uses.
pub mod agent;
pub(crate) mod certs;
pub mod cli;
pub(crate) mod config;
pub(crate) mod contract;
pub mod domain;
pub mod fastcgi;
pub(crate) mod nofollow;
pub mod panel;
pub(crate) mod proxy;
pub(crate) mod service;
pub mod store;
