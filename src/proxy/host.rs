//! Host names as the proxy compares them, from a Host header, an HTTP/2 `:authority`, an SNI
//! name or a routes snapshot: one way to split off the port and one form to compare in, so
//! that routing, the SNI check and the certificate lookup always agree about a name.

use std::borrow::Cow;

/// `host[:port]` → `host`. Only a port that is all digits (possibly empty, as RFC 3986
/// allows) is removed, so `a:b` stays whole and names nothing. A bracketed IPv6 literal
/// keeps its brackets.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// A name without the trailing dot of its absolute form (`a.example.` is `a.example`).
fn strip_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// The form names are compared in: ASCII lowercase (DNS names are case-insensitive, and SNI
/// carries A-labels, so ASCII is all there is), without the trailing dot. Borrowed when the
/// name is in that form already, as nearly every Host header is.
pub fn normalize(name: &str) -> Cow<'_, str> {
    let name = strip_dot(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The name a Host header or `:authority` gives: port removed, normalized.
pub fn name_of(authority: &str) -> Cow<'_, str> {
    normalize(strip_port(authority))
}

/// Whether two names are the same name (case and a trailing dot ignored).
pub fn same_name(a: &str, b: &str) -> bool {
    strip_dot(a).eq_ignore_ascii_case(strip_dot(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_split_off_only_when_they_are_ports() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example:"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("a.example:x"), "a.example:x");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("[::1"), "[::1");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn names_compare_without_case_port_or_trailing_dot() {
        assert_eq!(name_of("WWW.Acme.Example.:8080"), "www.acme.example");
        assert!(matches!(
            name_of("a.example:80"),
            Cow::Borrowed("a.example")
        ));
        assert!(matches!(
            normalize("a.example."),
            Cow::Borrowed("a.example")
        ));
        assert_eq!(
            normalize("a.example.."),
            "a.example.",
            "one dot is the absolute form"
        );
        assert!(same_name("A.example.", "a.EXAMPLE"));
        assert!(!same_name("a.example", "a.example.evil"));
    }
}
