//! Certificates and keys as lodge checks and makes them, for every part: the panel checks an
//! uploaded pair ([`check_upload`]), the agent makes self-signed ones ([`self_signed`]), and
//! the proxy loads what it serves ([`certified_key_from_pem`]) through the same checks, so a
//! pair the panel accepts is one the proxy serves.

use std::io::BufReader;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

/// How long a self-signed certificate is valid. A year is long enough that nobody has to
/// think about renewal in self-signed mode, which is a stopgap until a real certificate is
/// uploaded anyway.
const SELF_SIGNED_VALIDITY: time::Duration = time::Duration::days(365);

/// How far back a self-signed certificate's validity starts. A client whose clock runs a
/// little behind ours would otherwise reject a freshly made certificate as "not yet valid".
const SELF_SIGNED_BACKDATE: time::Duration = time::Duration::minutes(5);

/// The crypto provider every config and key in this module uses: ring, the only one compiled
/// in. Made once; the provider is a table of static algorithm references, but there is no
/// reason to rebuild it for every key.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Makes an ECDSA P-256 self-signed certificate for `names` (DNS names; the first is also the
/// subject's common name), valid for a year from now. Returns `(certificate PEM, key PEM)`;
/// the key is PKCS#8.
///
/// P-256 because every client supports it and signing is cheap. The certificate is a plain
/// end-entity certificate (not a CA): it carries the serverAuth extended key usage and the
/// digitalSignature key usage, so clients treat it as exactly what it is, and a user who
/// chooses to trust it trusts it for these names only. rcgen derives the serial number from a
/// hash of the (fresh) public key, so two certificates never share issuer and serial, which
/// browsers refuse.
pub fn self_signed(names: &[String]) -> anyhow::Result<(String, String)> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose,
    };

    let Some(first) = names.first() else {
        anyhow::bail!("a certificate needs at least one name");
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // `new` turns each name into a SAN entry and rejects names that can't be one.
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - SELF_SIGNED_BACKDATE;
    params.not_after = now + SELF_SIGNED_VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Every TLS signature scheme a client may offer, used to check that a key can actually sign
/// a handshake (see [`certified_key_from_pem`]).
const ALL_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// Parses a PEM certificate chain (end-entity certificate first, as servers send it) and a
/// PEM private key, and checks that they belong together. This is the one place both
/// [`CertStore::load`] and [`validate_pair`] decide what a usable pair is, so an upload that
/// validates is one the proxy will load.
///
/// Checks, in order: the chain has at least one certificate and nothing unparsable; the key
/// file has a key (PKCS#8, PKCS#1 or SEC1) that ring supports; the key can produce a TLS
/// signature at all; and the key's public half is the one in the end-entity certificate
/// (`keys_match`, which also parses that certificate with webpki). rustls' own
/// `CertifiedKey::from_der` lets "can't tell" pass; here it is an error, since with ring
/// every key can tell, and an unchecked pair is exactly what this is meant to prevent.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(cert_pem))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain does not parse: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate found (expected PEM \"CERTIFICATE\" blocks)".to_string());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .map_err(|e| format!("private key does not parse: {e}"))?
        .ok_or_else(|| "no private key found (expected a PEM private key block)".to_string())?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key is not usable: {e}"))?;
    if signing_key.choose_scheme(ALL_SCHEMES).is_none() {
        return Err("private key cannot sign with any TLS signature scheme".to_string());
    }
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("the private key does not belong to the certificate".to_string())
        }
        Err(e) => Err(format!(
            "could not check the key against the certificate: {e}"
        )),
    }
}

/// One DER element at the start of `input`: `(tag, contents, rest)`. `None` if it is
/// truncated or uses an encoding DER certificates don't (multi-byte tags, indefinite or
/// absurdly long lengths).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes.iter().try_fold(0usize, |len, &b| {
            len.checked_mul(256)?.checked_add(usize::from(b))
        })?;
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The elements of a DER SEQUENCE's contents, in order; `None` if any is malformed.
fn der_elements(mut contents: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !contents.is_empty() {
        let (tag, value, rest) = der_element(contents)?;
        out.push((tag, value));
        contents = rest;
    }
    Some(out)
}

/// The dNSName entries of an X.509 certificate's subjectAltName extension (RFC 5280 4.2.1.6),
/// lowercased; empty if it has none. `None` if the DER doesn't have the expected shape.
///
/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }, and
/// tbsCertificate ::= SEQUENCE { ..., extensions [3] EXPLICIT SEQUENCE OF Extension }, where
/// Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET
/// STRING } and, for subjectAltName (2.5.29.17), extnValue holds a SEQUENCE OF GeneralName in
/// which dNSName is `[2] IMPLICIT IA5String`.
fn san_dns_names(cert_der: &[u8]) -> Option<Vec<String>> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const EXTENSIONS: u8 = 0xa3; // [3], constructed
    const DNS_NAME: u8 = 0x82; // [2], primitive
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17

    let (SEQUENCE, cert, _) = der_element(cert_der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(cert)? else {
        return None;
    };
    // Version 1 certificates have no extensions, so no names.
    let Some((_, extensions)) = der_elements(tbs)?
        .into_iter()
        .find(|&(tag, _)| tag == EXTENSIONS)
    else {
        return Some(Vec::new());
    };
    let (SEQUENCE, extensions, _) = der_element(extensions)? else {
        return None;
    };
    for (tag, extension) in der_elements(extensions)? {
        if tag != SEQUENCE {
            return None;
        }
        let mut fields = der_elements(extension)?.into_iter();
        let (OID, oid) = fields.next()? else {
            return None;
        };
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        let mut field = fields.next()?;
        if field.0 == BOOLEAN {
            field = fields.next()?;
        }
        let (OCTET_STRING, value) = field else {
            return None;
        };
        let (SEQUENCE, general_names, _) = der_element(value)? else {
            return None;
        };
        let names = der_elements(general_names)?
            .into_iter()
            .filter(|&(tag, _)| tag == DNS_NAME)
            .map(|(_, name)| {
                // IA5String is ASCII; anything else is not a name any client would match.
                std::str::from_utf8(name)
                    .ok()
                    .filter(|name| name.is_ascii())
                    .map(str::to_ascii_lowercase)
            })
            .collect::<Option<Vec<_>>>()?;
        return Some(names);
    }
    Some(Vec::new())
}

