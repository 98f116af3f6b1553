//! Random secrets and their stored digests.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// `bytes` random bytes from the OS generator, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    data_encoding::HEXLOWER.encode(&buf)
}

/// A new API token: `lodge_` and 40 hex characters (160 random bits).
pub fn new_api_token() -> String {
    format!("lodge_{}", random_hex(20))
}

/// The digest stored in place of a token or session id: high-entropy secrets need no slow
/// hash, and a leaked store does not reveal usable credentials.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares two secrets in constant time.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
