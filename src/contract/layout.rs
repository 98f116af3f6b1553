//! Where things are under the run and log directories, built from checked names only. The
//! agent makes these paths, the proxy and the panel find them; nobody joins path segments by
//! hand.
//!
//! ```text
//! <run-dir>/                 root 0755
//!   agent.sock               the wake-up (the panel's user may write)
//!   proxy-metrics.sock       root:lodge 0660, the proxy serves its metrics here
//!   proxy-control.sock       root 0600, the agent tells the proxy to load a new snapshot
//!   panel-report.sock        root 0600, the agent reports to the panel
//!   routes.json              the routes snapshot
//!   fpm/<tenant>.sock        a tenant's PHP-FPM socket
//!   pools/<tenant>.conf|pid|log|slow.log   what the root master opens (root 0700)
//!   tls/                     certificates the proxy serves (root:lodge-www 0750)
//! <log-dir>/access/<tenant>/<domain>.log   access logs
//! ```

use crate::domain::{DomainName, TenantName, VhostId};
use std::path::{Path, PathBuf};

/// The runtime directory: sockets, pid files, pool files, the routes snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The wake-up socket the panel writes to after each change.
    pub fn agent_socket(&self) -> PathBuf {
        self.0.join("agent.sock")
    }

    /// Where the proxy serves its metrics to the panel.
    pub fn proxy_metrics(&self) -> PathBuf {
        self.0.join("proxy-metrics.sock")
    }

    /// Where the agent tells the proxy to load a new snapshot, and hears which it serves.
    pub fn proxy_control(&self) -> PathBuf {
        self.0.join("proxy-control.sock")
    }

    /// Where the agent reports to the panel (the panel is the only writer of the store).
    pub fn panel_report(&self) -> PathBuf {
        self.0.join("panel-report.sock")
    }

    /// The routes snapshot the agent publishes for the proxy.
    pub fn routes(&self) -> PathBuf {
        self.0.join("routes.json")
    }

    /// The directory of the tenants' PHP-FPM sockets.
    pub fn fpm_dir(&self) -> PathBuf {
        self.0.join("fpm")
    }

    pub fn fpm_socket(&self, tenant: &TenantName) -> PathBuf {
        self.fpm_dir().join(format!("{tenant}.sock"))
    }

    /// The directory of what each root master opens: pool files, pid files, master and slow
    /// logs. Root's alone: a master running as root must never open a path in a tenant's home.
    pub fn pools_dir(&self) -> PathBuf {
        self.0.join("pools")
    }

    pub fn pool_conf(&self, tenant: &TenantName) -> PathBuf {
        self.pools_dir().join(format!("{tenant}.conf"))
    }

    pub fn pool_pid(&self, tenant: &TenantName) -> PathBuf {
        self.pools_dir().join(format!("{tenant}.pid"))
    }

    pub fn pool_master_log(&self, tenant: &TenantName) -> PathBuf {
        self.pools_dir().join(format!("{tenant}.log"))
    }

    pub fn pool_slow_log(&self, tenant: &TenantName) -> PathBuf {
        self.pools_dir().join(format!("{tenant}.slow.log"))
    }

    /// The certificates and keys the proxy serves.
    pub fn tls_dir(&self) -> PathBuf {
        self.0.join("tls")
    }

    /// An uploaded certificate chain and key of a vhost. Named by the vhost's id, never by
    /// a name: no tenant can choose a domain whose files would be another vhost's.
    pub fn tls_custom(&self, vhost: VhostId) -> (PathBuf, PathBuf) {
        let dir = self.tls_dir();
        (
            dir.join(format!("{vhost}.crt")),
            dir.join(format!("{vhost}.key")),
        )
    }

    /// A vhost's self-signed certificate, key, and the names it was made for.
    pub fn tls_self_signed(&self, vhost: VhostId) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.tls_dir();
        (
            dir.join(format!("{vhost}.self.crt")),
            dir.join(format!("{vhost}.self.key")),
            dir.join(format!("{vhost}.self.names")),
        )
    }
}

/// The log directory: the proxy's access logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir(PathBuf);

impl LogDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The access logs' directory.
    pub fn access_dir(&self) -> PathBuf {
        self.0.join("access")
    }

    /// One tenant's access logs.
    pub fn tenant_access_dir(&self, tenant: &TenantName) -> PathBuf {
        self.access_dir().join(tenant.as_str())
    }

    /// A vhost's access log, by its primary domain.
    pub fn access_log(&self, tenant: &TenantName, domain: &DomainName) -> PathBuf {
        self.tenant_access_dir(tenant).join(format!("{domain}.log"))
    }
}

/// The parent of the tenants' homes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsRoot(PathBuf);

impl TenantsRoot {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn home(&self, tenant: &TenantName) -> PathBuf {
        self.0.join(tenant.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_checked_names() {
        let run = RunDir::new("/run/lodge");
        let acme = TenantName::parse("acme").unwrap();
        let shop = DomainName::parse("Shop.Example").unwrap();
        assert_eq!(run.fpm_socket(&acme), Path::new("/run/lodge/fpm/acme.sock"));
        assert_eq!(
            run.pool_conf(&acme),
            Path::new("/run/lodge/pools/acme.conf")
        );
        assert_eq!(run.routes(), Path::new("/run/lodge/routes.json"));
        assert_eq!(
            run.tls_custom(VhostId::new(7).unwrap()).0,
            Path::new("/run/lodge/tls/7.crt")
        );
        let logs = LogDir::new("/var/log/lodge");
        assert_eq!(
            logs.access_log(&acme, &shop),
            Path::new("/var/log/lodge/access/acme/shop.example.log")
        );
        assert_eq!(
            TenantsRoot::new("/srv/lodge/tenants").home(&acme),
            Path::new("/srv/lodge/tenants/acme")
        );
    }
}
