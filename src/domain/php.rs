//! PHP settings a tenant may change, and the process manager modes a plan may choose.
//!
//! Never free-form ini text: each setting is a known key with a typed value, bounded by the
//! tenant's plan, so a value can never carry a newline or a second directive into a pool file.

use super::text_enum::text_enum;
use super::{invalid, FieldError, Invalid};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Functions a plan disables unless it says otherwise: everything that starts a process.
pub const DEFAULT_DISABLE_FUNCTIONS: &[&str] = &[
    "exec",
    "passthru",
    "shell_exec",
    "system",
    "proc_open",
    "popen",
    "proc_nice",
    "proc_terminate",
    "proc_get_status",
    "proc_close",
    "pcntl_exec",
    "pcntl_fork",
    "pcntl_signal",
    "pcntl_alarm",
    "dl",
    "putenv",
    "mail",
    "symlink",
    "link",
    "posix_kill",
    "posix_setuid",
    "posix_setgid",
    "posix_setsid",
    "posix_mkfifo",
];

/// A PHP function name, as `disable_functions` lists it: lowercase letters, digits and `_`,
/// not starting with a digit, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhpFunction(String);

impl PhpFunction {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return invalid(format!(
                "'{}' is not a PHP function name",
                super::names_for_field(raw)
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_enum! {
    /// How php-fpm manages a pool's workers.
    pub enum PmMode {
        Ondemand = "ondemand",
        Dynamic = "dynamic",
        Static = "static",
    }
}

/// The ceilings a plan puts on a tenant's own settings.
#[derive(Debug, Clone, Copy)]
pub struct PhpBounds {
    pub memory_limit_mb: u32,
    pub upload_max_mb: u32,
    pub max_execution_time: u32,
}

impl PhpBounds {
    /// No plan ceiling: for reading stored settings before the plan's bounds are applied.
    pub const UNBOUNDED: PhpBounds = PhpBounds {
        memory_limit_mb: u32::MAX,
        upload_max_mb: u32::MAX,
        max_execution_time: u32::MAX,
    };
}

#[derive(Clone, Copy)]
enum Kind {
    /// A size in megabytes, written `256M` or `1G` (or a bare number of megabytes).
    Megabytes {
        min: u32,
        cap: fn(&PhpBounds) -> u32,
    },
    Seconds {
        min: u32,
        cap: fn(&PhpBounds) -> u32,
    },
    Count {
        min: u32,
        max: u32,
    },
    Flag,
    Timezone,
}

struct Setting {
    key: &'static str,
    kind: Kind,
    help: &'static str,
}

/// The whitelist: every PHP setting a tenant may change, its type and its bound.
const SETTINGS: &[Setting] = &[
    Setting {
        key: "memory_limit",
        kind: Kind::Megabytes {
            min: 16,
            cap: |b| b.memory_limit_mb,
        },
        help: "memory one request may use",
    },
    Setting {
        key: "upload_max_filesize",
        kind: Kind::Megabytes {
            min: 1,
            cap: |b| b.upload_max_mb,
        },
        help: "largest uploaded file",
    },
    Setting {
        key: "post_max_size",
        kind: Kind::Megabytes {
            min: 1,
            cap: |b| b.upload_max_mb,
        },
        help: "largest request body",
    },
    Setting {
        key: "max_execution_time",
        kind: Kind::Seconds {
            min: 1,
            cap: |b| b.max_execution_time,
        },
        help: "seconds a script may run",
    },
    Setting {
        key: "max_input_time",
        kind: Kind::Seconds {
            min: 1,
            cap: |b| b.max_execution_time,
        },
        help: "seconds to read the request",
    },
    Setting {
        key: "max_input_vars",
        kind: Kind::Count {
            min: 100,
            max: 100_000,
        },
        help: "form fields per request",
    },
    Setting {
        key: "session.gc_maxlifetime",
        kind: Kind::Count {
            min: 60,
            max: 2_592_000,
        },
        help: "seconds a session lives",
    },
    Setting {
        key: "display_errors",
        kind: Kind::Flag,
        help: "show errors in pages",
    },
    Setting {
        key: "short_open_tag",
        kind: Kind::Flag,
        help: "allow <? tags",
    },
    Setting {
        key: "allow_url_fopen",
        kind: Kind::Flag,
        help: "open URLs as files",
    },
    Setting {
        key: "date.timezone",
        kind: Kind::Timezone,
        help: "default time zone, like Europe/Berlin",
    },
];

/// One setting's checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhpValue {
    Megabytes(u32),
    Seconds(u32),
    Count(u32),
    Flag(bool),
    Timezone(String),
}

impl PhpValue {
    /// The value as written in a pool file (`php_value[key] = ...`).
    pub fn ini(&self) -> String {
        match self {
            PhpValue::Megabytes(mb) => format!("{mb}M"),
            PhpValue::Seconds(n) | PhpValue::Count(n) => n.to_string(),
            PhpValue::Flag(true) => "On".to_owned(),
            PhpValue::Flag(false) => "Off".to_owned(),
            PhpValue::Timezone(tz) => tz.clone(),
        }
    }

    fn json(&self) -> Value {
        match self {
            PhpValue::Megabytes(mb) => Value::String(format!("{mb}M")),
            PhpValue::Seconds(n) | PhpValue::Count(n) => Value::from(*n),
            PhpValue::Flag(b) => Value::Bool(*b),
            PhpValue::Timezone(tz) => Value::String(tz.clone()),
        }
    }
}

/// A tenant's PHP settings: only whitelisted keys, each typed and within the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhpSettings {
    values: BTreeMap<&'static str, PhpValue>,
}

impl PhpSettings {
    /// The keys a tenant may set, with a line of help each (for the dashboard form).
    pub fn whitelist() -> impl Iterator<Item = (&'static str, &'static str)> {
        SETTINGS.iter().map(|s| (s.key, s.help))
    }

