//! Accounts: admins, resellers (with their limits) and tenant logins.

use super::{on_unique, Control, ControlError, Page, PageRequest};
use crate::domain::{Checks, FieldError, Password, Role, TenantName, Username};
use crate::panel::auth::{password, totp};
use crate::panel::policy::Actor;
use crate::store::rows::UserRow;
use crate::store::{bump_generation, now, AuditEntry};
use serde::Deserialize;
use serde_json::json;

/// A reseller's limits. `None` means no limit.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_tenants: Option<i64>,
    pub max_vhosts: Option<i64>,
    pub max_php_workers: Option<i64>,
}

impl Limits {
    fn check(&self, checks: &mut Checks) {
        for (field, value) in [
            ("limits.max_tenants", self.max_tenants),
            ("limits.max_vhosts", self.max_vhosts),
            ("limits.max_php_workers", self.max_php_workers),
        ] {
            if value.is_some_and(|v| !(0..=1_000_000).contains(&v)) {
                checks.push(FieldError::new(field, "must be between 0 and 1000000"));
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: Option<String>,
    pub password: Option<String>,
    pub role: Option<String>,
    pub limits: Option<Limits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub password: Option<String>,
    /// Needed when changing one's own password.
    pub current_password: Option<String>,
    pub limits: Option<Limits>,
}

fn required<'a>(checks: &mut Checks, field: &str, value: &'a Option<String>) -> Option<&'a str> {
    match value.as_deref() {
        Some(v) => Some(v),
        None => {
            checks.push(FieldError::new(field, "is required"));
            None
        }
    }
}

pub async fn create(ctl: &Control, actor: &Actor, input: NewUser) -> Result<UserRow, ControlError> {
    actor.require_admin("create accounts")?;
    let mut checks = Checks::new();
    let username = required(&mut checks, "username", &input.username)
        .and_then(|u| checks.take("username", Username::parse(u)));
    let password = required(&mut checks, "password", &input.password)
        .and_then(|p| checks.take("password", Password::parse(p)));
    let role = required(&mut checks, "role", &input.role)
        .and_then(|r| checks.take("role", Role::parse(r)));
    let limits = input.limits.unwrap_or_default();
    limits.check(&mut checks);
    if role.is_some_and(|r| r != Role::Reseller) && input.limits.is_some() {
        checks.push(FieldError::new("limits", "only resellers have limits"));
    }
    // A tenant login is named after its tenant.
    let tenant_name = match (role, &username) {
        (Some(Role::Tenant), Some(u)) => checks.take("username", TenantName::parse(u.as_str())),
        _ => None,
    };
    checks.finish().map_err(ControlError::Invalid)?;
    let (username, password, role) = (username.unwrap(), password.unwrap(), role.unwrap());

    let hash = password::hash(password.expose().to_owned()).await?;
    let mut tx = ctl.store.begin().await?;
    let tenant_id = match &tenant_name {
        Some(name) => {
            let found: Option<i64> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            Some(found.ok_or_else(|| {
                ControlError::refused(
                    "username",
                    "a tenant login must be named after an existing tenant",
                )
            })?)
        }
        None => None,
    };
    let t = now();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (username, role, password_hash, max_tenants, max_vhosts, max_php_workers, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(username.as_str())
    .bind(role.as_str())
    .bind(&hash)
    .bind(limits.max_tenants)
    .bind(limits.max_vhosts)
    .bind(limits.max_php_workers)
    .bind(t)
    .bind(t)
    .fetch_one(&mut *tx)
    .await
    .map_err(on_unique("username", format!("the user name '{username}' is taken")))?;
    if let Some(tenant_id) = tenant_id {
        sqlx::query("INSERT INTO tenant_logins (user_id, tenant_id) VALUES (?, ?)")
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(on_unique(
                "username",
                "that tenant already has a login".into(),
            ))?;
    }
    let user = fetch_by_id(&mut tx, id).await?;
    bump_generation(&mut tx).await?;
    AuditEntry::new(actor.audit(), "user.create", format!("user:{username}"))
        .after(user.json())
        .scope(None, tenant_id)
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(user)
}

async fn fetch_by_id(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    id: i64,
) -> sqlx::Result<UserRow> {
    sqlx::query_as::<_, UserRow>(&format!("{} WHERE u.id = ?", UserRow::SELECT))
        .bind(id)
        .fetch_one(&mut **tx)
        .await
}

pub async fn list(
    ctl: &Control,
    actor: &Actor,
    page: &PageRequest,
    role: Option<Role>,
) -> Result<Page<UserRow>, ControlError> {
    let rows = sqlx::query_as::<_, UserRow>(&format!(
        "{} WHERE (?1 IS NULL OR u.id = ?1) AND (?2 IS NULL OR u.role = ?2) AND u.username > COALESCE(?3, '')
         ORDER BY u.username LIMIT ?4",
        UserRow::SELECT
    ))
    .bind(if actor.is_admin() { None } else { Some(actor.user_id) })
    .bind(role.map(Role::as_str))
    .bind(page.after.as_deref())
    .bind(page.fetch())
    .fetch_all(&ctl.store.read)
    .await?;
    Ok(Page::from_rows(rows, page, |u| u.username.clone()))
}

pub async fn get(ctl: &Control, actor: &Actor, username: &str) -> Result<UserRow, ControlError> {
    let user = sqlx::query_as::<_, UserRow>(&format!("{} WHERE u.username = ?", UserRow::SELECT))
        .bind(username)
        .fetch_optional(&ctl.store.read)
        .await?
        .filter(|u| actor.reaches_user(u.id))
        .ok_or(ControlError::NotFound("user"))?;
    Ok(user)
}

pub async fn update(
    ctl: &Control,
    actor: &Actor,
    username: &str,
    patch: UserPatch,
) -> Result<UserRow, ControlError> {
    let before = get(ctl, actor, username).await?;
    let own = before.id == actor.user_id;
    let mut checks = Checks::new();
    let password = patch
        .password
        .as_deref()
        .and_then(|p| checks.take("password", Password::parse(p)));
    if let Some(limits) = &patch.limits {
        limits.check(&mut checks);
    }
    checks.finish().map_err(ControlError::Invalid)?;
    if patch.limits.is_some() {
        actor.require_admin("change a reseller's limits")?;
        if before.role != Role::Reseller {
            return Err(ControlError::refused(
                "limits",
                "only resellers have limits",
            ));
        }
    }
    let hash = match &password {
        Some(p) => {
            // Changing one's own password takes the current one; an admin may reset others'.
            if own || !actor.is_admin() {
                let current = patch.current_password.clone().unwrap_or_default();
                if !password::verify(current, before.password_hash.clone()).await {
                    return Err(ControlError::refused(
                        "current_password",
                        "is not your current password",
                    ));
                }
            }
            Some(password::hash(p.expose().to_owned()).await?)
        }
        None => None,
    };
    let limits = patch.limits.unwrap_or(Limits {
        max_tenants: before.max_tenants,
        max_vhosts: before.max_vhosts,
        max_php_workers: before.max_php_workers,
    });
    let mut tx = ctl.store.begin().await?;
    sqlx::query(
        "UPDATE users SET password_hash = COALESCE(?, password_hash), max_tenants = ?, max_vhosts = ?,
             max_php_workers = ?, updated_at = ? WHERE id = ?",
    )
    .bind(hash.as_deref())
    .bind(limits.max_tenants)
    .bind(limits.max_vhosts)
    .bind(limits.max_php_workers)
    .bind(now())
    .bind(before.id)
    .execute(&mut *tx)
    .await?;
    if hash.is_some() {
        // A new password ends every API token and every dashboard session made with the old
        // one, whichever way it was changed; only the session the change came with stays.
        sqlx::query("DELETE FROM api_tokens WHERE user_id = ?")
            .bind(before.id)
            .execute(&mut *tx)
            .await?;
        let keep = actor.session.clone().filter(|_| own).unwrap_or_default();
        sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id_hash != ?")
            .bind(before.id)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
    }
    let after = fetch_by_id(&mut tx, before.id).await?;
    bump_generation(&mut tx).await?;
    let mut after_json = after.json();
    if hash.is_some() {
        after_json["password"] = json!("changed");
    }
    AuditEntry::new(actor.audit(), "user.update", format!("user:{username}"))
        .before(before.json())
        .after(after_json)
        .scope(None, after.tenant_id)
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn delete(ctl: &Control, actor: &Actor, username: &str) -> Result<(), ControlError> {
    actor.require_admin("delete accounts")?;
    let user = get(ctl, actor, username).await?;
    if user.id == actor.user_id {
        return Err(ControlError::Conflict {
            field: "username",
            message: "you cannot delete your own account".into(),
        });
    }
    let mut tx = ctl.store.begin().await?;
    let owned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE owner_id = ?")
        .bind(user.id)
        .fetch_one(&mut *tx)
        .await?;
    if owned > 0 {
        return Err(ControlError::Conflict {
            field: "username",
            message: format!("'{username}' still owns {owned} tenants; move or delete them first"),
        });
    }
    if user.role == Role::Admin {
        let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
            .fetch_one(&mut *tx)
            .await?;
        if admins <= 1 {
            return Err(ControlError::Conflict {
                field: "username",
                message: "the last admin cannot be deleted".into(),
            });
        }
    }
    sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    bump_generation(&mut tx).await?;
    AuditEntry::new(actor.audit(), "user.delete", format!("user:{username}"))
        .before(user.json())
        .scope(None, user.tenant_id)
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A change of an account's second factor. Either way it takes a current code: turning it
/// on, one of the new secret (the person holds it); turning it off, one of the secret in use
/// (a stolen session alone cannot). A second factor already on is not replaced: it is turned
/// off first.
#[derive(Debug, Clone, Copy)]
pub enum TotpChange<'a> {
    On { secret: &'a str, code: &'a str },
    Off { code: &'a str },
}

pub async fn set_totp(
    ctl: &Control,
    actor: &Actor,
    change: TotpChange<'_>,
) -> Result<(), ControlError> {
    let mut tx = ctl.store.begin().await?;
    let current: Option<String> = sqlx::query_scalar("SELECT totp_secret FROM users WHERE id = ?")
        .bind(actor.user_id)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
    let (secret, step) = match change {
        TotpChange::On { secret, code } => {
            if current.is_some() {
                return Err(ControlError::Conflict {
                    field: "secret",
                    message:
                        "two-factor sign-in is on already; turn it off first, with a current code"
                            .into(),
                });
            }
            if !totp::is_secret(secret) {
                return Err(ControlError::invalid(
                    "secret",
                    "is not a secret lodge made",
                ));
            }
            let step = totp::verify(secret, code).ok_or_else(|| {
                ControlError::invalid("code", "does not match; check the time on your device")
            })?;
            (Some(secret.to_owned()), step)
        }
        TotpChange::Off { code } => {
            let Some(current) = current else {
                return Err(ControlError::Conflict {
                    field: "code",
                    message: "two-factor sign-in is off".into(),
                });
            };
            let step = totp::verify(&current, code)
                .ok_or_else(|| ControlError::invalid("code", "is not the current code"))?;
            (None, step)
        }
    };
    // The code is used up, whichever way it went.
    if !totp::accept(&mut *tx, actor.user_id, step).await? {
        return Err(ControlError::invalid(
            "code",
            "was used already; wait for the next one",
        ));
    }
    sqlx::query("UPDATE users SET totp_secret = ?, updated_at = ? WHERE id = ?")
        .bind(&secret)
        .bind(now())
        .bind(actor.user_id)
        .execute(&mut *tx)
        .await?;
    bump_generation(&mut tx).await?;
    let action = if secret.is_some() {
        "user.totp_enable"
    } else {
        "user.totp_disable"
    };
    AuditEntry::new(actor.audit(), action, format!("user:{}", actor.username))
        .scope(None, actor.tenant_id)
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Creates an account from the command line (how the first admin is made).
pub async fn create_from_cli(
    ctl: &Control,
    username: &str,
    role: &str,
    password: &str,
) -> Result<UserRow, ControlError> {
    let input = NewUser {
        username: Some(username.to_owned()),
        password: Some(password.to_owned()),
        role: Some(role.to_owned()),
        limits: None,
    };
    create(ctl, &Actor::cli(), input).await
}

/// Whether any admin exists yet (to tell a new installation how to make one).
pub async fn has_admin(ctl: &Control) -> Result<bool, ControlError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
        .fetch_one(&ctl.store.read)
        .await?;
    Ok(n > 0)
}
