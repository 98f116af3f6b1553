//! Vhost domains and aliases.

use super::{describe_char, has_forbidden_char, invalid, Invalid};
use serde::Serialize;
use std::fmt;

/// A fully qualified host name as the proxy will match it: lowercase ASCII, internationalised
/// labels in punycode (`xn--`), RFC 1123 labels, at least two labels, no trailing dot, at most
/// 253 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DomainName(String);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    Other,
}

fn script_of(c: char) -> Option<Script> {
    match c as u32 {
        0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F | 0x1E00..=0x1EFF => Some(Script::Latin),
        0x370..=0x3FF | 0x1F00..=0x1FFF => Some(Script::Greek),
        0x400..=0x52F => Some(Script::Cyrillic),
        _ if c.is_alphabetic() => Some(Script::Other),
        _ => None,
    }
}

impl DomainName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return invalid("must not be empty");
        }
        if raw.len() > 1024 {
            return invalid("must be at most 253 characters");
        }
        if let Some(c) = has_forbidden_char(raw) {
            return invalid(format!(
                "contains the forbidden character {}",
                describe_char(c)
            ));
        }
        // Ideographic full stops would be mapped to '.' by IDNA: a label separator nobody typed.
        if let Some(c) = raw.chars().find(|&c| c.is_whitespace() || c == '\u{3002}') {
            return invalid(format!(
                "contains the forbidden character {}",
                describe_char(c)
            ));
        }
        if raw.ends_with('.') {
            return invalid("must not end with a dot");
        }
        if raw.is_ascii() {
            // Plain ASCII needs no IDNA mapping: check it directly, for precise messages.
            let ascii = raw.to_ascii_lowercase();
            Self::check_ascii(&ascii)?;
            // Punycode labels must decode to what IDNA would have produced, and what they
            // decode to gets the same homograph check as a name typed in Unicode.
            if ascii.split('.').any(|l| l.starts_with("xn--")) {
                if idna::domain_to_ascii_strict(&ascii).ok().as_deref() != Some(ascii.as_str()) {
                    return invalid("has a punycode (xn--) label that is not valid IDNA");
                }
                let (unicode, result) = idna::domain_to_unicode(&ascii);
                if result.is_err() {
                    return invalid("has a punycode (xn--) label that is not valid IDNA");
                }
                if let Some(c) = has_forbidden_char(&unicode) {
                    return invalid(format!(
                        "decodes to the forbidden character {}",
                        describe_char(c)
                    ));
                }
                for label in unicode.split('.') {
                    refuse_mixed_scripts(label)?;
                }
            }
            return Ok(Self(ascii));
        }
        for label in raw.split('.') {
            refuse_mixed_scripts(label)?;
        }
        let ascii = match idna::domain_to_ascii_strict(raw) {
            Ok(a) => a,
            Err(_) => return invalid("is not a valid domain name (IDNA)"),
        };
        Self::check_ascii(&ascii)?;
        Ok(Self(ascii))
    }

    fn check_ascii(ascii: &str) -> Result<(), Invalid> {
        if ascii.len() > 253 {
            return invalid("must be at most 253 characters");
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return invalid("must have at least two labels, like example.com");
        }
        for label in &labels {
            if label.is_empty() {
                return invalid("must not contain an empty label");
            }
            if label.len() > 63 {
                return invalid("a label must be at most 63 characters");
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            {
                return invalid(format!(
                    "contains {}, which is not allowed in a domain",
                    describe_char(c)
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return invalid("a label must not start or end with '-'");
            }
        }
        let tld = labels[labels.len() - 1];
        if tld.chars().all(|c| c.is_ascii_digit()) {
            return invalid("must be a name, not an IP address");
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same name with `www.` added or removed, for www redirects.
    pub fn www_twin(&self) -> Option<DomainName> {
        match self.0.strip_prefix("www.") {
            Some(apex) if apex.contains('.') => Some(DomainName(apex.to_owned())),
            Some(_) => None,
            None => DomainName::parse(&format!("www.{}", self.0)).ok(),
        }
    }
}

/// Refuses a label that mixes Latin with Greek or Cyrillic letters (`аpple` with a Cyrillic
/// `а`): the classic homograph, and never a real business name.
fn refuse_mixed_scripts(label: &str) -> Result<(), Invalid> {
    let mut seen: Option<Script> = None;
    for c in label.chars() {
        let Some(script) = script_of(c) else { continue };
        match seen {
            None => seen = Some(script),
            Some(s) if s == script => {}
            Some(s) if s == Script::Other || script == Script::Other => {
                // CJK and Latin mix in real names (e.g. digits and kana); the risky mixes are
                // the look-alike alphabets below.
            }
            Some(_) => {
                return invalid("mixes letters of different alphabets in one label (homograph)")
            }
        }
    }
    Ok(())
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(
            DomainName::parse("Example.COM").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(
            DomainName::parse("bücher.de").unwrap().as_str(),
            "xn--bcher-kva.de"
        );
        assert_eq!(
            DomainName::parse("a-b.c.example.org").unwrap().as_str(),
            "a-b.c.example.org"
        );
    }

    #[test]
    fn rejects_hostile() {
        for bad in [
            "",
            "example.com.",
            "example",
            "exa mple.com",
            "example.com;id",
            "example.com\r\nx",
            "ex\0ample.com",
            "-example.com",
            "example-.com",
            "ex_ample.com",
            "1.2.3.4",
            "xn--zz.com",
            "xn--exmple-4nf.com",
            "exa\u{00ad}mple.org",
            "exаmple.com",
            "example\u{200b}.com",
            "ｅｘａｍｐｌｅ.com",
            "example。com",
            "../etc/passwd",
            "%2e%2e.com",
            "a..b.com",
            "$(id).com",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(130)),
        ] {
            assert!(DomainName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn www_twin() {
        let d = DomainName::parse("www.example.com").unwrap();
        assert_eq!(d.www_twin().unwrap().as_str(), "example.com");
        let d = DomainName::parse("example.com").unwrap();
        assert_eq!(d.www_twin().unwrap().as_str(), "www.example.com");
    }
}
