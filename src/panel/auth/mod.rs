//! Credentials: password hashes, API tokens, sessions, TOTP and login throttling.

pub mod password;
pub mod secret;
pub mod session;
pub mod throttle;
pub mod totp;

pub use throttle::Throttle;
