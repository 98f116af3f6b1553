//! Reading the audit log, within the actor's reach: an admin reads everything, a reseller
//! what concerns its tenants and its own account, a tenant login what concerns its tenant.

use super::{Control, ControlError, Page, PageRequest};
use crate::domain::Role;
use crate::panel::policy::Actor;
use crate::store::rows::AuditRow;

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// A target such as `tenant:acme`, or a prefix of one ending in `:` (`vhost:`).
    pub target: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

pub async fn list(
    ctl: &Control,
    actor: &Actor,
    filter: &AuditFilter,
    page: &PageRequest,
) -> Result<Page<AuditRow>, ControlError> {
    let after: Option<i64> = match page.after.as_deref() {
        Some(a) => Some(
            a.parse()
                .map_err(|_| ControlError::invalid("after", "is not a cursor lodge gave out"))?,
        ),
        None => None,
    };
    let (owner, tenant) = match actor.role {
        Role::Admin => (None, None),
        Role::Reseller => (Some(actor.user_id), None),
        Role::Tenant => (None, Some(actor.tenant_id.unwrap_or(-1))),
    };
    let (target_exact, target_prefix) = match filter.target.as_deref() {
        Some(t) if t.ends_with(':') => (None, Some(t.to_owned())),
        Some(t) => (Some(t.to_owned()), None),
        None => (None, None),
    };
    let rows = sqlx::query_as::<_, AuditRow>(
        "SELECT id, at, actor, action, target, before, after, source FROM audit_log
         WHERE (?1 IS NULL OR scope_owner_id = ?1 OR actor = ?2)
           AND (?3 IS NULL OR scope_tenant_id = ?3)
           AND (?4 IS NULL OR actor = ?4)
           AND (?5 IS NULL OR target = ?5)
           AND (?6 IS NULL OR substr(target, 1, length(?6)) = ?6)
           AND (?7 IS NULL OR at >= ?7)
           AND (?8 IS NULL OR at <= ?8)
           AND id < COALESCE(?9, 9223372036854775807)
         ORDER BY id DESC LIMIT ?10",
    )
    .bind(owner)
    .bind(&actor.username)
    .bind(tenant)
    .bind(filter.actor.as_deref())
    .bind(target_exact)
    .bind(target_prefix)
    .bind(filter.since)
    .bind(filter.until)
    .bind(after)
    .bind(page.fetch())
    .fetch_all(&ctl.store.read)
    .await?;
    Ok(Page::from_rows(rows, page, |r| r.id.to_string()))
}
