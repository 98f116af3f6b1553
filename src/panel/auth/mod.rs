//! Credentials: password hashes, API tokens, sessions, TOTP and login throttling.

pub(crate) mod password;
pub(crate) mod secret;
pub(crate) mod session;
pub(crate) mod throttle;
pub mod totp;

pub use throttle::Throttle;
