//! The immutable lookup table the proxy builds from the routes snapshot the agent publishes
//! (`contract::routes`).
//!
//! The proxy parses every name and path again when it loads a snapshot: a snapshot is input,
//! and an entry that does not parse is left out (and logged), never half-used.

use crate::contract::routes::{RouteEntry, Snapshot};
use crate::domain::plan;
use crate::domain::{DomainName, RedirectWww, TenantName};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A vhost ready to serve: every value checked.
#[derive(Debug)]
pub struct Route {
    pub domain: DomainName,
    pub tenant: TenantName,
    pub docroot: PathBuf,
    /// The tenant's home and the docroot relative to it: the proxy opens the docroot from
    /// the home without following a symlink, since the tenant owns every directory between.
    pub home: PathBuf,
    pub docroot_rel: String,
    pub php: bool,
    pub front_controller: Option<String>,
    pub socket: PathBuf,
    pub max_children: u32,
    pub suspended: bool,
    pub redirect_https: bool,
    pub redirect_www: RedirectWww,
    pub body_limit: u64,
    /// Unique to this route for the process's life: the key of files kept open beneath its
    /// docroot.
    pub id: u64,
    /// This vhost's counts in the metrics, found on its first request.
    pub stats: std::sync::OnceLock<Arc<super::metrics::VhostStats>>,
}

static NEXT_ROUTE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How long an opened docroot is used before it is opened again from the home. A tenant
/// who deploys by replacing the docroot directory sees the new one within this time.
pub const DOCROOT_REOPEN: Duration = Duration::from_secs(1);

impl Route {
    /// The docroot directory, opened from the home without following a symlink (the tenant
    /// owns every directory between), and kept for [`DOCROOT_REOPEN`]: opening it walks
    /// several path components, which cost as much as serving a small file. Keeping it
    /// open is safe: whatever happens to the path later, lookups stay beneath the
    /// directory that was checked.
    pub fn open_docroot(&self) -> std::io::Result<Arc<OwnedFd>> {
        // Per thread, as the kept files are: each event loop keeps its own, untouched by
        // the others.
        let now = Instant::now();
        let kept = DOCROOTS.with(|d| {
            d.borrow()
                .get(&self.id)
                .filter(|(_, at)| now.duration_since(*at) < DOCROOT_REOPEN)
                .map(|(fd, _)| fd.clone())
        });
        if let Some(fd) = kept {
            return Ok(fd);
        }
        let fd = Arc::new(super::static_files::open_docroot_in_home(
            &self.home,
            &self.docroot_rel,
        )?);
        DOCROOTS.with(|d| {
            let mut d = d.borrow_mut();
            if d.len() >= DOCROOTS_SWEEP {
                // Expired ones (routes of older tables among them) are closed.
                d.retain(|_, (_, at)| now.duration_since(*at) < DOCROOT_REOPEN);
            }
            d.insert(self.id, (fd.clone(), now));
        });
        Ok(fd)
    }
}

/// Docroots kept open by a thread past which the expired ones are closed on each open.
const DOCROOTS_SWEEP: usize = 64;

