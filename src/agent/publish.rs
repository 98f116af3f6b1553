//! What the agent publishes for the proxy: the routes snapshot, each vhost's certificate
//! and key as files the proxy's user may read (`<run-dir>/tls/`, root:lodge-www, 0640), and
//! the directory of each routed tenant's access logs.

use crate::config::Config;
use crate::contract::routes::{RouteEntry, Snapshot};
use crate::contract::RunDir;
use crate::domain::{
    DocRoot, DomainName, FrontController, RedirectWww, TenantName, TenantState, TlsMode, TlsPem,
    VhostId,
};
use crate::nofollow::{self, FileMode};
use crate::store::agent::{self as agent_store, VhostRecord};
use crate::store::StoreReader;
use anyhow::Context;
use nix::unistd::{Gid, Uid};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Builds the snapshot from the store (every value parsed again), writes the certificates it
/// names, makes the access log directories of its tenants, and publishes it when it changed.
/// Returns the snapshot's generation.
pub async fn routes(
    config: &Config,
    store: &StoreReader,
    www_gid: Option<Gid>,
    log_owners: Option<super::logs::Owners>,
) -> anyhow::Result<i64> {
    let generation = store.generation().await?;
    let records = agent_store::vhosts(store).await?;
    let tls_dir = config.run_dir.tls_dir();
    std::fs::create_dir_all(&tls_dir)?;
    if let Some(gid) = www_gid {
        nix::unistd::chown(&tls_dir, Some(Uid::from_raw(0)), Some(gid))?;
    }
    std::fs::set_permissions(&tls_dir, std::fs::Permissions::from_mode(0o750))?;

    let mut vhosts = Vec::with_capacity(records.len());
    for r in records {
        match entry(config, www_gid, r) {
            Ok(e) => vhosts.push(e),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "vhost left out of the routes"),
        }
    }
    // A vhost's log directory exists before the proxy learns the vhost.
    let tenants: std::collections::BTreeSet<TenantName> = vhosts
        .iter()
        .filter_map(|v| TenantName::parse(&v.tenant).ok())
        .collect();
    if let Err(e) = super::logs::ensure_tenants(&config.log_dir, &tenants, log_owners) {
        tracing::warn!(error = %format!("{e:#}"), "access log directories");
    }
    let snapshot = Snapshot { generation, vhosts };
    snapshot.publish(&config.run_dir, www_gid)?;
    remove_unused_certificates(&tls_dir, &snapshot);
    Ok(generation)
}

