//! Paths under a tenant's home: a vhost's document root and its front controller.

use super::{describe_char, has_forbidden_char, invalid, Invalid};
use serde::Serialize;
use std::fmt;

/// Top-level directories of a tenant's home that hold lodge's own files (logs, sessions,
/// temporary uploads): never served as a site.
pub(crate) const RESERVED_TOP: &[&str] =
    &["logs", "tmp", "sessions", "conf", "php", "run", "backups"];

const MAX_LEN: usize = 255;
const MAX_DEPTH: usize = 8;

/// A document root relative to the tenant's home, normalised: segments of
/// `[A-Za-z0-9._-]`, no `.` or `..` segment, no hidden segment, no absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DocRoot(String);

impl DocRoot {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let segments = parse_segments(raw)?;
        if RESERVED_TOP.contains(&segments[0]) {
            return invalid(format!(
                "'{}' holds lodge's own files and cannot be a document root",
                segments[0]
            ));
        }
        Ok(Self(segments.join("/")))
    }

    /// The default for a new vhost: `sites/<domain>/public`.
    pub fn default_for(domain: &super::DomainName) -> Self {
        Self(format!("sites/{}/public", domain.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The script that answers URLs no file matches (`/index.php` for WordPress or Laravel),
/// as a path inside the docroot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FrontController(String);

impl FrontController {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let Some(rest) = raw.strip_prefix('/') else {
            return invalid("must start with '/', like /index.php");
        };
        let segments = parse_segments(rest)?;
        if !segments[segments.len() - 1].ends_with(".php") {
            return invalid("must name a .php file");
        }
        Ok(Self(format!("/{}", segments.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn parse_segments(raw: &str) -> Result<Vec<&str>, Invalid> {
    if raw.is_empty() {
        return invalid("must not be empty");
    }
    if raw.len() > MAX_LEN {
        return invalid(format!("must be at most {MAX_LEN} characters"));
    }
    if let Some(c) = has_forbidden_char(raw) {
        return invalid(format!(
            "contains the forbidden character {}",
            describe_char(c)
        ));
    }
    if raw.starts_with('/') || raw.starts_with('~') {
        return invalid("must be relative to the tenant's home, not an absolute path");
    }
    let mut segments = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" => continue,
            ".." => return invalid("must not contain '..'"),
            "." => continue,
            s if s.starts_with('.') => {
                return invalid("must not contain hidden directories (starting with '.')")
            }
            // A leading '-' reads as an option to any tool that is handed the path.
            s if s.starts_with('-') => return invalid("a directory name must not start with '-'"),
            s => {
                if let Some(c) = s
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                {
                    return invalid(format!(
                        "contains {}, which is not allowed in a path",
                        describe_char(c)
                    ));
                }
                if s.len() > 64 {
                    return invalid("a directory name must be at most 64 characters");
                }
                segments.push(s);
            }
        }
    }
    if segments.is_empty() {
        return invalid("must name a directory under the tenant's home");
    }
    if segments.len() > MAX_DEPTH {
        return invalid(format!("must be at most {MAX_DEPTH} directories deep"));
    }
    Ok(segments)
}

impl fmt::Display for DocRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(
            DocRoot::parse("sites/./a//public/").unwrap().as_str(),
            "sites/a/public"
        );
        assert_eq!(
            DocRoot::parse("public_html").unwrap().as_str(),
            "public_html"
        );
        assert_eq!(
            FrontController::parse("/index.php").unwrap().as_str(),
            "/index.php"
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "/",
            "/etc",
            "../x",
            "a/../../b",
            "a/..",
            ".git",
            "a/.ssh",
            "%2e%2e/x",
            "a\\b",
            "a b",
            "logs",
            "tmp/x",
            "~root",
            "a\nb",
            "a;b",
            "a\0b",
            "./",
            "$(id)",
        ] {
            assert!(DocRoot::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["index.php", "/index.html", "/../x.php", "/a b.php"] {
            assert!(FrontController::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
