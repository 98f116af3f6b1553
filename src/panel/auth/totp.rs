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

/// Whether `code` is valid now, allowing one step of clock drift either way.
pub fn verify(secret: &str, code: &str) -> bool {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let now = crate::store::now() as u64;
    [now.saturating_sub(STEP), now, now + STEP]
        .iter()
        .filter_map(|&t| code_at(secret, t))
        .any(|expected| super::secret::same(&expected, code))
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
