//! argon2id password hashes, computed off the async threads.

use anyhow::Context;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

/// Hashes running at once, at most: each takes 19 MiB and a core for tens of milliseconds,
/// and a burst of sign-ins must not take the machine's memory (512 at once would be 10 GiB).
/// The others wait their turn.
const HASHING_AT_ONCE: usize = 4;

async fn hashing_turn() -> tokio::sync::SemaphorePermit<'static> {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS
        .get_or_init(|| tokio::sync::Semaphore::new(HASHING_AT_ONCE))
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

/// Hashes `password` with argon2id (the crate's default parameters, OWASP's minimum:
/// 19 MiB, 2 passes) on a blocking thread.
pub async fn hash(password: String) -> anyhow::Result<String> {
    let _turn = hashing_turn().await;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await
    .context("password hashing task")?
}

/// Checks `password` against a stored hash on a blocking thread. A malformed hash is
/// simply a mismatch.
pub async fn verify(password: String, hash: String) -> bool {
    let _turn = hashing_turn().await;
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash no password matches, verified against when the account does not exist so that a
/// wrong user name costs as much time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"lodge-no-such-account", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}
