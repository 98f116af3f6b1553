//! Tenants: one Linux user, one home, one PHP-FPM pool each (made real by the agent).

use super::{on_unique, Control, ControlError, Page, PageRequest};
use crate::domain::{
    Checks, FieldError, Password, PhpSettings, PlanName, Role, TenantName, TenantState, Username,
};
use crate::panel::auth::password;
use crate::panel::policy::Actor;
use crate::store::rows::{HealthRow, HealthSample, PlanRow, TenantRow, UserRow};
use crate::store::{bump_generation, now, AuditEntry};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: Option<String>,
    pub plan: Option<String>,
    /// Creates the tenant's own login (user name = tenant name).
    pub password: Option<String>,
    /// An admin may create a tenant on behalf of a reseller.
    pub owner: Option<String>,
    pub php: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub plan: Option<String>,
    pub owner: Option<String>,
    /// Whitelisted PHP settings to change; `null` removes one.
    pub php: Option<Map<String, Value>>,
    /// Sets (or resets) the tenant's own login password.
    pub password: Option<String>,
}

/// The tenant filter of a listing.
#[derive(Debug, Default, Clone)]
pub struct TenantFilter {
    /// Part of a tenant name or of one of its domains.
    pub search: Option<String>,
    /// Tenants of one owner (by user name).
    pub owner: Option<String>,
}

/// A system account of that name exists (and is not one of our tenants): the name would
/// hand the tenant someone else's files.
fn system_account_exists(name: &TenantName) -> bool {
    matches!(nix::unistd::User::from_name(name.as_str()), Ok(Some(_)))
        || matches!(nix::unistd::Group::from_name(name.as_str()), Ok(Some(_)))
}

async fn plan_by_name(
    tx: &mut sqlx::SqliteConnection,
    name: &str,
) -> sqlx::Result<Option<PlanRow>> {
    sqlx::query_as::<_, PlanRow>(&format!("{} WHERE name = ?", PlanRow::SELECT))
        .bind(name)
        .fetch_optional(tx)
        .await
}

/// Checks a reseller's limits before it gains a tenant or PHP workers. `extra_tenants` is 1
/// for a new tenant; `workers_delta` the change in PHP workers.
async fn check_reseller_limits(
    tx: &mut sqlx::SqliteConnection,
    owner: &UserRow,
    extra_tenants: i64,
    workers_delta: i64,
) -> Result<(), ControlError> {
    if owner.role != Role::Reseller {
        return Ok(());
    }
    let (tenants, workers): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(p.php_max_children), 0) FROM tenants t JOIN plans p ON p.id = t.plan_id
         WHERE t.owner_id = ?",
    )
    .bind(owner.id)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(max) = owner.max_tenants {
        if extra_tenants > 0 && tenants + extra_tenants > max {
            return Err(ControlError::LimitExceeded {
                limit: "max_tenants",
                message: format!(
                    "reseller '{}' has reached its limit of {max} tenants",
                    owner.username
                ),
            });
        }
    }
    if let Some(max) = owner.max_php_workers {
        if workers_delta > 0 && workers + workers_delta > max {
            return Err(ControlError::LimitExceeded {
                limit: "max_php_workers",
                message: format!(
                    "reseller '{}' would have {} PHP workers, above its limit of {max}",
                    owner.username,
                    workers + workers_delta
                ),
            });
        }
    }
    Ok(())
}

