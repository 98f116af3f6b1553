//! Plans: what a tenant gets (vhosts, PHP workers and limits, disk, memory, CPU, processes).
//! Admins manage them; resellers assign them; a tenant login sees its own.

use super::{on_unique, Control, ControlError, Page, PageRequest};
use crate::domain::{Checks, FieldError, PhpSettings, PlanChanges, PlanLimits, PlanName};
use crate::panel::policy::Actor;
use crate::store::rows::PlanRow;
use crate::store::{bump_generation, now, AuditEntry};

/// Binds a plan's limits in the column order both the INSERT and the UPDATE use.
fn bind_limits<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    v: &PlanLimits,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(v.max_vhosts)
        .bind(v.pm.as_str())
        .bind(v.max_children)
        .bind(v.max_requests)
        .bind(v.memory_limit_mb)
        .bind(v.upload_max_mb)
        .bind(v.max_execution_time)
        .bind(v.disable_functions_joined())
        .bind(v.disk_mb as i64)
        .bind(v.memory_mb as i64)
        .bind(v.cpu_percent)
        .bind(v.max_processes)
}

pub async fn create(
    ctl: &Control,
    actor: &Actor,
    input: PlanChanges,
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
    let mut limits = PlanLimits::default();
    limits.apply(&input, &mut checks);
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
    let id = bind_limits(insert, &limits)
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
    input: PlanChanges,
) -> Result<PlanRow, ControlError> {
    actor.require_admin("change plans")?;
    let before = get(ctl, actor, name).await?;
    let mut checks = Checks::new();
    let name_given = input
        .name
        .as_deref()
        .and_then(|n| checks.take("name", PlanName::parse(n)));
    // A stored plan that no longer checks is changed from the defaults.
    let mut limits = before.limits.limits().unwrap_or_default();
    limits.apply(&input, &mut checks);
    checks.finish().map_err(ControlError::Invalid)?;
    if name_given.is_some_and(|n| n.as_str() != before.name) {
        return Err(ControlError::refused("name", "a plan cannot be renamed"));
    }

    let mut tx = ctl.store.begin().await?;
    let update = sqlx::query(
        "UPDATE plans SET max_vhosts = ?, php_pm = ?, php_max_children = ?, php_max_requests = ?,
             php_memory_limit_mb = ?, php_upload_max_mb = ?, php_max_execution_time = ?, php_disable_functions = ?,
             disk_mb = ?, memory_mb = ?, cpu_percent = ?, max_processes = ?, updated_at = ?
         WHERE id = ?",
    );
    bind_limits(update, &limits)
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
