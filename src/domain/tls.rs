//! A vhost's TLS mode, its redirects and an uploaded certificate.

use super::text_enum::text_enum;
use super::{invalid, Invalid};

text_enum! {
    /// Which certificate a vhost serves over HTTPS.
    pub enum TlsMode {
        /// No HTTPS.
        None = "none",
        /// One the agent makes for the vhost's names.
        SelfSigned = "self-signed",
        /// One uploaded with its key.
        Custom = "custom",
    }
}

text_enum! {
    /// Whether a vhost sends visitors to its `www.` name or away from it.
    pub enum RedirectWww {
        None = "none",
        ToWww = "to-www",
        ToApex = "to-apex",
    }
}

const MAX_PEM: usize = 64 * 1024;

/// A PEM bundle as uploaded: well-formed blocks of the expected kinds, base64 bodies,
/// nothing else. The proxy parses the DER itself when it loads the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPem(String);

impl TlsPem {
    /// A certificate chain: one or more `CERTIFICATE` blocks.
    pub fn parse_chain(raw: &str) -> Result<Self, Invalid> {
        let labels = pem_blocks(raw)?;
        if labels.iter().any(|l| *l != "CERTIFICATE") {
            return invalid("must contain only CERTIFICATE blocks");
        }
        Ok(Self(normalise(raw)))
    }

    /// A private key: exactly one `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block.
    pub fn parse_key(raw: &str) -> Result<Self, Invalid> {
        let labels = pem_blocks(raw)?;
        match labels.as_slice() {
            ["PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"] => Ok(Self(normalise(raw))),
            _ => invalid("must contain exactly one private key block"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn normalise(raw: &str) -> String {
    let mut out: String = raw
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

fn pem_blocks(raw: &str) -> Result<Vec<&str>, Invalid> {
    if raw.trim().is_empty() {
        return invalid("must not be empty");
    }
    if raw.len() > MAX_PEM {
        return invalid("must be at most 64 KiB");
    }
    let mut labels = Vec::new();
    let mut open: Option<&str> = None;
    let mut body_lines = 0;
    for line in raw.lines().map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if open.is_some() {
                return invalid("has a BEGIN line inside another block");
            }
            open = Some(label);
            body_lines = 0;
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match open.take() {
                Some(l) if l == label && body_lines > 0 => labels.push(l),
                _ => return invalid("has an END line that does not close its block"),
            }
        } else if open.is_some() {
            if line.len() > 76
                || !line
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                return invalid("has a line that is not base64");
            }
            body_lines += 1;
        } else {
            return invalid("has text outside PEM blocks");
        }
    }
    if open.is_some() || labels.is_empty() {
        return invalid("is not a complete PEM block");
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
        assert!(TlsPem::parse_chain(cert).is_ok());
        assert!(TlsPem::parse_key(cert).is_err());
        assert!(TlsPem::parse_chain(
            "-----BEGIN CERTIFICATE-----\nab$(id)\n-----END CERTIFICATE-----"
        )
        .is_err());
        assert!(TlsPem::parse_chain("hello").is_err());
    }
}
