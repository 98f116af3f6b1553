//! Plans: what a tenant gets (vhosts, PHP workers and limits, disk, memory, CPU, processes).
//! Admins manage them; resellers assign them; a tenant login sees its own.

use super::{on_unique, Control, ControlError, Page, PageRequest};
use crate::domain::{Checks, FieldError, PhpSettings, PlanName, PmMode, DEFAULT_DISABLE_FUNCTIONS};
use crate::panel::policy::Actor;
use crate::store::rows::PlanRow;
use crate::store::{bump_generation, now, AuditEntry};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PlanPhp {
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
pub struct PlanInput {
    pub name: Option<String>,
    pub max_vhosts: Option<i64>,
    pub php: Option<PlanPhp>,
    pub disk_mb: Option<i64>,
    pub memory_mb: Option<i64>,
    pub cpu_percent: Option<i64>,
    pub max_processes: Option<i64>,
}

/// A plan's values, checked.
struct PlanValues {
    max_vhosts: i64,
    pm: PmMode,
    max_children: i64,
    max_requests: i64,
    memory_limit_mb: i64,
    upload_max_mb: i64,
    max_execution_time: i64,
    disable_functions: String,
    disk_mb: i64,
    memory_mb: i64,
    cpu_percent: i64,
    max_processes: i64,
}

impl PlanValues {
    fn defaults() -> Self {
        Self {
            max_vhosts: 10,
            pm: PmMode::Ondemand,
            max_children: 5,
            max_requests: 500,
            memory_limit_mb: 256,
            upload_max_mb: 64,
            max_execution_time: 60,
            disable_functions: DEFAULT_DISABLE_FUNCTIONS.join(","),
            disk_mb: 10_240,
            memory_mb: 1024,
            cpu_percent: 100,
            max_processes: 64,
        }
    }

    fn of(row: &PlanRow) -> Self {
        Self {
            max_vhosts: row.max_vhosts,
            pm: PmMode::parse(&row.php_pm).unwrap_or(PmMode::Ondemand),
            max_children: row.php_max_children,
            max_requests: row.php_max_requests,
            memory_limit_mb: row.php_memory_limit_mb,
            upload_max_mb: row.php_upload_max_mb,
            max_execution_time: row.php_max_execution_time,
            disable_functions: row.php_disable_functions.clone(),
            disk_mb: row.disk_mb,
            memory_mb: row.memory_mb,
            cpu_percent: row.cpu_percent,
            max_processes: row.max_processes,
        }
    }

    /// Applies the given fields, checking each against its range.
    fn apply(&mut self, input: &PlanInput, checks: &mut Checks) {
        let php = input.php.clone().unwrap_or_default();
        let mut set = |field: &str,
                       value: Option<i64>,
                       range: std::ops::RangeInclusive<i64>,
                       slot: &mut i64| {
            if let Some(v) = value {
                if range.contains(&v) {
                    *slot = v;
                } else {
                    checks.push(FieldError::new(
                        field,
                        format!("must be between {} and {}", range.start(), range.end()),
                    ));
                }
            }
        };
        set(
            "max_vhosts",
            input.max_vhosts,
            0..=100_000,
            &mut self.max_vhosts,
        );
        set(
            "php.max_children",
            php.max_children,
            1..=1000,
            &mut self.max_children,
        );
        set(
            "php.max_requests",
            php.max_requests,
            0..=1_000_000,
            &mut self.max_requests,
        );
        set(
            "php.memory_limit_mb",
            php.memory_limit_mb,
            16..=16_384,
            &mut self.memory_limit_mb,
        );
        set(
            "php.upload_max_mb",
            php.upload_max_mb,
            1..=10_240,
            &mut self.upload_max_mb,
        );
        set(
            "php.max_execution_time",
            php.max_execution_time,
            1..=86_400,
            &mut self.max_execution_time,
        );
        set("disk_mb", input.disk_mb, 0..=100_000_000, &mut self.disk_mb);
        set(
            "memory_mb",
            input.memory_mb,
            64..=1_048_576,
            &mut self.memory_mb,
        );
        set(
            "cpu_percent",
            input.cpu_percent,
            1..=6400,
            &mut self.cpu_percent,
        );
        set(
            "max_processes",
            input.max_processes,
            8..=100_000,
            &mut self.max_processes,
        );
        if let Some(pm) = &php.pm {
            if let Some(pm) = checks.take("php.pm", PmMode::parse(pm)) {
                self.pm = pm;
            }
        }
        if let Some(list) = &php.disable_functions {
            match parse_function_list(list) {
                Ok(joined) => self.disable_functions = joined,
                Err(e) => checks.push(e),
            }
        }
    }
}

/// Binds a plan's values in the column order both the INSERT and the UPDATE use.
fn bind_values<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    v: &'q PlanValues,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(v.max_vhosts)
        .bind(v.pm.as_str())
        .bind(v.max_children)
        .bind(v.max_requests)
        .bind(v.memory_limit_mb)
        .bind(v.upload_max_mb)
        .bind(v.max_execution_time)
        .bind(&v.disable_functions)
        .bind(v.disk_mb)
        .bind(v.memory_mb)
        .bind(v.cpu_percent)
        .bind(v.max_processes)
}

