//! lodge: a multi-tenant web hosting control panel.
//!
//! The panel (`http`) is where people and scripts describe tenants and their sites; the
//! control plane (`control`) checks and stores that description (`store`), with every name
//! parsed into a checked type (`domain`) and every action decided by one policy (`policy`).

#![recursion_limit = "256"]

pub mod agent;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod domain;
pub mod fastcgi;
pub mod http;
pub mod policy;
pub mod proxy;
pub mod store;
