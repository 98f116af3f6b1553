//! The states a tenant is in: what the panel asked for, and what the agent made of it.

use super::text_enum::text_enum;

text_enum! {
    /// Whether a tenant's sites serve: what an admin or reseller set.
    pub enum TenantState {
        Active = "active",
        /// Its sites answer 503 and its PHP master is stopped.
        Suspended = "suspended",
    }
}

impl TenantState {
    pub fn is_suspended(self) -> bool {
        self == TenantState::Suspended
    }
}

text_enum! {
    /// What the agent reports of a tenant: `ok` once it applied the tenant's current
    /// generation and the proxy serves it, `error` when the last apply failed, `pending`
    /// until then.
    pub enum AppliedState {
        Ok = "ok",
        Pending = "pending",
        Error = "error",
    }
}
