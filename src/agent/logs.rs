//! The access logs' directories: the proxy writes them, the panel reads them, no tenant
//! reaches any of them.
//!
//! ```text
//! <log-dir>/access/          root:root        0711  (no listing)
//!   <tenant>/                lodge-www:lodge  2750  made before the tenant's vhosts are routed
//!     <domain>.log           lodge-www:lodge  0640  made by the proxy (setgid: group lodge)
//! ```
//!
//! Each tenant directory is reached with `openat(O_NOFOLLOW)` from `access/` and changed
//! through its own descriptor, like the homes: nothing here ever follows a symlink.

use crate::contract::LogDir;
use crate::domain::TenantName;
use crate::nofollow::{ensure_dir, open_dir, set_owner_mode as set};
use anyhow::Context;
use nix::unistd::{Gid, Uid};

/// Who owns the tenant directories (root only).
#[derive(Debug, Clone, Copy)]
pub struct Owners {
    /// The proxy's user, which creates the files.
    pub proxy: Uid,
    /// The panel's group, which reads them.
    pub panel: Gid,
}

const TENANT_DIR_MODE: u32 = 0o2750;

/// Makes `<log-dir>/access/` (root's, 0711, when privileged). A log directory made here is
/// 0755 whatever the umask; an existing one is left as it is, with a warning if the proxy and
/// the panel could not pass through it.
pub fn prepare(log_dir: &LogDir, privileged: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (access, log_dir) = (log_dir.access_dir(), log_dir.path());
    match std::fs::metadata(log_dir) {
        Ok(meta) if privileged && meta.permissions().mode() & 0o001 == 0 => tracing::warn!(
            dir = %log_dir.display(),
            "the log directory is closed to others: the proxy cannot write access logs"
        ),
        Ok(_) => {}
        Err(_) => {
            std::fs::create_dir_all(log_dir)
                .with_context(|| format!("creating {}", log_dir.display()))?;
            std::fs::set_permissions(log_dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", log_dir.display()))?;
        }
    }
    std::fs::create_dir_all(&access).with_context(|| format!("creating {}", access.display()))?;
    let fd = open_dir(None, &access).with_context(|| format!("opening {}", access.display()))?;
    let root = privileged.then(|| (Uid::from_raw(0), Gid::from_raw(0)));
    set(&fd, root, 0o711).context("access log directory")
}

/// Makes the tenants' directories under `access/`, owned and moded as above. Idempotent.
pub fn ensure_tenants<'a>(
    log_dir: &LogDir,
    tenants: impl IntoIterator<Item = &'a TenantName>,
    owners: Option<Owners>,
) -> anyhow::Result<()> {
    let access = log_dir.access_dir();
    let parent =
        open_dir(None, &access).with_context(|| format!("opening {}", access.display()))?;
    for tenant in tenants {
        let (fd, _) = ensure_dir(&parent, tenant.as_str())?;
        set(&fd, owners.map(|o| (o.proxy, o.panel)), TENANT_DIR_MODE)
            .with_context(|| format!("access logs of {tenant}"))?;
    }
    Ok(())
}

/// Removes a deleted tenant's logs, so that a tenant made later with the same name does not
/// see them. Never follows a symlink inside.
pub fn remove_tenant(log_dir: &LogDir, tenant: &TenantName) -> anyhow::Result<()> {
    let dir = log_dir.tenant_access_dir(tenant);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tenant_directories_are_made_and_removed() {
        let path = std::env::temp_dir().join(format!("lodge-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let base = LogDir::new(&path);
        prepare(&base, false).unwrap();
        let acme = TenantName::parse("acme").unwrap();
        ensure_tenants(&base, [&acme], None).unwrap();
        let dir = base.tenant_access_dir(&acme);
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o2750);
        assert_eq!(mode(&base.access_dir()), 0o711);

        // A symlink where the directory belongs is moved aside, its target untouched.
        let outside = path.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, &dir).unwrap();
        ensure_tenants(&base, [&acme], None).unwrap();
        assert!(!dir.is_symlink() && dir.is_dir());
        assert_eq!(mode(&outside), 0o755);

        std::fs::write(dir.join("acme.example.log"), "x\n").unwrap();
        remove_tenant(&base, &acme).unwrap();
        assert!(!dir.exists());
        remove_tenant(&base, &acme).unwrap();
        let _ = std::fs::remove_dir_all(&path);
    }
}
