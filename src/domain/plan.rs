//! A plan's limits: one type, with one range per value. The panel refuses a value outside
//! its range (422 naming the field); the agent and the proxy refuse a stored one (the store
//! was changed behind the panel's back), through the same checks.

use super::php::{PhpBounds, PhpFunction, PmMode, DEFAULT_DISABLE_FUNCTIONS};
use super::{Checks, FieldError};
use serde::Deserialize;

/// The range one integer of a plan may take, and the field it is reported under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub field: &'static str,
    pub min: i64,
    pub max: i64,
}

impl Bound {
    const fn new(field: &'static str, min: i64, max: i64) -> Self {
        Self { field, min, max }
    }

    pub fn contains(&self, value: i64) -> bool {
        (self.min..=self.max).contains(&value)
    }

    pub fn check(&self, value: i64) -> Result<i64, FieldError> {
        if self.contains(value) {
            Ok(value)
        } else {
            Err(FieldError::new(
                self.field,
                format!("must be between {} and {}", self.min, self.max),
            ))
        }
    }
}

pub const MAX_VHOSTS: Bound = Bound::new("max_vhosts", 0, 100_000);
pub const PHP_MAX_CHILDREN: Bound = Bound::new("php.max_children", 1, 1000);
pub const PHP_MAX_REQUESTS: Bound = Bound::new("php.max_requests", 0, 1_000_000);
pub const PHP_MEMORY_LIMIT_MB: Bound = Bound::new("php.memory_limit_mb", 16, 16_384);
pub const PHP_UPLOAD_MAX_MB: Bound = Bound::new("php.upload_max_mb", 1, 10_240);
pub const PHP_MAX_EXECUTION_TIME: Bound = Bound::new("php.max_execution_time", 1, 86_400);
pub const DISK_MB: Bound = Bound::new("disk_mb", 0, 100_000_000);
pub const MEMORY_MB: Bound = Bound::new("memory_mb", 64, 1_048_576);
pub const CPU_PERCENT: Bound = Bound::new("cpu_percent", 1, 6400);
pub const MAX_PROCESSES: Bound = Bound::new("max_processes", 8, 100_000);
/// At most this many functions may be disabled.
pub const MAX_DISABLED_FUNCTIONS: usize = 200;

/// Every bound, for documents that list them (the OpenAPI schema).
pub const BOUNDS: &[Bound] = &[
    MAX_VHOSTS,
    PHP_MAX_CHILDREN,
    PHP_MAX_REQUESTS,
    PHP_MEMORY_LIMIT_MB,
    PHP_UPLOAD_MAX_MB,
    PHP_MAX_EXECUTION_TIME,
    DISK_MB,
    MEMORY_MB,
    CPU_PERCENT,
    MAX_PROCESSES,
];

/// A plan's PHP part as sent: every field optional.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PlanPhpChanges {
    pub pm: Option<String>,
    pub max_children: Option<i64>,
    pub max_requests: Option<i64>,
    pub memory_limit_mb: Option<i64>,
    pub upload_max_mb: Option<i64>,
    pub max_execution_time: Option<i64>,
    pub disable_functions: Option<Vec<String>>,
}

/// A plan as sent to create or change one: every field optional; a new plan fills the
/// missing ones with defaults, a change keeps them.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PlanChanges {
    pub name: Option<String>,
    pub max_vhosts: Option<i64>,
    pub php: Option<PlanPhpChanges>,
    pub disk_mb: Option<i64>,
    pub memory_mb: Option<i64>,
    pub cpu_percent: Option<i64>,
    pub max_processes: Option<i64>,
}

/// A plan's limits, every value within its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_vhosts: u32,
    pub pm: PmMode,
    pub max_children: u32,
    pub max_requests: u32,
    pub memory_limit_mb: u32,
    pub upload_max_mb: u32,
    pub max_execution_time: u32,
    pub disable_functions: Vec<PhpFunction>,
    pub disk_mb: u64,
    pub memory_mb: u64,
    pub cpu_percent: u32,
    pub max_processes: u32,
}

impl Default for PlanLimits {
    /// What a new plan gets for every value not given.
    fn default() -> Self {
        Self {
            max_vhosts: 10,
            pm: PmMode::Ondemand,
            max_children: 5,
            max_requests: 500,
            memory_limit_mb: 256,
            upload_max_mb: 64,
            max_execution_time: 60,
            disable_functions: DEFAULT_DISABLE_FUNCTIONS
                .iter()
                .map(|f| PhpFunction::parse(f).expect("the default list holds function names"))
                .collect(),
            disk_mb: 10_240,
            memory_mb: 1024,
            cpu_percent: 100,
            max_processes: 64,
        }
    }
}