/// An uploaded certificate chain and key for a vhost, checked as the proxy will load them:
/// they parse, belong together, and the certificate covers every one of the vhost's `names`
/// (its domain and aliases; a wildcard covers one label). The error names the field to
/// blame: `tls_key` when the key is wrong or not the certificate's, `tls_certificate` when the
/// certificate does not parse or does not cover a name.
pub fn check_upload(
    cert_pem: &str,
    key_pem: &str,
    names: &[&str],
) -> Result<(), crate::domain::FieldError> {
    use crate::domain::FieldError;
    let certified =
        certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| {
            let field = if e.contains("private key") || e.contains("key does not belong") {
                "tls_key"
            } else {
                "tls_certificate"
            };
            FieldError::new(field, e)
        })?;
    let covered = certified
        .end_entity_cert()
        .ok()
        .and_then(|c| san_dns_names(c.as_ref()))
        .ok_or_else(|| {
            FieldError::new(
                "tls_certificate",
                "its subjectAltName extension cannot be read",
            )
        })?;
    for name in names {
        if !covered.iter().any(|c| covers(c, name)) {
            return Err(FieldError::new(
                "tls_certificate",
                format!(
                    "does not cover {name} (it names {})",
                    if covered.is_empty() {
                        "no host".to_owned()
                    } else {
                        covered.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a certificate's DNS name (`a.example`, `*.example`) covers a host name: exactly,
/// or a wildcard standing for the first label alone (RFC 6125).
fn covers(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut BufReader::new(pem.as_bytes()))
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn pairs_must_belong_together_with_the_end_entity_certificate_first() {
        let (cert_a, key_a) = self_signed(&names(&["A.example", "www.a.example"])).unwrap();
        let (cert_b, key_b) = self_signed(&names(&["b.example"])).unwrap();
        assert!(check_upload(&cert_a, &key_a, &["a.example", "www.a.example"]).is_ok());
        assert!(check_upload(&cert_b, &key_b, &["b.example"]).is_ok());
        let err = check_upload(&cert_a, &key_b, &["a.example"]).unwrap_err();
        assert!(err.message.contains("does not belong"), "{err:?}");
        assert!(check_upload("", &key_a, &[])
            .unwrap_err()
            .message
            .contains("no certificate"));
        assert!(check_upload(&cert_a, "", &[])
            .unwrap_err()
            .message
            .contains("no private key"));
        assert!(check_upload(&key_a, &key_a, &[]).is_err());
        // A chain: the end-entity certificate first, then (here, an unrelated) issuer.
        assert!(check_upload(&format!("{cert_a}{cert_b}"), &key_a, &["a.example"]).is_ok());
        // Order matters: the key must match the first certificate.
        assert!(check_upload(&format!("{cert_b}{cert_a}"), &key_a, &["a.example"]).is_err());
    }

    #[test]
    fn san_parser_handles_wildcards_and_never_panics() {
        let (cert, _) = self_signed(&names(&["*.w.example", "w.example", "127.0.0.1"])).unwrap();
        let der = der_of(&cert);
        // The IP address SAN is not a DNS name.
        assert_eq!(
            san_dns_names(der.as_ref()).unwrap(),
            names(&["*.w.example", "w.example"])
        );
        // Every truncation of a real certificate is rejected or parsed, never a panic.
        for len in 0..der.len() {
            let _ = san_dns_names(&der[..len]);
        }
        assert!(san_dns_names(&[]).is_none());
        assert!(san_dns_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(san_dns_names(&[0x30, 0x80, 0x00, 0x00]).is_none());
    }

    #[test]
    fn self_signed_needs_a_valid_name() {
        assert!(self_signed(&[]).is_err());
        assert!(self_signed(&names(&["bad\u{e9}.example"])).is_err());
    }

    #[test]
    fn an_upload_must_match_its_key_and_cover_the_vhosts_names() {
        let (cert, key) = self_signed(&names(&["shop.example", "*.cdn.example"])).unwrap();
        let (_, other_key) = self_signed(&names(&["shop.example"])).unwrap();
        assert!(check_upload(&cert, &key, &["shop.example", "img.cdn.example"]).is_ok());
        let e = check_upload(&cert, &other_key, &["shop.example"]).unwrap_err();
        assert_eq!(e.field, "tls_key", "{e:?}");
        let e = check_upload(&cert, &key, &["shop.example.self"]).unwrap_err();
        assert_eq!(e.field, "tls_certificate", "{e:?}");
        assert!(e.message.contains("shop.example.self"), "{e:?}");
        // A wildcard covers one label, not two, nor the bare parent.
        assert!(check_upload(&cert, &key, &["a.b.cdn.example"]).is_err());
        assert!(check_upload(&cert, &key, &["cdn.example"]).is_err());
        assert_eq!(
            check_upload("junk", &key, &["x.example"])
                .unwrap_err()
                .field,
            "tls_certificate"
        );
        assert_eq!(
            check_upload(&cert, "junk", &["x.example"])
                .unwrap_err()
                .field,
            "tls_key"
        );
    }
}