/// Removes every file in the certificate directory that no routed vhost uses (those of
/// deleted vhosts, of a mode a vhost left, of an entry left out): no key outlives its vhost.
fn remove_unused_certificates(tls_dir: &Path, snapshot: &Snapshot) {
    let mut keep = std::collections::HashSet::new();
    for v in &snapshot.vhosts {
        for path in [&v.tls_cert, &v.tls_key].into_iter().flatten() {
            keep.insert(path.clone());
            // A self-signed pair's sidecar goes with it.
            if let Some(stem) = path.to_str().and_then(|p| p.strip_suffix(".self.crt")) {
                keep.insert(PathBuf::from(format!("{stem}.self.names")));
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(tls_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !keep.contains(&path) {
            // The directory is root's (the proxy's group may only read it): nothing in it
            // was planted, and unlinking never follows a link.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "removing an unused certificate file");
            }
        }
    }
}

fn entry(config: &Config, www_gid: Option<Gid>, r: VhostRecord) -> anyhow::Result<RouteEntry> {
    let id = VhostId::new(r.id).map_err(|e| anyhow::anyhow!("vhost id {}: {e}", r.id))?;
    let domain =
        DomainName::parse(&r.domain).map_err(|e| anyhow::anyhow!("domain {:?}: {e}", r.domain))?;
    let tenant =
        TenantName::parse(&r.tenant).map_err(|e| anyhow::anyhow!("tenant {:?}: {e}", r.tenant))?;
    let docroot = DocRoot::parse(&r.docroot).map_err(|e| anyhow::anyhow!("docroot: {e}"))?;
    let front_controller = r
        .front_controller
        .as_deref()
        .map(FrontController::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("front controller: {e}"))?;
    let redirect_www = RedirectWww::parse(&r.redirect_www).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut names = Vec::new();
    for n in r
        .names
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|n| !n.is_empty())
    {
        names.push(
            DomainName::parse(n)
                .map_err(|e| anyhow::anyhow!("name {n:?}: {e}"))?
                .as_str()
                .to_owned(),
        );
    }
    names.sort();
    // The domain first: it names the self-signed certificate.
    names.retain(|n| n != domain.as_str());
    names.insert(0, domain.as_str().to_owned());
    let plan = r
        .plan
        .limits()
        .map_err(|e| anyhow::anyhow!("plan: {}", e.first().map_or("", |e| e.message.as_str())))?;
    let state = TenantState::parse(&r.state).map_err(|e| anyhow::anyhow!("state: {e}"))?;
    let tls_mode = TlsMode::parse(&r.tls_mode).map_err(|e| anyhow::anyhow!("TLS mode: {e}"))?;
    let (tls_cert, tls_key) = match tls_mode {
        TlsMode::SelfSigned => {
            let (cert, key) = self_signed_files(&config.run_dir, id, &names, www_gid)?;
            (Some(cert), Some(key))
        }
        TlsMode::Custom => {
            let cert = TlsPem::parse_chain(r.tls_cert_pem.as_deref().unwrap_or(""))
                .map_err(|e| anyhow::anyhow!("certificate: {e}"))?;
            let key = TlsPem::parse_key(r.tls_key_pem.as_deref().unwrap_or(""))
                .map_err(|e| anyhow::anyhow!("key: {e}"))?;
            let (cert_path, key_path) = config.run_dir.tls_custom(id);
            write_if_changed(&cert_path, cert.as_str(), www_gid)?;
            write_if_changed(&key_path, key.as_str(), www_gid)?;
            (Some(cert_path), Some(key_path))
        }
        TlsMode::None => (None, None),
    };
    Ok(RouteEntry {
        home: config.tenants_root.home(&tenant),
        docroot: config.tenants_root.home(&tenant).join(docroot.as_str()),
        socket: config.run_dir.fpm_socket(&tenant),
        domain: domain.as_str().to_owned(),
        names,
        tenant: tenant.as_str().to_owned(),
        php: r.php,
        front_controller: front_controller.map(|f| f.as_str().to_owned()),
        max_children: plan.max_children,
        suspended: state.is_suspended(),
        redirect_https: r.redirect_https,
        redirect_www: redirect_www.as_str().to_owned(),
        tls_cert,
        tls_key,
        body_limit_mb: plan.upload_max_mb,
    })
}

/// A self-signed certificate for the vhost's names, made once and again only when the
/// names change (a sidecar file remembers them).
fn self_signed_files(
    run_dir: &RunDir,
    vhost: VhostId,
    names: &[String],
    www_gid: Option<Gid>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path, names_path) = run_dir.tls_self_signed(vhost);
    let wanted = names.join(" ");
    let current = nofollow::read_to_string(&names_path).ok();
    if current.as_deref() != Some(wanted.as_str()) || !cert_path.exists() || !key_path.exists() {
        let (cert, key) =
            crate::certs::self_signed(names).context("making a self-signed certificate")?;
        write_if_changed(&key_path, &key, www_gid)?;
        write_if_changed(&cert_path, &cert, www_gid)?;
        write_if_changed(&names_path, &wanted, www_gid)?;
    }
    Ok((cert_path, key_path))
}

/// Writes `content` (root:www, 0640) beside the file and renames it into place, never
/// following a symlink, and only when it differs.
fn write_if_changed(path: &Path, content: &str, www_gid: Option<Gid>) -> anyhow::Result<()> {
    let mode = FileMode {
        mode: 0o640,
        owner: www_gid.map(|g| (Uid::from_raw(0), g)),
    };
    nofollow::replace_file(path, content.as_bytes(), mode)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