impl PlanLimits {
    /// Applies the given fields, each checked against its bound; a refused one is recorded
    /// in `checks` and leaves the old value.
    pub fn apply(&mut self, changes: &PlanChanges, checks: &mut Checks) {
        let php = changes.php.clone().unwrap_or_default();
        fn set<T: TryFrom<i64>>(
            checks: &mut Checks,
            bound: Bound,
            value: Option<i64>,
            slot: &mut T,
        ) {
            if let Some(v) = value {
                match bound.check(v).map(T::try_from) {
                    Ok(Ok(v)) => *slot = v,
                    Ok(Err(_)) => checks.push(FieldError::new(bound.field, "is out of range")),
                    Err(e) => checks.push(e),
                }
            }
        }
        set(checks, MAX_VHOSTS, changes.max_vhosts, &mut self.max_vhosts);
        set(
            checks,
            PHP_MAX_CHILDREN,
            php.max_children,
            &mut self.max_children,
        );
        set(
            checks,
            PHP_MAX_REQUESTS,
            php.max_requests,
            &mut self.max_requests,
        );
        set(
            checks,
            PHP_MEMORY_LIMIT_MB,
            php.memory_limit_mb,
            &mut self.memory_limit_mb,
        );
        set(
            checks,
            PHP_UPLOAD_MAX_MB,
            php.upload_max_mb,
            &mut self.upload_max_mb,
        );
        set(
            checks,
            PHP_MAX_EXECUTION_TIME,
            php.max_execution_time,
            &mut self.max_execution_time,
        );
        set(checks, DISK_MB, changes.disk_mb, &mut self.disk_mb);
        set(checks, MEMORY_MB, changes.memory_mb, &mut self.memory_mb);
        set(
            checks,
            CPU_PERCENT,
            changes.cpu_percent,
            &mut self.cpu_percent,
        );
        set(
            checks,
            MAX_PROCESSES,
            changes.max_processes,
            &mut self.max_processes,
        );
        if let Some(pm) = &php.pm {
            if let Some(pm) = checks.take("php.pm", PmMode::parse(pm)) {
                self.pm = pm;
            }
        }
        if let Some(list) = &php.disable_functions {
            match parse_function_list(list) {
                Ok(functions) => self.disable_functions = functions,
                Err(e) => checks.push(e),
            }
        }
    }

    /// The limits as stored: every value checked again, as if it were sent.
    pub fn from_stored(changes: &PlanChanges) -> Result<Self, Vec<FieldError>> {
        let mut checks = Checks::new();
        let mut limits = Self::default();
        limits.apply(changes, &mut checks);
        checks.finish().map(|()| limits)
    }

    /// The ceilings on a tenant's own PHP settings.
    pub fn php_bounds(&self) -> PhpBounds {
        PhpBounds {
            memory_limit_mb: self.memory_limit_mb,
            upload_max_mb: self.upload_max_mb,
            max_execution_time: self.max_execution_time,
        }
    }

    /// The disabled functions as php-fpm's `disable_functions` and the store take them.
    pub fn disable_functions_joined(&self) -> String {
        self.disable_functions
            .iter()
            .map(PhpFunction::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The stored form of the list (`exec,system`) as the changes `from_stored` takes.
pub fn split_function_list(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_function_list(list: &[String]) -> Result<Vec<PhpFunction>, FieldError> {
    const FIELD: &str = "php.disable_functions";
    if list.len() > MAX_DISABLED_FUNCTIONS {
        return Err(FieldError::new(
            FIELD,
            format!("must list at most {MAX_DISABLED_FUNCTIONS} functions"),
        ));
    }
    let mut functions: Vec<PhpFunction> = Vec::with_capacity(list.len());
    for name in list {
        let f = PhpFunction::parse(name).map_err(|e| e.at(FIELD))?;
        if !functions.contains(&f) {
            functions.push(f);
        }
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_their_bound_are_refused_by_field() {
        let mut limits = PlanLimits::default();
        let mut checks = Checks::new();
        let changes = PlanChanges {
            max_vhosts: Some(-1),
            php: Some(PlanPhpChanges {
                max_children: Some(1001),
                disable_functions: Some(vec!["exec".into(), "bad name".into()]),
                ..Default::default()
            }),
            memory_mb: Some(128),
            ..Default::default()
        };
        limits.apply(&changes, &mut checks);
        let errors = checks.finish().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["max_vhosts", "php.max_children", "php.disable_functions"]
        );
        assert_eq!(limits.memory_mb, 128, "the good value is taken");
        assert_eq!(limits.max_children, 5, "a refused value leaves the old one");
    }

    #[test]
    fn stored_values_are_checked_as_sent_ones() {
        let stored = PlanChanges {
            max_vhosts: Some(3),
            php: Some(PlanPhpChanges {
                pm: Some("static".into()),
                disable_functions: Some(split_function_list("exec,system,exec")),
                ..Default::default()
            }),
            ..Default::default()
        };
        let limits = PlanLimits::from_stored(&stored).unwrap();
        assert_eq!(limits.pm, PmMode::Static);
        assert_eq!(limits.disable_functions_joined(), "exec,system");
        let bad = PlanChanges {
            cpu_percent: Some(0),
            ..Default::default()
        };
        assert_eq!(
            PlanLimits::from_stored(&bad).unwrap_err()[0].field,
            "cpu_percent"
        );
        assert!(PlanLimits::default()
            .disable_functions_joined()
            .contains("proc_open"));
    }
}
