//! The patterns the document states for names, domains, paths, PEM text and PHP values. Each
//! mirrors one parser of `crate::domain`, which stays the judge: the character tables are
//! checked against it here, and the fuzzer test (`tests/it/api_contract.rs`) sends what the
//! patterns allow and what they refuse to the real panel.

use crate::domain::{RESERVED_DOCROOTS, RESERVED_TENANT_NAMES};

/// Code points `domain::has_forbidden_char` refuses in names, paths and settings.
const FORBIDDEN: &[(u32, u32)] = &[
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x34F, 0x34F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFF00, 0xFFEF),
    (0xFFF0, 0xFFFB),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

/// `char::is_control`: what passwords and search texts may not contain.
const CONTROL: &[(u32, u32)] = &[(0x00, 0x1F), (0x7F, 0x9F)];

/// `char::is_whitespace`: what `str::trim` removes.
const WHITESPACE: &[(u32, u32)] = &[
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
];

/// A character class of these ranges (`[^...]` when `negate`), written with the characters
/// themselves: `\u` escapes cannot name code points above U+FFFF in every regex dialect.
fn class(ranges: &[&[(u32, u32)]], negate: bool) -> String {
    fn push(out: &mut String, c: u32) {
        let c = char::from_u32(c).expect("the tables hold scalar values");
        if matches!(c, '\\' | ']' | '[' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    let mut out = String::from(if negate { "[^" } else { "[" });
    for table in ranges {
        for &(first, last) in *table {
            push(&mut out, first);
            if last > first {
                out.push('-');
                push(&mut out, last);
            }
        }
    }
    out.push(']');
    out
}

/// A password: no control characters (the length is `minLength`/`maxLength`).
pub fn password() -> String {
    format!("^{}*$", class(&[CONTROL], true))
}

/// An access-log search text: no control characters.
pub fn log_search() -> String {
    password()
}

/// A token's name: once trimmed, not empty and free of forbidden characters.
pub fn token_name() -> String {
    let space = class(&[WHITESPACE], false);
    let visible = class(&[FORBIDDEN, WHITESPACE], true);
    let allowed = class(&[FORBIDDEN], true);
    format!("^{space}*{visible}(?:{allowed}*{visible})?{space}*$")
}

/// The tenant search (`?q=`): once trimmed, up to 64 letters, digits, dots and hyphens.
pub fn tenant_search() -> String {
    let space = class(&[WHITESPACE], false);
    format!("^{space}*[A-Za-z0-9.-]{{0,64}}{space}*$")
}

/// `TenantName::parse`, less the reserved words (see `reserved_tenant_names`).
pub const TENANT_NAME: &str = "^[a-z][a-z0-9]{1,30}$";
/// `Username::parse`.
pub const USERNAME: &str = "^[a-z][a-z0-9_-]{1,31}$";
/// `PlanName::parse`.
pub const PLAN_NAME: &str = "^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$";
/// A PHP function name in a plan's `disable_functions`.
pub const PHP_FUNCTION: &str = "^[a-z_][a-z0-9_]{0,63}$";
/// `date.timezone`: an `Area/City` name (whether this machine knows it is a 409).
pub const TIMEZONE: &str = "^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z][A-Za-z0-9_+-]*){0,2}$";

/// The words `TenantName::parse` refuses although they fit the pattern.
pub fn reserved_tenant_names() -> Vec<&'static str> {
    RESERVED_TENANT_NAMES.to_vec()
}

const LABEL: &str = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";

/// A domain in ASCII as `DomainName::parse` takes it (case is ignored); its last label may
/// not be all digits (`DOMAIN_NUMERIC_TLD`).
pub fn domain() -> String {
    format!("^(?:{LABEL}\\.)+{LABEL}$")
}

/// A domain whose last label is a number, like an IP address.
pub const DOMAIN_NUMERIC_TLD: &str = "\\.[0-9]+$";

/// One directory or file name in a path under a tenant's home: not hidden, no leading '-'.
const SEGMENT: &str = "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}";
/// What may stand between two names: more slashes and `.` segments, which are dropped.
const SEPARATOR: &str = "/(?:\\.?/)*";
/// What may lead the path: `./`, and more slashes and `.` segments after it.
const LEAD: &str = "(?:\\./(?:\\.?/)*)?";
/// What may end the path: slashes and `.` segments.
const TRAIL: &str = "(?:/\\.?)*";

/// `DocRoot::parse`: one to eight names; the first may not be one of lodge's own directories
/// (`reserved_docroot`).
pub fn docroot() -> String {
    format!("^{LEAD}{SEGMENT}(?:{SEPARATOR}{SEGMENT}){{0,7}}{TRAIL}$")
}

/// A document root that starts in one of lodge's own directories.
pub fn reserved_docroot() -> String {
    format!("^{LEAD}(?:{})(?:/|$)", RESERVED_DOCROOTS.join("|"))
}

/// `FrontController::parse`: a `.php` file under the document root, or empty to remove it.
pub fn front_controller() -> String {
    let script = "[A-Za-z0-9_][A-Za-z0-9._-]{0,59}\\.php";
    format!("^(?:/{LEAD}(?:{SEGMENT}{SEPARATOR}){{0,7}}{script}{TRAIL})?$")
}

/// PEM blocks with these labels, as `TlsPem` reads them: lines end in `\n` (a `\r` before it
/// is dropped), blank lines are skipped, bodies are base64 lines of at most 76 characters.
fn pem(labels: &[&str], one_block: bool) -> String {
    let blank = "(?:\\r*\\n)*";
    let block = |label: &str| {
        format!(
            "-----BEGIN {label}-----\\r*\\n{blank}(?:[A-Za-z0-9+/=]{{1,76}}\\r*\\n{blank})+-----END {label}-----\\r*"
        )
    };
    let any = labels
        .iter()
        .map(|l| block(l))
        .collect::<Vec<_>>()
        .join("|");
    let more = if one_block {
        String::new()
    } else {
        format!("(?:\\n{blank}(?:{any}))*")
    };
    format!("^(?:{blank}(?:{any}){more}(?:\\n{blank}\\r*)?)?$")
}

/// A certificate chain, or empty for "not given".
pub fn certificate_chain() -> String {
    pem(&["CERTIFICATE"], false)
}

/// One private key, or empty for "not given".
pub fn private_key() -> String {
    pem(&["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"], true)
}

/// One run of numbers sharing a prefix: `prefix [first-last] [0-9]{rest}`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    prefix: u64,
    first: u64,
    last: u64,
    rest: u32,
}