/// The next free UID in the configured range: never one handed out before (deleted tenants
/// keep theirs reserved) and never one the system already uses for a user or a group.
async fn reserve_uid(
    ctl: &Control,
    tx: &mut sqlx::SqliteConnection,
    tenant: &TenantName,
) -> Result<u32, ControlError> {
    let range = ctl.config.uid_range;
    let highest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(uid) FROM uid_reservations WHERE uid BETWEEN ? AND ?")
            .bind(range.first as i64)
            .bind(range.last as i64)
            .fetch_one(&mut *tx)
            .await?;
    let mut uid = highest.map(|h| h as u32 + 1).unwrap_or(range.first);
    while uid <= range.last {
        let taken = matches!(
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
            Ok(Some(_))
        ) || matches!(
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(uid)),
            Ok(Some(_))
        );
        if !taken {
            sqlx::query("INSERT INTO uid_reservations (uid, tenant_name) VALUES (?, ?)")
                .bind(uid as i64)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            return Ok(uid);
        }
        uid += 1;
    }
    Err(ControlError::LimitExceeded {
        limit: "uid_range",
        message: format!("no free UID left in {}-{}", range.first, range.last),
    })
}

/// An owner is named by a user name; whether that account may own tenants is for
/// `resolve_owner`.
fn check_owner_name(checks: &mut Checks, owner: Option<&str>) {
    if let Some(owner) = owner {
        if Username::parse(owner).is_err() {
            checks.push(FieldError::new("owner", "must name an admin or a reseller"));
        }
    }
}

/// The account that will own a new tenant: the actor, or for an admin, who it names.
async fn resolve_owner(
    tx: &mut sqlx::SqliteConnection,
    actor: &Actor,
    owner: Option<&str>,
) -> Result<UserRow, ControlError> {
    let name = match owner {
        Some(o) if actor.is_admin() => o.to_owned(),
        Some(o) if o == actor.username => o.to_owned(),
        Some(_) => {
            return Err(ControlError::Forbidden(
                "only an admin may choose a tenant's owner".into(),
            ))
        }
        None => actor.username.clone(),
    };
    let owner = sqlx::query_as::<_, UserRow>(&format!("{} WHERE u.username = ?", UserRow::SELECT))
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await?;
    match owner {
        Some(o) if matches!(o.role, Role::Admin | Role::Reseller) => Ok(o),
        _ => Err(ControlError::refused(
            "owner",
            "must name an admin or a reseller",
        )),
    }
}

pub async fn create(
    ctl: &Control,
    actor: &Actor,
    input: NewTenant,
) -> Result<TenantRow, ControlError> {
    actor.require_tenant_manager("create tenants")?;
    let mut checks = Checks::new();
    let mut refusals = Vec::new();
    let name = match &input.name {
        Some(n) => checks.take("name", TenantName::parse(n)),
        None => {
            checks.push(FieldError::new("name", "is required"));
            None
        }
    };
    if let Some(n) = &name {
        if system_account_exists(n) {
            refusals.push(FieldError::new(
                "name",
                "is already a system account on this machine",
            ));
        }
    }
    let password = input
        .password
        .as_deref()
        .and_then(|p| checks.take("password", Password::parse(p)));
    let plan_name = match &input.plan {
        Some(p) => checks.take("plan", PlanName::parse(p)),
        None => {
            checks.push(FieldError::new("plan", "is required"));
            None
        }
    };
    check_owner_name(&mut checks, input.owner.as_deref());
    if let Some(php) = &input.php {
        checks.extend(PhpSettings::well_formed(php).err().unwrap_or_default());
    }
    checks.finish().map_err(ControlError::Invalid)?;
    if !refusals.is_empty() {
        return Err(ControlError::Refused(refusals));
    }
    let (name, plan_name) = (name.unwrap(), plan_name.unwrap());
    let hash = match &password {
        Some(p) => Some(password::hash(p.expose().to_owned()).await?),
        None => None,
    };

    let mut tx = ctl.store.begin().await?;
    let plan = plan_by_name(&mut tx, plan_name.as_str())
        .await?
        .ok_or_else(|| ControlError::refused("plan", "no such plan"))?;
    // Well-formed (checked above), so what the plan's bounds refuse is a conflict.
    let php = match &input.php {
        Some(map) => PhpSettings::parse(map, &plan.php_bounds()).map_err(ControlError::Refused)?,
        None => PhpSettings::default(),
    };
    let owner = resolve_owner(&mut tx, actor, input.owner.as_deref()).await?;
    check_reseller_limits(&mut tx, &owner, 1, plan.limits.php_max_children).await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = ?")
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_some() {
        return Err(ControlError::Conflict {
            field: "name",
            message: format!("a tenant named '{name}' exists"),
        });
    }
    let uid = reserve_uid(ctl, &mut tx, &name).await?;
    let generation = bump_generation(&mut tx).await?;
    let t = now();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tenants (name, owner_id, plan_id, state, uid, gid, php_settings, generation, created_at, updated_at)
         VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(name.as_str())
    .bind(owner.id)
    .bind(plan.id)
    .bind(uid as i64)
    .bind(uid as i64)
    .bind(Value::Object(php.to_json()).to_string())
    .bind(generation)
    .bind(t)
    .bind(t)
    .fetch_one(&mut *tx)
    .await
    .map_err(on_unique("name", format!("a tenant named '{name}' exists")))?;
    if let Some(hash) = &hash {
        let user_id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, role, password_hash, created_at, updated_at) VALUES (?, 'tenant', ?, ?, ?)
             RETURNING id",
        )
        .bind(name.as_str())
        .bind(hash)
        .bind(t)
        .bind(t)
        .fetch_one(&mut *tx)
        .await
        .map_err(on_unique("name", format!("a login named '{name}' exists")))?;
        sqlx::query("INSERT INTO tenant_logins (user_id, tenant_id) VALUES (?, ?)")
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    refresh_search_text(&mut tx, id).await?;
    let tenant = fetch(&mut tx, id).await?;
    AuditEntry::new(actor.audit(), "tenant.create", format!("tenant:{name}"))
        .after(tenant.json())
        .scope(Some(owner.id), Some(id))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(tenant)
}