    /// Parses a JSON object of settings. `null` removes a setting. Every bad key or value is
    /// reported as `php.<key>`.
    pub fn parse(map: &Map<String, Value>, bounds: &PhpBounds) -> Result<Self, Vec<FieldError>> {
        let mut settings = PhpSettings::default();
        settings.merge(map, bounds)?;
        Ok(settings)
    }

    /// Applies a JSON object of changes on top of these settings.
    pub fn merge(
        &mut self,
        map: &Map<String, Value>,
        bounds: &PhpBounds,
    ) -> Result<(), Vec<FieldError>> {
        self.merge_checked(map, bounds, true)
    }

    /// Whether a JSON object of settings is well-formed, whatever the plan's limits and the
    /// time zones this machine knows: settings that are, but still refused, conflict with the
    /// tenant's plan or the machine rather than being malformed.
    pub fn well_formed(map: &Map<String, Value>) -> Result<(), Vec<FieldError>> {
        PhpSettings::default().merge_checked(map, &PhpBounds::UNBOUNDED, false)
    }

    fn merge_checked(
        &mut self,
        map: &Map<String, Value>,
        bounds: &PhpBounds,
        known_zones_only: bool,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if map.len() > SETTINGS.len() {
            errors.push(FieldError::new(
                "php",
                "has more keys than lodge knows settings",
            ));
            return Err(errors);
        }
        let mut next = self.values.clone();
        for (key, value) in map {
            let field = format!("php.{}", super::names_for_field(key));
            let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
                errors.push(FieldError::new(
                    field,
                    "is not a PHP setting lodge lets tenants change",
                ));
                continue;
            };
            if value.is_null() {
                next.remove(setting.key);
                continue;
            }
            match parse_value(setting.kind, value, bounds, known_zones_only) {
                Ok(v) => {
                    next.insert(setting.key, v);
                }
                Err(e) => errors.push(e.at(&field)),
            }
        }
        if errors.is_empty() {
            self.values = next;
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Re-checks stored settings against a (possibly lowered) plan.
    pub fn check_bounds(&self, bounds: &PhpBounds) -> Result<(), Vec<FieldError>> {
        let map = self.to_json();
        PhpSettings::parse(&map, bounds).map(|_| ())
    }

    pub fn get(&self, key: &str) -> Option<&PhpValue> {
        self.values.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &PhpValue)> {
        self.values.iter().map(|(k, v)| (*k, v))
    }

    pub fn to_json(&self) -> Map<String, Value> {
        self.values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.json()))
            .collect()
    }
}

/// One line of a pool file's PHP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSetting {
    pub key: &'static str,
    pub value: String,
    /// `php_admin_value`: neither `ini_set()` nor `.user.ini` can change it. Every setting
    /// the plan caps is one, so a tenant can never raise it past the plan.
    pub admin: bool,
}

impl PhpSettings {
    /// The lines of the pool file: each capped setting as `php_admin_value`, the tenant's own
    /// value or else the plan's cap; the others as `php_value`, when the tenant set them.
    pub fn pool_settings(&self, bounds: &PhpBounds) -> Vec<PoolSetting> {
        let mut lines = Vec::new();
        for setting in SETTINGS {
            let own = self.values.get(setting.key);
            let cap = match setting.kind {
                Kind::Megabytes { cap, .. } => Some(PhpValue::Megabytes(cap(bounds))),
                Kind::Seconds { cap, .. } => Some(PhpValue::Seconds(cap(bounds))),
                _ => None,
            };
            match (own, cap) {
                (Some(v), cap) => lines.push(PoolSetting {
                    key: setting.key,
                    value: v.ini(),
                    admin: cap.is_some(),
                }),
                (None, Some(cap)) => lines.push(PoolSetting {
                    key: setting.key,
                    value: cap.ini(),
                    admin: true,
                }),
                (None, None) => {}
            }
        }
        lines
    }
}

/// Loads settings from the store, where only checked settings were ever written; the
/// bounds are re-checked all the same (the agent trusts no stored string).
impl PhpSettings {
    pub fn from_stored(text: &str, bounds: &PhpBounds) -> Result<Self, Vec<FieldError>> {
        let value: Value = serde_json::from_str(text)
            .map_err(|_| vec![FieldError::new("php", "stored settings are not valid JSON")])?;
        let Value::Object(map) = value else {
            return Err(vec![FieldError::new(
                "php",
                "stored settings are not an object",
            )]);
        };
        Self::parse(&map, bounds)
    }
}