impl Block {
    #[cfg(test)]
    fn low(&self) -> u64 {
        (self.prefix * 10 + self.first) * 10u64.pow(self.rest)
    }

    fn high(&self) -> u64 {
        (self.prefix * 10 + self.last + 1) * 10u64.pow(self.rest) - 1
    }

    fn regex(&self) -> String {
        let prefix = if self.prefix == 0 {
            String::new()
        } else {
            self.prefix.to_string()
        };
        let digit = if self.first == self.last {
            self.first.to_string()
        } else {
            format!("[{}-{}]", self.first, self.last)
        };
        let rest = match self.rest {
            0 => String::new(),
            1 => "[0-9]".into(),
            n => format!("[0-9]{{{n}}}"),
        };
        format!("{prefix}{digit}{rest}")
    }
}

/// Cuts `low..=high` (`low` at least 1) into blocks, each a regex without leading zeros.
fn blocks(low: u64, high: u64) -> Vec<Block> {
    assert!(low >= 1 && low <= high);
    let mut out = Vec::new();
    let mut at = low;
    while at <= high {
        // The widest power of ten that starts at `at` and fits.
        let mut rest = 0;
        while at % 10u64.pow(rest + 1) == 0 && at + 10u64.pow(rest + 1) - 1 <= high {
            rest += 1;
        }
        let size = 10u64.pow(rest);
        let first = (at / size) % 10;
        let mut last = first;
        while last < 9 && at + (last - first + 2) * size - 1 <= high {
            last += 1;
        }
        let block = Block {
            prefix: at / size / 10,
            first,
            last,
            rest,
        };
        at = block.high() + 1;
        out.push(block);
    }
    out
}

/// Decimal numbers from `low` to `high`, leading zeros allowed, and `suffix` after them.
pub fn number_between(low: u64, high: u64, suffix: &str) -> String {
    let alternatives = blocks(low, high)
        .iter()
        .map(Block::regex)
        .collect::<Vec<_>>()
        .join("|");
    format!("^0*(?:{alternatives}){suffix}$")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(table: &[(u32, u32)], c: char) -> bool {
        table
            .iter()
            .any(|&(first, last)| (first..=last).contains(&(c as u32)))
    }

    #[test]
    fn character_tables_match_the_parsers() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let s = c.to_string();
            assert_eq!(
                within(FORBIDDEN, c),
                crate::domain::has_forbidden_char(&s).is_some(),
                "{c:?}"
            );
            assert_eq!(within(CONTROL, c), c.is_control(), "{c:?}");
            assert_eq!(within(WHITESPACE, c), c.is_whitespace(), "{c:?}");
        }
    }

    #[test]
    fn number_blocks_cover_the_range_exactly() {
        for (low, high) in [
            (1, 9),
            (1, 86_400),
            (16, 16_384),
            (60, 2_592_000),
            (100, 100_000),
            (1, 10),
            (7, 7),
            (19, 21),
        ] {
            let blocks = blocks(low, high);
            let mut next = low;
            for b in &blocks {
                assert!(b.first <= b.last && b.last <= 9, "{b:?}");
                assert!(b.prefix > 0 || b.first > 0, "leading zero in {b:?}");
                assert_eq!(b.low(), next, "gap or overlap before {b:?}");
                next = b.high() + 1;
            }
            assert_eq!(next, high + 1, "{low}..={high} not covered");
        }
        assert_eq!(
            number_between(16, 120, "M"),
            "^0*(?:1[6-9]|[2-9][0-9]|1[0-1][0-9]|120)M$"
        );
    }

    #[test]
    fn reserved_words_fit_the_tenant_pattern() {
        // A reserved word the pattern already refuses would be dead weight in `not`.
        for word in reserved_tenant_names() {
            assert!(
                word.len() >= 2
                    && word.len() <= 31
                    && word.starts_with(|c: char| c.is_ascii_lowercase())
                    && word
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{word}"
            );
        }
    }
}