async fn fetch(tx: &mut sqlx::SqliteConnection, id: i64) -> sqlx::Result<TenantRow> {
    sqlx::query_as::<_, TenantRow>(&format!("{} WHERE t.id = ?", TenantRow::SELECT))
        .bind(id)
        .fetch_one(tx)
        .await
}

/// Lowercased search text, or a rejection if it could not be part of a name or domain.
fn search_text(raw: &str) -> Result<String, ControlError> {
    let s = raw.trim().to_ascii_lowercase();
    if s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(ControlError::invalid(
            "q",
            "search by letters, digits, '.' and '-' only",
        ));
    }
    Ok(s)
}

pub async fn list(
    ctl: &Control,
    actor: &Actor,
    filter: &TenantFilter,
    page: &PageRequest,
) -> Result<Page<TenantRow>, ControlError> {
    let scope = actor.tenant_scope();
    let search = match filter.search.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(search_text(s)?),
        None => None,
    };
    let rows = sqlx::query_as::<_, TenantRow>(&format!(
        "{} WHERE (?1 IS NULL OR t.owner_id = ?1) AND (?2 IS NULL OR t.id = ?2) AND t.name > COALESCE(?3, '')
             AND (?4 IS NULL OR instr(t.search_text, ?4) > 0)
             AND (?5 IS NULL OR o.username = ?5)
         ORDER BY t.name LIMIT ?6",
        TenantRow::SELECT
    ))
    .bind(scope.owner_id)
    .bind(scope.tenant_id)
    .bind(page.after.as_deref())
    .bind(search.as_deref())
    .bind(filter.owner.as_deref())
    .bind(page.fetch())
    .fetch_all(&ctl.store.read)
    .await?;
    Ok(Page::from_rows(rows, page, |t| t.name.clone()))
}

/// The tenant named `name`, if the actor reaches it; otherwise "not found".
pub async fn get(ctl: &Control, actor: &Actor, name: &str) -> Result<TenantRow, ControlError> {
    sqlx::query_as::<_, TenantRow>(&format!("{} WHERE t.name = ?", TenantRow::SELECT))
        .bind(name)
        .fetch_optional(&ctl.store.read)
        .await?
        .filter(|t| actor.reaches_tenant(t.id, t.owner_id))
        .ok_or(ControlError::NotFound("tenant"))
}

