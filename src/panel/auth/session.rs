//! Signing in, and the dashboard's sessions.

use super::{password, secret, totp, Throttle};
use crate::store::rows::UserRow;
use crate::store::{now, Store};
use std::time::Duration;

/// How long a dashboard session lasts.
pub const SESSION_TTL: i64 = 12 * 3600;
pub const COOKIE: &str = "lodge_session";

#[derive(Debug)]
pub enum SignInError {
    /// Too many failures: wait this long.
    Throttled(Duration),
    /// Wrong user name, password or code; deliberately not saying which.
    Rejected,
    /// The password was right and the account has a second factor: a code is needed.
    CodeRequired,
    Internal(anyhow::Error),
}

/// Checks a user name, password and (when the account has one) TOTP code, counting
/// failures against the account and the client address.
pub async fn sign_in(
    store: &Store,
    throttle: &Throttle,
    username: &str,
    password_input: &str,
    code: Option<&str>,
    address: &str,
) -> Result<UserRow, SignInError> {
    let attempt = throttle
        .begin(username, address)
        .map_err(SignInError::Throttled)?;
    let user = find_user(store, username)
        .await
        .map_err(|e| SignInError::Internal(e.into()))?;
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| password::dummy_hash().to_owned());
    let password_ok = password::verify(password_input.to_owned(), hash).await;
    let user = match user {
        Some(user) if password_ok => user,
        _ => {
            attempt.failed();
            return Err(SignInError::Rejected);
        }
    };
    if let Some(secret) = &user.totp_secret {
        match code.filter(|c| !c.trim().is_empty()) {
            None => {
                attempt.take_back();
                return Err(SignInError::CodeRequired);
            }
            Some(code) => {
                let fresh = totp::verify_once(store, user.id, secret, code)
                    .await
                    .map_err(|e| SignInError::Internal(e.into()))?;
                if !fresh {
                    attempt.failed();
                    return Err(SignInError::Rejected);
                }
            }
        }
    }
    attempt.succeeded();
    Ok(user)
}

async fn find_user(store: &Store, username: &str) -> sqlx::Result<Option<UserRow>> {
    if username.is_empty() || username.len() > 64 {
        return Ok(None);
    }
    sqlx::query_as::<_, UserRow>(&format!("{} WHERE u.username = ?", UserRow::SELECT))
        .bind(username)
        .fetch_optional(&store.read)
        .await
}

/// A new session for `user_id`: returns the cookie value (only its digest is stored).
pub async fn create(store: &Store, user_id: i64) -> sqlx::Result<String> {
    let id = secret::random_hex(32);
    let t = now();
    sqlx::query("DELETE FROM sessions WHERE expires_at < ?")
        .bind(t)
        .execute(&store.write)
        .await?;
    sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(secret::digest(&id))
        .bind(user_id)
        .bind(secret::random_hex(24))
        .bind(t)
        .bind(t + SESSION_TTL)
        .execute(&store.write)
        .await?;
    Ok(id)
}

/// The signed-in user and the session's CSRF token, if the cookie names a live session.
pub async fn lookup(store: &Store, cookie: &str) -> sqlx::Result<Option<(UserRow, String)>> {
    if cookie.len() != 64 {
        return Ok(None);
    }
    let found: Option<(i64, String)> = sqlx::query_as(
        "SELECT user_id, csrf_token FROM sessions WHERE id_hash = ? AND expires_at > ?",
    )
    .bind(secret::digest(cookie))
    .bind(now())
    .fetch_optional(&store.read)
    .await?;
    let Some((user_id, csrf)) = found else {
        return Ok(None);
    };
    let user = sqlx::query_as::<_, UserRow>(&format!("{} WHERE u.id = ?", UserRow::SELECT))
        .bind(user_id)
        .fetch_optional(&store.read)
        .await?;
    Ok(user.map(|u| (u, csrf)))
}

pub async fn delete(store: &Store, cookie: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
        .bind(secret::digest(cookie))
        .execute(&store.write)
        .await
        .map(|_| ())
}