fn parse_function_list(list: &[String]) -> Result<String, FieldError> {
    if list.len() > 200 {
        return Err(FieldError::new(
            "php.disable_functions",
            "must list at most 200 functions",
        ));
    }
    let mut names: Vec<&str> = Vec::with_capacity(list.len());
    for name in list {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(FieldError::new(
                "php.disable_functions",
                format!(
                    "'{}' is not a PHP function name",
                    crate::domain::names_for_field(name)
                ),
            ));
        }
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    Ok(names.join(","))
}

pub async fn create(
    ctl: &Control,
    actor: &Actor,
    input: PlanInput,
) -> Result<PlanRow, ControlError> {
    actor.require_admin("create plans")?;
    let mut checks = Checks::new();
    let name = match &input.name {
        Some(n) => checks.take("name", PlanName::parse(n)),
        None => {
            checks.push(FieldError::new("name", "is required"));
            None
        }
    };
    let mut values = PlanValues::defaults();
    values.apply(&input, &mut checks);
    checks.finish().map_err(ControlError::Invalid)?;
    let name = name.unwrap();

    let mut tx = ctl.store.begin().await?;
    let t = now();
    let insert = sqlx::query(
        "INSERT INTO plans (max_vhosts, php_pm, php_max_children, php_max_requests, php_memory_limit_mb,
             php_upload_max_mb, php_max_execution_time, php_disable_functions, disk_mb, memory_mb, cpu_percent,
             max_processes, name, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    let id = bind_values(insert, &values)
        .bind(name.as_str())
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(on_unique("name", format!("a plan named '{name}' exists")))?
        .last_insert_rowid();
    let plan = fetch(&mut tx, id).await?;
    bump_generation(&mut tx).await?;
    AuditEntry::new(actor.audit(), "plan.create", format!("plan:{name}"))
        .after(plan.json())
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(plan)
}

async fn fetch(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    id: i64,
) -> sqlx::Result<PlanRow> {
    sqlx::query_as::<_, PlanRow>(&format!("{} WHERE id = ?", PlanRow::SELECT))
        .bind(id)
        .fetch_one(&mut **tx)
        .await
}

/// The plan id a tenant login may see (its own tenant's), or `None` for everyone else.
async fn visible_plan(ctl: &Control, actor: &Actor) -> Result<Option<i64>, ControlError> {
    match actor.tenant_id {
        Some(tenant_id) if actor.role == crate::domain::Role::Tenant => {
            let id: Option<i64> = sqlx::query_scalar("SELECT plan_id FROM tenants WHERE id = ?")
                .bind(tenant_id)
                .fetch_optional(&ctl.store.read)
                .await?;
            Ok(Some(id.unwrap_or(-1)))
        }
        _ if actor.role == crate::domain::Role::Tenant => Ok(Some(-1)),
        _ => Ok(None),
    }
}

pub async fn list(
    ctl: &Control,
    actor: &Actor,
    page: &PageRequest,
) -> Result<Page<PlanRow>, ControlError> {
    let only = visible_plan(ctl, actor).await?;
    let rows = sqlx::query_as::<_, PlanRow>(&format!(
        "{} WHERE (?1 IS NULL OR id = ?1) AND name > COALESCE(?2, '') ORDER BY name LIMIT ?3",
        PlanRow::SELECT
    ))
    .bind(only)
    .bind(page.after.as_deref())
    .bind(page.fetch())
    .fetch_all(&ctl.store.read)
    .await?;
    Ok(Page::from_rows(rows, page, |p| p.name.clone()))
}

pub async fn get(ctl: &Control, actor: &Actor, name: &str) -> Result<PlanRow, ControlError> {
    let only = visible_plan(ctl, actor).await?;
    sqlx::query_as::<_, PlanRow>(&format!("{} WHERE name = ?", PlanRow::SELECT))
        .bind(name)
        .fetch_optional(&ctl.store.read)
        .await?
        .filter(|p| only.is_none_or(|id| id == p.id))
        .ok_or(ControlError::NotFound("plan"))
}

pub async fn update(
    ctl: &Control,
    actor: &Actor,
    name: &str,
    input: PlanInput,
) -> Result<PlanRow, ControlError> {
    actor.require_admin("change plans")?;
    let before = get(ctl, actor, name).await?;
    let mut checks = Checks::new();
    if input.name.as_deref().is_some_and(|n| n != before.name) {
        checks.push(FieldError::new("name", "a plan cannot be renamed"));
    }
    let mut values = PlanValues::of(&before);
    values.apply(&input, &mut checks);
    checks.finish().map_err(ControlError::Invalid)?;

    let mut tx = ctl.store.begin().await?;
    let update = sqlx::query(
        "UPDATE plans SET max_vhosts = ?, php_pm = ?, php_max_children = ?, php_max_requests = ?,
             php_memory_limit_mb = ?, php_upload_max_mb = ?, php_max_execution_time = ?, php_disable_functions = ?,
             disk_mb = ?, memory_mb = ?, cpu_percent = ?, max_processes = ?, updated_at = ?
         WHERE id = ?",
    );
    bind_values(update, &values)
        .bind(now())
        .bind(before.id)
        .execute(&mut *tx)
        .await?;
    let after = fetch(&mut tx, before.id).await?;
    // Tenants whose own settings the lowered plan no longer allows must be fixed first.
    let bounds = after.php_bounds();
    let tenants: Vec<(String, String)> =
        sqlx::query_as("SELECT name, php_settings FROM tenants WHERE plan_id = ?")
            .bind(before.id)
            .fetch_all(&mut *tx)
            .await?;
    for (tenant, php) in &tenants {
        if let Err(errors) = PhpSettings::from_stored(php, &bounds) {
            let what = errors.first().map(|e| e.field.clone()).unwrap_or_default();
            return Err(ControlError::Conflict {
                field: "php",
                message: format!(
                    "tenant '{tenant}' sets {what} above the new limit; lower it first"
                ),
            });
        }
    }
    let generation = bump_generation(&mut tx).await?;
    sqlx::query("UPDATE tenants SET generation = ? WHERE plan_id = ?")
        .bind(generation)
        .bind(before.id)
        .execute(&mut *tx)
        .await?;
    AuditEntry::new(actor.audit(), "plan.update", format!("plan:{name}"))
        .before(before.json())
        .after(after.json())
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn delete(ctl: &Control, actor: &Actor, name: &str) -> Result<(), ControlError> {
    actor.require_admin("delete plans")?;
    let plan = get(ctl, actor, name).await?;
    let mut tx = ctl.store.begin().await?;
    let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE plan_id = ?")
        .bind(plan.id)
        .fetch_one(&mut *tx)
        .await?;
    if used > 0 {
        return Err(ControlError::Conflict {
            field: "name",
            message: format!("{used} tenants are on plan '{name}'"),
        });
    }
    sqlx::query("DELETE FROM plans WHERE id = ?")
        .bind(plan.id)
        .execute(&mut *tx)
        .await?;
    bump_generation(&mut tx).await?;
    AuditEntry::new(actor.audit(), "plan.delete", format!("plan:{name}"))
        .before(plan.json())
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