pub async fn update(
    ctl: &Control,
    actor: &Actor,
    name: &str,
    patch: TenantPatch,
) -> Result<TenantRow, ControlError> {
    let before = get(ctl, actor, name).await?;
    if patch.plan.is_some() || patch.owner.is_some() {
        actor.require_tenant_manager("change a tenant's plan or owner")?;
    }
    if patch.owner.is_some() {
        actor.require_admin("move a tenant to another owner")?;
    }
    if patch.password.is_some() {
        // A tenant login changes its own password on its account, with the current one.
        actor.require_tenant_manager("reset a tenant's login password")?;
    }
    let mut checks = Checks::new();
    let password = patch
        .password
        .as_deref()
        .and_then(|p| checks.take("password", Password::parse(p)));
    let plan_name = patch
        .plan
        .as_deref()
        .and_then(|p| checks.take("plan", PlanName::parse(p)));
    check_owner_name(&mut checks, patch.owner.as_deref());
    if let Some(php) = &patch.php {
        checks.extend(PhpSettings::well_formed(php).err().unwrap_or_default());
    }
    checks.finish().map_err(ControlError::Invalid)?;
    let hash = match &password {
        Some(p) => Some(password::hash(p.expose().to_owned()).await?),
        None => None,
    };

    let mut tx = ctl.store.begin().await?;
    // The tenant as it is now, inside the transaction that writes: a change that raced
    // this one (another plan change, a create) must count for the reseller's limits.
    let before = fetch(&mut tx, before.id).await?;
    let plan = match &plan_name {
        Some(p) => plan_by_name(&mut tx, p.as_str())
            .await?
            .ok_or_else(|| ControlError::refused("plan", "no such plan"))?,
        None => plan_by_name(&mut tx, &before.plan)
            .await?
            .ok_or(ControlError::NotFound("plan"))?,
    };
    let bounds = plan.php_bounds();
    let mut php =
        PhpSettings::from_stored(&before.php_settings, &crate::domain::PhpBounds::UNBOUNDED)
            .unwrap_or_default();
    // Well-formed (checked above): what is refused now is above the plan, or a time zone
    // this machine does not know.
    if let Some(changes) = &patch.php {
        php.merge(changes, &bounds).map_err(ControlError::Refused)?;
    }
    if let Err(errors) = php.check_bounds(&bounds) {
        // The new plan is lower than the tenant's current settings.
        return Err(ControlError::Refused(errors));
    }
    let owner = match &patch.owner {
        Some(o) => resolve_owner(&mut tx, actor, Some(o)).await?,
        None => {
            sqlx::query_as::<_, UserRow>(&format!("{} WHERE u.id = ?", UserRow::SELECT))
                .bind(before.owner_id)
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let old_workers: i64 = if owner.id == before.owner_id {
        sqlx::query_scalar("SELECT php_max_children FROM plans WHERE id = ?")
            .bind(before.plan_id)
            .fetch_one(&mut *tx)
            .await?
    } else {
        0
    };
    check_reseller_limits(
        &mut tx,
        &owner,
        i64::from(owner.id != before.owner_id),
        plan.limits.php_max_children - old_workers,
    )
    .await?;

    let generation = bump_generation(&mut tx).await?;
    sqlx::query("UPDATE tenants SET plan_id = ?, owner_id = ?, php_settings = ?, generation = ?, updated_at = ? WHERE id = ?")
        .bind(plan.id)
        .bind(owner.id)
        .bind(Value::Object(php.to_json()).to_string())
        .bind(generation)
        .bind(now())
        .bind(before.id)
        .execute(&mut *tx)
        .await?;
    if let Some(hash) = &hash {
        set_login_password(&mut tx, &before, hash).await?;
    }
    let after = fetch(&mut tx, before.id).await?;
    let mut after_json = after.json();
    if hash.is_some() {
        after_json["password"] = Value::from("changed");
    }
    AuditEntry::new(actor.audit(), "tenant.update", format!("tenant:{name}"))
        .before(before.json())
        .after(after_json)
        .scope(Some(after.owner_id), Some(after.id))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(after)
}

/// Sets the tenant's login password, creating the login if it has none.
async fn set_login_password(
    tx: &mut sqlx::SqliteConnection,
    tenant: &TenantRow,
    hash: &str,
) -> Result<(), ControlError> {
    let t = now();
    let user_id: Option<i64> =
        sqlx::query_scalar("SELECT user_id FROM tenant_logins WHERE tenant_id = ?")
            .bind(tenant.id)
            .fetch_optional(&mut *tx)
            .await?;
    match user_id {
        Some(id) => {
            sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
                .bind(hash)
                .bind(t)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM api_tokens WHERE user_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users (username, role, password_hash, created_at, updated_at) VALUES (?, 'tenant', ?, ?, ?)
                 RETURNING id",
            )
            .bind(&tenant.name)
            .bind(hash)
            .bind(t)
            .bind(t)
            .fetch_one(&mut *tx)
            .await
            .map_err(on_unique("password", format!("a login named '{}' exists", tenant.name)))?;
            sqlx::query("INSERT INTO tenant_logins (user_id, tenant_id) VALUES (?, ?)")
                .bind(id)
                .bind(tenant.id)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

/// Suspends (`true`) or reactivates a tenant: the agent stops or restarts its pool and the
/// proxy answers its vhosts with a suspended page.
pub async fn set_suspended(
    ctl: &Control,
    actor: &Actor,
    name: &str,
    suspended: bool,
) -> Result<TenantRow, ControlError> {
    actor.require_tenant_manager(if suspended {
        "suspend tenants"
    } else {
        "unsuspend tenants"
    })?;
    let before = get(ctl, actor, name).await?;
    let state = if suspended {
        TenantState::Suspended
    } else {
        TenantState::Active
    };
    let mut tx = ctl.store.begin().await?;
    let generation = bump_generation(&mut tx).await?;
    sqlx::query("UPDATE tenants SET state = ?, generation = ?, updated_at = ? WHERE id = ?")
        .bind(state.as_str())
        .bind(generation)
        .bind(now())
        .bind(before.id)
        .execute(&mut *tx)
        .await?;
    let after = fetch(&mut tx, before.id).await?;
    AuditEntry::new(
        actor.audit(),
        if suspended {
            "tenant.suspend"
        } else {
            "tenant.unsuspend"
        },
        format!("tenant:{name}"),
    )
    .before(serde_json::json!({"state": before.state}))
    .after(serde_json::json!({"state": after.state}))
    .scope(Some(after.owner_id), Some(after.id))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes a tenant from the desired state. Its UID stays reserved and a removal record
/// tells the agent to stop the pool, archive the home and remove the user.
pub async fn delete(ctl: &Control, actor: &Actor, name: &str) -> Result<(), ControlError> {
    actor.require_tenant_manager("delete tenants")?;
    let tenant = get(ctl, actor, name).await?;
    let mut tx = ctl.store.begin().await?;
    let generation = bump_generation(&mut tx).await?;
    let t = now();
    sqlx::query("INSERT INTO tenant_removals (name, uid, gid, generation, removed_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&tenant.name)
        .bind(tenant.uid)
        .bind(tenant.gid)
        .bind(generation)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE uid_reservations SET released_at = ? WHERE uid = ?")
        .bind(t)
        .bind(tenant.uid)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM users WHERE id IN (SELECT user_id FROM tenant_logins WHERE tenant_id = ?)",
    )
    .bind(tenant.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM tenants WHERE id = ?")
        .bind(tenant.id)
        .execute(&mut *tx)
        .await?;
    AuditEntry::new(actor.audit(), "tenant.delete", format!("tenant:{name}"))
        .before(tenant.json())
        .scope(Some(tenant.owner_id), Some(tenant.id))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Counts for the overview page, within the actor's reach.
pub async fn counts(ctl: &Control, actor: &Actor) -> Result<Counts, ControlError> {
    let scope = actor.tenant_scope();
    let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*),
                COALESCE(SUM(t.state = 'suspended'), 0),
                COALESCE(SUM((SELECT COUNT(*) FROM vhosts v WHERE v.tenant_id = t.id)), 0),
                COALESCE(SUM(p.php_max_children), 0),
                COALESCE(SUM(a.state = 'error'), 0),
                COALESCE(SUM(a.state = 'ok' AND a.generation >= t.generation), 0)
         FROM tenants t JOIN plans p ON p.id = t.plan_id LEFT JOIN tenant_applied a ON a.tenant_id = t.id
         WHERE (?1 IS NULL OR t.owner_id = ?1) AND (?2 IS NULL OR t.id = ?2)",
    )
    .bind(scope.owner_id)
    .bind(scope.tenant_id)
    .fetch_one(&ctl.store.read)
    .await?;
    let resellers = if actor.role == Role::Admin {
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'reseller'")
            .fetch_one(&ctl.store.read)
            .await?
    } else {
        0
    };
    Ok(Counts {
        tenants: row.0,
        suspended: row.1,
        vhosts: row.2,
        php_workers: row.3,
        errors: row.4,
        applied: row.5,
        pending: row.0 - row.4 - row.5,
        resellers,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub tenants: i64,
    pub suspended: i64,
    pub vhosts: i64,
    pub php_workers: i64,
    /// Tenants the agent could not apply.
    pub errors: i64,
    /// Tenants whose last change the agent has applied.
    pub applied: i64,
    /// Tenants with a change the agent has not applied yet.
    pub pending: i64,
    pub resellers: i64,
}

/// A tenant's pool health as the agent last saw it, and the last hour's samples.
pub async fn health(
    ctl: &Control,
    actor: &Actor,
    name: &str,
) -> Result<(TenantRow, Option<HealthRow>, Vec<HealthSample>), ControlError> {
    let tenant = get(ctl, actor, name).await?;
    let current =
        sqlx::query_as::<_, HealthRow>(&format!("{} WHERE tenant_id = ?", HealthRow::SELECT))
            .bind(tenant.id)
            .fetch_optional(&ctl.store.read)
            .await?;
    let samples = sqlx::query_as::<_, HealthSample>(
        "SELECT at, active_processes, total_processes, listen_queue, memory_bytes FROM tenant_health_samples
         WHERE tenant_id = ? AND at >= ? ORDER BY at",
    )
    .bind(tenant.id)
    .bind(now() - 3600)
    .fetch_all(&ctl.store.read)
    .await?;
    Ok((tenant, current, samples))
}

/// The path of a tenant's PHP-FPM socket.
pub fn fpm_socket(ctl: &Control, tenant: &str) -> String {
    // The store holds checked names; one that does not parse names no socket.
    TenantName::parse(tenant)
        .map(|t| {
            ctl.config
                .run_dir
                .fpm_socket(&t)
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Recomputes the text a tenant is searched by: its name and its vhosts' host names. Called in
/// the transaction of every change to those names.
pub(crate) async fn refresh_search_text(
    tx: &mut sqlx::SqliteConnection,
    tenant_id: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE tenants SET search_text = name || ' ' || COALESCE(
             (SELECT group_concat(n.name, ' ') FROM vhosts v JOIN vhost_names n ON n.vhost_id = v.id
              WHERE v.tenant_id = tenants.id), '')
         WHERE id = ?",
    )
    .bind(tenant_id)
    .execute(tx)
    .await
    .map(|_| ())
}
