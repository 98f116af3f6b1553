//! Who may see and do what: the one place roles and ownership are decided.
//!
//! - An admin sees and does everything.
//! - A reseller sees and manages the tenants it owns (and their vhosts), within its limits.
//! - A tenant login sees its own tenant, edits its vhosts and PHP settings within its plan.
//!
//! An object outside an actor's reach is reported as absent (404), never as forbidden, so
//! nobody learns which names exist. An action a role may never take is 403.

use crate::domain::Role;
use crate::store::audit::AuditActor;

/// The authenticated account behind a request, and where the request came from.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    /// For a tenant login: the tenant it belongs to.
    pub tenant_id: Option<i64>,
    /// Client address (or `cli`), for the audit log.
    pub source: String,
    /// The digest of the dashboard session the request came with, if it came with one: a
    /// password change keeps it and ends the account's other sessions.
    pub session: Option<Vec<u8>>,
}

/// An action the actor's role may never take (the API answers 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// The tenants an actor can reach, as a filter for queries:
/// `(?owner IS NULL OR owner_id = ?owner) AND (?tenant IS NULL OR id = ?tenant)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantScope {
    pub owner_id: Option<i64>,
    pub tenant_id: Option<i64>,
}

impl Actor {
    /// The actor the command line acts as: an admin, recorded as `cli`.
    pub fn cli() -> Self {
        Self {
            user_id: 0,
            username: "cli".into(),
            role: Role::Admin,
            tenant_id: None,
            source: "cli".into(),
            session: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn tenant_scope(&self) -> TenantScope {
        match self.role {
            Role::Admin => TenantScope {
                owner_id: None,
                tenant_id: None,
            },
            Role::Reseller => TenantScope {
                owner_id: Some(self.user_id),
                tenant_id: None,
            },
            // A tenant login without its tenant reaches nothing: -1 matches no row.
            Role::Tenant => TenantScope {
                owner_id: None,
                tenant_id: Some(self.tenant_id.unwrap_or(-1)),
            },
        }
    }

    /// How the audit log names this actor.
    pub fn audit(&self) -> AuditActor<'_> {
        AuditActor {
            username: &self.username,
            source: &self.source,
        }
    }

    /// Whether a tenant owned by `owner_id` is within reach.
    pub fn reaches_tenant(&self, tenant_id: i64, owner_id: i64) -> bool {
        let scope = self.tenant_scope();
        scope.owner_id.is_none_or(|o| o == owner_id)
            && scope.tenant_id.is_none_or(|t| t == tenant_id)
    }

    /// Accounts: an admin reaches every account, anyone else only their own.
    pub fn reaches_user(&self, user_id: i64) -> bool {
        self.is_admin() || self.user_id == user_id
    }

    /// Admin-only actions: managing accounts and plans.
    pub fn require_admin(&self, what: &str) -> Result<(), Denied> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Denied(format!("only an admin may {what}")))
        }
    }

    /// Creating, suspending and deleting tenants: admins and resellers.
    pub fn require_tenant_manager(&self, what: &str) -> Result<(), Denied> {
        match self.role {
            Role::Admin | Role::Reseller => Ok(()),
            Role::Tenant => Err(Denied(format!("a tenant login may not {what}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, user_id: i64, tenant_id: Option<i64>) -> Actor {
        Actor {
            user_id,
            username: "x".into(),
            role,
            tenant_id,
            source: "test".into(),
            session: None,
        }
    }

    #[test]
    fn reach() {
        let admin = actor(Role::Admin, 1, None);
        let reseller = actor(Role::Reseller, 2, None);
        let tenant = actor(Role::Tenant, 3, Some(10));
        assert!(admin.reaches_tenant(10, 2));
        assert!(reseller.reaches_tenant(10, 2));
        assert!(!reseller.reaches_tenant(11, 1));
        assert!(tenant.reaches_tenant(10, 2));
        assert!(!tenant.reaches_tenant(11, 2));
        let orphan = actor(Role::Tenant, 4, None);
        assert!(!orphan.reaches_tenant(10, 2));
        assert!(admin.require_admin("x").is_ok());
        assert!(reseller.require_admin("x").is_err());
        assert!(tenant.require_tenant_manager("x").is_err());
    }
}