thread_local! {
    /// Docroots opened by this thread, by route id, with when they were opened.
    static DOCROOTS: std::cell::RefCell<HashMap<u64, (Arc<OwnedFd>, Instant)>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Host name → route, immutable; a new snapshot builds a new table that is swapped in whole.
#[derive(Debug, Default)]
pub struct Table {
    pub generation: i64,
    by_name: HashMap<String, Arc<Route>>,
}

impl Table {
    pub fn build(snapshot: &Snapshot) -> (Table, Vec<String>) {
        let mut by_name = HashMap::new();
        let mut problems = Vec::new();
        for entry in &snapshot.vhosts {
            match check(entry) {
                Ok(route) => {
                    let route = Arc::new(route);
                    for name in &entry.names {
                        match DomainName::parse(name) {
                            Ok(n) => {
                                by_name.insert(n.as_str().to_owned(), route.clone());
                            }
                            Err(e) => {
                                problems.push(format!("{}: alias {name:?}: {e}", entry.domain))
                            }
                        }
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", entry.domain)),
            }
        }
        (
            Table {
                generation: snapshot.generation,
                by_name,
            },
            problems,
        )
    }

    /// The route for a Host header (port, case and a trailing dot ignored).
    pub fn lookup(&self, host: &str) -> Option<&Arc<Route>> {
        self.by_name.get(&*super::host::name_of(host))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every vhost once, by primary domain (the table holds a vhost under each of its names).
    pub fn vhosts(&self) -> std::collections::BTreeMap<&str, &Arc<Route>> {
        self.by_name
            .values()
            .map(|r| (r.domain.as_str(), r))
            .collect()
    }
}

fn check(e: &RouteEntry) -> Result<Route, String> {
    let domain = DomainName::parse(&e.domain).map_err(|x| x.to_string())?;
    let tenant = TenantName::parse(&e.tenant).map_err(|x| x.to_string())?;
    if !e.docroot.is_absolute()
        || e.docroot
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err("docroot is not an absolute, normalised path".into());
    }
    let docroot_rel = e
        .docroot
        .strip_prefix(&e.home)
        .ok()
        .and_then(|r| r.to_str())
        .filter(|r| !r.is_empty())
        .ok_or("docroot is not inside the tenant's home")?;
    let docroot_rel = crate::domain::DocRoot::parse(docroot_rel)
        .map_err(|x| x.to_string())?
        .as_str()
        .to_owned();
    if !e.socket.is_absolute() {
        return Err("socket is not an absolute path".into());
    }
    for (bound, value) in [
        (plan::PHP_MAX_CHILDREN, e.max_children),
        (plan::PHP_UPLOAD_MAX_MB, e.body_limit_mb),
    ] {
        bound
            .check(i64::from(value))
            .map_err(|x| format!("{}: {}", x.field, x.message))?;
    }
    let front_controller = match &e.front_controller {
        Some(fc) => Some(
            crate::domain::FrontController::parse(fc)
                .map_err(|x| x.to_string())?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    Ok(Route {
        domain,
        tenant,
        docroot: e.docroot.clone(),
        home: e.home.clone(),
        docroot_rel,
        php: e.php,
        front_controller,
        socket: e.socket.clone(),
        max_children: e.max_children,
        suspended: e.suspended,
        id: NEXT_ROUTE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        stats: Default::default(),
        redirect_https: e.redirect_https,
        redirect_www: RedirectWww::parse(&e.redirect_www).map_err(|x| x.to_string())?,
        body_limit: u64::from(e.body_limit_mb) * 1024 * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(domain: &str) -> RouteEntry {
        RouteEntry {
            domain: domain.into(),
            names: vec![domain.into(), format!("www.{domain}")],
            tenant: "acme".into(),
            home: "/srv/lodge/tenants/acme".into(),
            docroot: "/srv/lodge/tenants/acme/sites/x/public".into(),
            php: true,
            front_controller: Some("/index.php".into()),
            socket: "/run/lodge/fpm/acme.sock".into(),
            max_children: 5,
            suspended: false,
            redirect_https: false,
            redirect_www: "none".into(),
            tls_cert: None,
            tls_key: None,
            body_limit_mb: 64,
        }
    }

    #[test]
    fn lookup_by_name_alias_and_port() {
        let snapshot = Snapshot {
            generation: 3,
            vhosts: vec![entry("acme.example"), entry("bad_name.example")],
        };
        let (table, problems) = Table::build(&snapshot);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(table.lookup("acme.example").is_some());
        assert!(table.lookup("WWW.Acme.Example:8080").is_some());
        assert!(table.lookup("acme.example.").is_some());
        assert!(table.lookup("other.example").is_none());
        assert!(table.lookup("bad_name.example").is_none());
        assert_eq!(
            table.vhosts().keys().copied().collect::<Vec<_>>(),
            ["acme.example"]
        );
    }

    #[test]
    fn refuses_relative_or_climbing_paths() {
        let mut e = entry("acme.example");
        e.docroot = "/srv/../etc".into();
        assert!(check(&e).is_err());
        e.docroot = "relative".into();
        assert!(check(&e).is_err());
        e.docroot = "/srv/lodge/tenants/other/sites/x/public".into();
        assert!(check(&e).is_err(), "a docroot outside the home");
    }
}