fn parse_value(
    kind: Kind,
    value: &Value,
    bounds: &PhpBounds,
    known_zones_only: bool,
) -> Result<PhpValue, Invalid> {
    match kind {
        Kind::Megabytes { min, cap } => {
            let mb = megabytes(value)?;
            let cap = cap(bounds);
            if mb < min || mb > cap {
                return invalid(format!(
                    "must be between {min}M and {cap}M (the plan's limit)"
                ));
            }
            Ok(PhpValue::Megabytes(mb))
        }
        Kind::Seconds { min, cap } => {
            let n = integer(value)?;
            let cap = cap(bounds);
            if n < min || n > cap {
                return invalid(format!(
                    "must be between {min} and {cap} seconds (the plan's limit)"
                ));
            }
            Ok(PhpValue::Seconds(n))
        }
        Kind::Count { min, max } => {
            let n = integer(value)?;
            if n < min || n > max {
                return invalid(format!("must be between {min} and {max}"));
            }
            Ok(PhpValue::Count(n))
        }
        Kind::Flag => match value {
            Value::Bool(b) => Ok(PhpValue::Flag(*b)),
            Value::String(s) => match s.as_str() {
                "on" | "On" | "true" | "1" => Ok(PhpValue::Flag(true)),
                "off" | "Off" | "false" | "0" => Ok(PhpValue::Flag(false)),
                _ => invalid("must be true or false"),
            },
            _ => invalid("must be true or false"),
        },
        Kind::Timezone => {
            let Value::String(s) = value else {
                return invalid("must be a time zone name, like Europe/Berlin");
            };
            timezone(s, known_zones_only).map(PhpValue::Timezone)
        }
    }
}

fn integer(value: &Value) -> Result<u32, Invalid> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s)
            if !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    };
    match parsed.and_then(|n| u32::try_from(n).ok()) {
        Some(n) => Ok(n),
        None => invalid("must be a whole number"),
    }
}

fn megabytes(value: &Value) -> Result<u32, Invalid> {
    if let Value::String(s) = value {
        let (digits, factor) = match s.as_bytes().last() {
            Some(b'M' | b'm') => (&s[..s.len() - 1], 1),
            Some(b'G' | b'g') => (&s[..s.len() - 1], 1024),
            _ => (s.as_str(), 1),
        };
        if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return invalid("must be a size like 256M or 1G");
        }
        let n: u32 = digits
            .parse()
            .map_err(|_| Invalid("must be a size like 256M or 1G".into()))?;
        return Ok(n.saturating_mul(factor));
    }
    integer(value).map_err(|_| Invalid("must be a size like 256M or 1G".into()))
}

/// `Area/City` names as in the tz database; the name must also exist in this machine's
/// zoneinfo when it has one (and `known_only`), so PHP will not fall back to UTC with a warning.
fn timezone(s: &str, known_only: bool) -> Result<String, Invalid> {
    let well_formed = !s.is_empty()
        && s.len() <= 64
        && s.split('/').count() <= 3
        && s.split('/').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphabetic())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        });
    if !well_formed {
        return invalid("must be a time zone name, like Europe/Berlin");
    }
    let zoneinfo = std::path::Path::new("/usr/share/zoneinfo");
    if known_only && s != "UTC" && zoneinfo.is_dir() && !zoneinfo.join(s).is_file() {
        return invalid("is not a known time zone");
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOUNDS: PhpBounds = PhpBounds {
        memory_limit_mb: 512,
        upload_max_mb: 64,
        max_execution_time: 120,
    };

    fn parse(v: Value) -> Result<PhpSettings, Vec<FieldError>> {
        PhpSettings::parse(v.as_object().unwrap(), &BOUNDS)
    }

    #[test]
    fn typed_and_bounded() {
        let s = parse(
            json!({"memory_limit": "256M", "display_errors": false, "max_execution_time": 30}),
        )
        .unwrap();
        assert_eq!(s.get("memory_limit"), Some(&PhpValue::Megabytes(256)));
        assert_eq!(s.get("display_errors").unwrap().ini(), "Off");
        assert!(parse(json!({"memory_limit": "1G"})).is_err());
        assert!(parse(json!({"memory_limit": "256M\nextension=evil.so"})).is_err());
        assert!(parse(json!({"auto_prepend_file": "/etc/passwd"})).is_err());
        assert!(parse(json!({"date.timezone": "../../etc/passwd"})).is_err());
        let errors = parse(json!({"max_execution_time": 999})).unwrap_err();
        assert_eq!(errors[0].field, "php.max_execution_time");
    }

    #[test]
    fn round_trips_through_the_store() {
        let s = parse(json!({"memory_limit": "128M", "max_input_vars": 3000})).unwrap();
        let stored = serde_json::to_string(&s.to_json()).unwrap();
        assert_eq!(PhpSettings::from_stored(&stored, &BOUNDS).unwrap(), s);
    }
}
