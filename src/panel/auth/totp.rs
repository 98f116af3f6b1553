//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits), the
//! second factor authenticator apps speak.

use hmac::{Hmac, Mac};
use sha1::Sha1;

const STEP: u64 = 30;

/// A new secret: 20 random bytes, base32 without padding (what authenticator apps expect).
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut key);
    data_encoding::BASE32_NOPAD.encode(&key)
}

/// The `otpauth://` URI an authenticator app imports.
pub fn uri(secret: &str, account: &str) -> String {
    format!("otpauth://totp/lodge:{account}?secret={secret}&issuer=lodge&algorithm=SHA1&digits=6&period=30")
}

/// The code for `secret` at Unix time `unix`.
pub fn code_at(secret: &str, unix: u64) -> Option<String> {
    let key = data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).ok()?;
    let mut mac = Hmac::<Sha1>::new_from_slice(&key).ok()?;
    mac.update(&(unix / STEP).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    Some(format!("{:06}", bin % 1_000_000))
}

/// The time step `code` is valid for now, allowing one step of clock drift either way;
/// `None` when it is not valid. A code is accepted once: the caller records the step
/// ([`accept`]) and refuses any step not later than the last one used.
pub fn verify(secret: &str, code: &str) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = crate::store::now() as u64;
    [now.saturating_sub(STEP), now, now + STEP]
        .into_iter()
        .find(|&t| code_at(secret, t).is_some_and(|expected| super::secret::same(&expected, code)))
        .map(|t| (t / STEP) as i64)
}

/// Records that the code of `step` was used by `user_id`; `false` when this code (or a
/// later one) was used already. One statement, so two requests with the same code cannot
/// both pass.
pub async fn accept(
    tx: impl sqlx::Executor<'_, Database = sqlx::Sqlite>,
    user_id: i64,
    step: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE users SET totp_last_step = ?1
         WHERE id = ?2 AND (totp_last_step IS NULL OR totp_last_step < ?1)",
    )
    .bind(step)
    .bind(user_id)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Checks a code and uses it up: `true` once per valid code.
pub async fn verify_once(
    store: &crate::store::Store,
    user_id: i64,
    secret: &str,
    code: &str,
) -> sqlx::Result<bool> {
    match verify(secret, code) {
        Some(step) => accept(&store.write, user_id, step).await,
        None => Ok(false),
    }
}

/// Whether `secret` is a base32 secret lodge could have made.
pub fn is_secret(secret: &str) -> bool {
    secret.len() == 32
        && data_encoding::BASE32_NOPAD
            .decode(secret.as_bytes())
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vector() {
        // RFC 6238 appendix B, SHA1, secret "12345678901234567890", T = 59 -> 94287082 (8 digits).
        let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
        assert_eq!(code_at(&secret, 59).unwrap(), "287082");
        assert_eq!(code_at(&secret, 1111111109).unwrap(), "081804");
    }
}
