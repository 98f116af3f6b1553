//! The audit log: who changed what, from where, before and after.

use serde::Serialize;
use serde_json::Value;
use sqlx::{Sqlite, Transaction};

/// Who made a change, and from where (a client address, or `cli`).
#[derive(Debug, Clone, Copy)]
pub struct AuditActor<'a> {
    pub username: &'a str,
    pub source: &'a str,
}

/// One change, recorded in the same transaction as the change itself.
#[derive(Debug)]
pub struct AuditEntry<'a> {
    pub actor: AuditActor<'a>,
    pub action: &'static str,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The admin or reseller who owns the target (what a reseller's audit view shows).
    pub scope_owner_id: Option<i64>,
    /// The tenant the target belongs to (what a tenant login's audit view shows).
    pub scope_tenant_id: Option<i64>,
}

impl<'a> AuditEntry<'a> {
    pub fn new(actor: AuditActor<'a>, action: &'static str, target: impl Into<String>) -> Self {
        Self {
            actor,
            action,
            target: target.into(),
            before: None,
            after: None,
            scope_owner_id: None,
            scope_tenant_id: None,
        }
    }

    pub fn before(mut self, v: impl Serialize) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }

    pub fn after(mut self, v: impl Serialize) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }

    pub fn scope(mut self, owner_id: Option<i64>, tenant_id: Option<i64>) -> Self {
        self.scope_owner_id = owner_id;
        self.scope_tenant_id = tenant_id;
        self
    }

    pub async fn record(self, tx: &mut Transaction<'static, Sqlite>) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, before, after, source, scope_owner_id, scope_tenant_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(super::now())
        .bind(self.actor.username)
        .bind(self.action)
        .bind(&self.target)
        .bind(self.before.map(|v| v.to_string()))
        .bind(self.after.map(|v| v.to_string()))
        .bind(self.actor.source)
        .bind(self.scope_owner_id)
        .bind(self.scope_tenant_id)
        .execute(&mut **tx)
        .await
        .map(|_| ())
    }
}
