//! Integration tests against the real `lodge` binary: each test starts its own `lodge serve`
//! on a free port with a fresh data directory (see `harness`).

mod harness;

// The agent, as root: real users, real php-fpm.
mod agent;
// The proxy alone, as any user, with a php-fpm of its own.
mod proxy;

// The proxy alone, on a routes snapshot written by the test.
mod proxy_bodies;

// The REST API.
mod access_log;
mod api_audit;
mod api_auth;
mod api_conflicts;
// The API against its OpenAPI document, by a property-based fuzzer.
mod api_contract;
mod api_roles;
mod api_validation;
mod security;

// The dashboard (forms with CSRF, and a headless browser where one is installed).
mod browser;
mod cli;
mod dashboard;
mod web_browser;
mod web_forms;
