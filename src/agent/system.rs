//! System accounts: lodge's own users and one user and group per tenant.
//!
//! `groupadd`, `useradd`, `userdel` and `groupdel` run as argument vectors, never through a
//! shell, and only ever with names that parsed as `TenantName` (or lodge's fixed names).

use crate::domain::TenantName;
use anyhow::{bail, Context};
use nix::unistd::{Gid, Group, Uid, User};
use std::path::Path;
use std::process::Command;

/// The panel's user: owns the store, cannot change the system.
pub const PANEL_USER: &str = "lodge";
/// The proxy's user: reads docroots, connects to the tenants' PHP sockets.
pub const PROXY_USER: &str = "lodge-www";

const NOLOGIN: &str = "/usr/sbin/nologin";

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates a system user (and its group) for lodge itself when missing: no home, no shell.
pub fn ensure_system_user(name: &str) -> anyhow::Result<User> {
    if let Some(user) = User::from_name(name)? {
        return Ok(user);
    }
    run(
        "useradd",
        &[
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            NOLOGIN,
            name,
        ],
    )?;
    User::from_name(name)?.with_context(|| format!("{name} missing after useradd"))
}

/// The tenant's group and user with exactly the reserved GID and UID, no login shell, the
/// given home (created by `home`, not by useradd). An existing account with other IDs is an
/// error, never adopted.
pub fn ensure_tenant_user(
    name: &TenantName,
    uid: u32,
    gid: u32,
    home: &Path,
) -> anyhow::Result<()> {
    let home = home.to_str().context("home path is not UTF-8")?;
    match Group::from_name(name.as_str())? {
        Some(g) if g.gid == Gid::from_raw(gid) => {}
        Some(g) => bail!("group {name} exists with GID {} instead of {gid}", g.gid),
        None => {
            if let Some(other) = Group::from_gid(Gid::from_raw(gid))? {
                bail!("GID {gid} already belongs to group {}", other.name);
            }
            run("groupadd", &["--gid", &gid.to_string(), name.as_str()])?;
        }
    }
    match User::from_name(name.as_str())? {
        Some(u) if u.uid == Uid::from_raw(uid) && u.gid == Gid::from_raw(gid) => Ok(()),
        Some(u) => bail!("user {name} exists with UID {} instead of {uid}", u.uid),
        None => {
            if let Some(other) = User::from_uid(Uid::from_raw(uid))? {
                bail!("UID {uid} already belongs to user {}", other.name);
            }
            run(
                "useradd",
                &[
                    "--uid",
                    &uid.to_string(),
                    "--gid",
                    &gid.to_string(),
                    "--no-create-home",
                    "--home-dir",
                    home,
                    "--shell",
                    NOLOGIN,
                    "--no-user-group",
                    // No subordinate IDs: a tenant never runs user namespaces, and 65,536 each
                    // would exhaust /etc/subuid long before the UID range.
                    "-K",
                    "SUB_UID_COUNT=0",
                    "-K",
                    "SUB_GID_COUNT=0",
                    name.as_str(),
                ],
            )
        }
    }
}

/// Removes the tenant's user and group, if they are still the ones lodge made (same IDs).
pub fn remove_tenant_user(name: &TenantName, uid: u32, gid: u32) -> anyhow::Result<()> {
    if let Some(u) = User::from_name(name.as_str())? {
        if u.uid != Uid::from_raw(uid) {
            bail!(
                "user {name} has UID {} instead of {uid}: not removing it",
                u.uid
            );
        }
        run("userdel", &[name.as_str()])?;
    }
    if let Some(g) = Group::from_name(name.as_str())? {
        if g.gid == Gid::from_raw(gid) {
            run("groupdel", &[name.as_str()])?;
        }
    }
    Ok(())
}
