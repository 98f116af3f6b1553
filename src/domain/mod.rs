//! Checked types for every name that reaches the system.
//!
//! Each type has one `parse` that accepts exactly what lodge is willing to hand to the
//! machine (a Linux user name, a vhost domain, a path under a tenant's home, a PHP setting)
//! and rejects everything else with a message that names what was wrong. Nothing downstream
//! re-checks a raw string: it takes one of these types.

mod docroot;
mod domain_name;
mod names;
mod php;
pub mod plan;
mod state;
pub(crate) mod text_enum;
mod tls;

pub use docroot::{DocRoot, FrontController};
pub use domain_name::DomainName;
pub use names::{Password, PlanName, Role, TenantName, Username, VhostId};
pub use php::{
    PhpBounds, PhpFunction, PhpSettings, PhpValue, PmMode, PoolSetting, DEFAULT_DISABLE_FUNCTIONS,
};
pub use plan::{PlanChanges, PlanLimits, PlanPhpChanges};
pub use state::{AppliedState, TenantState};
pub use tls::{RedirectWww, TlsMode, TlsPem};
// The API's document states these lists in its patterns.
pub(crate) use docroot::RESERVED_TOP as RESERVED_DOCROOTS;
pub(crate) use names::RESERVED as RESERVED_TENANT_NAMES;

use serde::Serialize;

/// One rejected field: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The problem a parser finds, before it knows which field it was parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl Invalid {
    pub fn at(self, field: &str) -> FieldError {
        FieldError::new(field, self.0)
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

pub(crate) fn invalid<T>(message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(message.into()))
}

/// Collects field errors so a form or a JSON body reports every bad field at once.
#[derive(Debug, Default)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value if it parsed, records the error under `field` otherwise.
    pub fn take<T>(&mut self, field: &str, parsed: Result<T, Invalid>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(e) => {
                self.errors.push(e.at(field));
                None
            }
        }
    }

    pub fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    pub fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.errors.extend(errors);
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(())` when nothing was rejected.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// Characters no name, path or setting may ever carry: controls (CR, LF, NUL, ...),
/// bidirectional overrides, zero-width characters and full-width look-alikes of ASCII.
pub(crate) fn has_forbidden_char(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        c.is_control()
            || matches!(c as u32,
                // Invisible or ignorable characters IDNA would silently drop or that hide
                // what a name really is: soft hyphen, combining grapheme joiner, Hangul
                // fillers, Mongolian vowel separator, zero-width and bidi controls, line and
                // paragraph separators, variation selectors, musical formatting, tags.
                0x00AD | 0x034F | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
                | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0x3164
                | 0xFE00..=0xFE0F | 0xFEFF | 0xFF00..=0xFFEF | 0xFFF0..=0xFFFB
                | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
    })
}

pub(crate) fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() || c == ' ' {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// A client-supplied key made safe to echo back inside a field name: printable ASCII only,
/// at most 64 characters.
pub(crate) fn names_for_field(raw: &str) -> String {
    raw.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
