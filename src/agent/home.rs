//! A tenant's home: the directory layout, with ownership and modes set without ever
//! following a symlink.
//!
//! ```text
//! <tenants-root>/            root:root      0711  (no listing)
//!   <tenant>/                root:tenant    0751  the tenant lists it, the proxy passes
//!     sites/                 tenant:www     2750  docroots live here; new files get group www
//!       <domain>/public/     tenant:www     2750  (made when missing, as the tenant)
//!     logs/                  tenant:tenant  0750  PHP error and slow logs
//!     tmp/  sessions/        tenant:tenant  0700  uploads, temp files, PHP sessions
//! ```
//!
//! The home itself is root's (no group or other write): a tenant cannot rename, replace or
//! add what the agent keeps there, and it can be the root of the tenant's SFTP chroot, which
//! sshd wants root's. What lies below the tenant's own directories (a docroot in `sites/`)
//! the agent makes as the tenant ([`crate::nofollow::as_user`]): root never creates
//! anything in a directory a tenant can change.
//!
//! Every directory is reached with `openat(O_NOFOLLOW | O_DIRECTORY)` from its parent's
//! descriptor and changed through its own descriptor (`fchown`, `fchmod`), so a symlink the
//! tenant plants is never followed: an entry that is not a real directory is renamed aside
//! and a fresh directory made in its place. Nothing is ever chowned recursively.

use crate::contract::TenantsRoot;
use crate::domain::{DocRoot, TenantName};
use crate::nofollow::{ensure_dir, open_dir, set_owner_mode as set};
use anyhow::Context;
use nix::unistd::{Gid, Uid};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Who owns a tenant's files. `None` when the agent is not root (no ownership changes).
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub uid: Uid,
    pub gid: Gid,
    /// The proxy user's group, which may read the docroots.
    pub www_gid: Gid,
}

/// The directories of the layout below the home, with their group and mode.
const PRIVATE_DIRS: &[(&str, u32)] = &[("logs", 0o750), ("tmp", 0o700), ("sessions", 0o700)];
const SITES: &str = "sites";
const SHARED_MODE: u32 = 0o2750;
/// The home: the tenant (its group) lists it, anyone passes through (the proxy, to the
/// docroots below), nobody but root writes.
const HOME_MODE: u32 = 0o751;

/// Makes the home layout real and returns the home's path. Idempotent: run it on every
/// apply. `docroots` are made when missing (existing directories inside a docroot are the
/// tenant's own business and are left as they are).
pub fn ensure_home(
    tenants_root: &TenantsRoot,
    name: &TenantName,
    ids: Option<Ids>,
    docroots: &[DocRoot],
) -> anyhow::Result<PathBuf> {
    let root_path = tenants_root.path();
    std::fs::create_dir_all(root_path)
        .with_context(|| format!("creating {}", root_path.display()))?;
    let root =
        open_dir(None, root_path).with_context(|| format!("opening {}", root_path.display()))?;
    if ids.is_some() {
        // Tenants may pass through the root to their own home, but not list it.
        set(&root, Some((Uid::from_raw(0), Gid::from_raw(0))), 0o711)?;
    }
    let shared = ids.map(|i| (i.uid, i.www_gid));
    let private = ids.map(|i| (i.uid, i.gid));

    let (home, _) = ensure_dir(&root, name.as_str()).context("home")?;
    let home_owner = ids.map(|i| (Uid::from_raw(0), i.gid));
    set(&home, home_owner, HOME_MODE).context("home")?;
    for (dir, mode) in PRIVATE_DIRS {
        let (fd, _) = ensure_dir(&home, dir)?;
        set(&fd, private, *mode).with_context(|| dir.to_string())?;
    }
    let (sites, _) = ensure_dir(&home, SITES)?;
    set(&sites, shared, SHARED_MODE).context(SITES)?;
    if !docroots.is_empty() {
        make_docroots(home, docroots.to_vec(), ids)?;
    }
    Ok(tenants_root.home(name))
}

/// Walks each docroot from the home, making each missing directory (owned by the tenant,
/// group www, setgid) and leaving existing ones alone. The first segment is in the home,
/// root's: made by root. The rest are in the tenant's own directories: made as the tenant.
fn make_docroots(home: OwnedFd, docroots: Vec<DocRoot>, ids: Option<Ids>) -> anyhow::Result<()> {
    let shared = ids.map(|i| (i.uid, i.www_gid));
    let mut below = Vec::new();
    for docroot in &docroots {
        let mut segments = docroot.as_str().split('/');
        let first = segments.next().context("empty docroot")?;
        let (top, created) = ensure_dir(&home, first)?;
        if created || first == SITES {
            set(&top, shared, SHARED_MODE)?;
        }
        let rest: Vec<String> = segments.map(str::to_owned).collect();
        if !rest.is_empty() {
            below.push((top, rest, docroot.to_string()));
        }
    }
    let walk = move || -> anyhow::Result<()> {
        for (top, rest, docroot) in below {
            let mut current = top;
            for segment in &rest {
                let (next, created) =
                    ensure_dir(&current, segment).with_context(|| format!("docroot {docroot}"))?;
                if created {
                    // As the tenant: the owner is already the tenant, the group www.
                    set(&next, None, SHARED_MODE)?;
                }
                current = next;
            }
        }
        Ok(())
    };
    match ids {
        Some(i) => crate::nofollow::as_user(i.uid, i.www_gid, walk),
        None => walk(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_without_root_and_symlinks_moved_aside() {
        let base = std::env::temp_dir().join(format!("lodge-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = TenantsRoot::new(&base);
        let name = TenantName::parse("acme").unwrap();
        let docroot = DocRoot::parse("sites/acme.example/public").unwrap();
        let home = ensure_home(&root, &name, None, std::slice::from_ref(&docroot)).unwrap();
        assert!(home.join("sites/acme.example/public").is_dir());
        assert!(
            home.join("tmp").is_dir()
                && home.join("sessions").is_dir()
                && home.join("logs").is_dir()
        );

        // A symlink planted where a directory belongs is moved aside, its target untouched.
        let target = base.join("outside");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::remove_dir(home.join("logs")).unwrap();
        std::os::unix::fs::symlink(&target, home.join("logs")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_home(&root, &name, None, &[docroot]).unwrap();
        assert!(!home.join("logs").is_symlink() && home.join("logs").is_dir());
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
