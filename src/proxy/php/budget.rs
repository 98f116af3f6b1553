//! A budget shared by the request bodies the proxy holds (bytes in memory, bytes or files
//! spooled to disk): a total for the whole proxy, and a share per tenant, so that one
//! client (or every client of one site) cannot take it all. What a body holds is counted
//! as it grows and given back when the body is dropped.

use crate::domain::TenantName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A total and a per-tenant share of some unit (bytes, files).
pub struct Budget {
    total: u64,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    total: u64,
    tenants: HashMap<TenantName, u64>,
}

/// No room is left in the total or in the tenant's share.
#[derive(Debug, PartialEq, Eq)]
pub struct Short;

impl Budget {
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            total,
            used: Mutex::new(Used::default()),
        })
    }

    /// A holding of nothing yet for `tenant`, whose share is `share`.
    pub fn hold(self: &Arc<Self>, tenant: &TenantName, share: u64) -> Held {
        Held {
            budget: self.clone(),
            tenant: tenant.clone(),
            share,
            held: 0,
        }
    }

    /// What is held now, in all and by `tenant`.
    #[cfg(test)]
    pub fn used(&self, tenant: &TenantName) -> (u64, u64) {
        let used = self.lock();
        (used.total, used.tenants.get(tenant).copied().unwrap_or(0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one body holds of a budget; given back on drop.
pub struct Held {
    budget: Arc<Budget>,
    tenant: TenantName,
    share: u64,
    held: u64,
}

impl Held {
    /// Holds `n` more, if neither the total nor the tenant's share would be passed.
    pub fn grow(&mut self, n: u64) -> Result<(), Short> {
        let mut used = self.budget.lock();
        let total = used.total.saturating_add(n);
        let Used { tenants, .. } = &mut *used;
        let tenant = tenants.entry(self.tenant.clone()).or_insert(0);
        if total > self.budget.total || tenant.saturating_add(n) > self.share {
            if *tenant == 0 {
                tenants.remove(&self.tenant);
            }
            return Err(Short);
        }
        *tenant += n;
        used.total = total;
        self.held += n;
        Ok(())
    }

    /// What this body holds.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Gives everything back (the holding stays, empty).
    pub fn release(&mut self) {
        if self.held == 0 {
            return;
        }
        let mut used = self.budget.lock();
        used.total -= self.held;
        if let Some(t) = used.tenants.get_mut(&self.tenant) {
            *t -= self.held;
            if *t == 0 {
                used.tenants.remove(&self.tenant);
            }
        }
        self.held = 0;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantName {
        TenantName::parse(name).unwrap()
    }

    #[test]
    fn a_tenant_is_held_to_its_share_and_everyone_to_the_total() {
        let budget = Budget::new(100);
        let (a, b) = (tenant("alpha"), tenant("bravo"));
        let mut a1 = budget.hold(&a, 60);
        let mut a2 = budget.hold(&a, 60);
        a1.grow(40).unwrap();
        a2.grow(20).unwrap();
        // Alpha's share is used up; a refused request holds nothing more.
        assert_eq!(a2.grow(1), Err(Short));
        assert_eq!((a2.held(), budget.used(&a)), (20, (60, 60)));
        // Bravo still has the rest of the total, and no more.
        let mut b1 = budget.hold(&b, 60);
        b1.grow(40).unwrap();
        assert_eq!(b1.grow(1), Err(Short));
        // What a body gives back is there for the next.
        drop(a1);
        assert_eq!(budget.used(&a), (60, 20));
        b1.grow(20).unwrap();
        a2.release();
        drop(b1);
        assert_eq!(budget.used(&a), (0, 0));
        assert!(budget.lock().tenants.is_empty(), "no empty entry is left");
        // A request refused for a tenant that holds nothing leaves no entry behind.
        assert_eq!(budget.hold(&tenant("charlie"), 200).grow(101), Err(Short));
        assert!(budget.lock().tenants.is_empty());
    }
}
