//! Settings: each one a flag, an environment variable `LODGE_<NAME>` and a key in the optional
//! TOML file given by `--config`. A flag beats the environment, which beats the file, which
//! beats the default.

use crate::contract::{LogDir, RunDir, TenantsRoot};
use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The settings as given on the command line or in the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingArgs {
    /// TOML file with any of the settings below (keys as the flags, with underscores)
    #[arg(long, env = "LODGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory of the store (`lodge.db`) [default: /var/lib/lodge as root, ./lodge-data otherwise]
    #[arg(long, env = "LODGE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The agent's own files, root's alone: archives of deleted tenants [default: beside the data directory, <data-dir>-agent]
    #[arg(long, env = "LODGE_AGENT_DIR", global = true)]
    pub agent_dir: Option<PathBuf>,
    /// Address the panel listens on; port 0 picks a free port [default: 127.0.0.1:8080]
    #[arg(long, env = "LODGE_PANEL_LISTEN", global = true)]
    pub panel_listen: Option<SocketAddr>,
    /// The panel's public URL; an https:// URL marks session cookies Secure
    #[arg(long, env = "LODGE_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Range tenant UIDs and GIDs are reserved from, as FIRST-LAST [default: 20000-29999]
    #[arg(long, env = "LODGE_UID_RANGE", global = true)]
    pub uid_range: Option<String>,
    /// Where tenant homes live [default: /srv/lodge/tenants as root, <data-dir>/tenants otherwise]
    #[arg(long, env = "LODGE_TENANTS_ROOT", global = true)]
    pub tenants_root: Option<PathBuf>,
    /// Runtime directory: sockets, pid files [default: /run/lodge as root, <data-dir>/run otherwise]
    #[arg(long, env = "LODGE_RUN_DIR", global = true)]
    pub run_dir: Option<PathBuf>,
    /// Access logs, as access/<tenant>/<domain>.log [default: /var/log/lodge as root, <data-dir>/log otherwise]
    #[arg(long, env = "LODGE_LOG_DIR", global = true)]
    pub log_dir: Option<PathBuf>,
    /// The php-fpm binary [default: php-fpm on PATH, or the newest /usr/sbin/php-fpm8.x]
    #[arg(long, env = "LODGE_PHP_FPM", global = true)]
    pub php_fpm: Option<PathBuf>,
    /// Run the agent (users, pools, supervisor) with the panel; false serves the panel alone
    #[arg(long, env = "LODGE_AGENT", global = true)]
    pub agent: Option<bool>,
    /// The proxy's HTTP address, or `off` [default: 0.0.0.0:80 as root, 127.0.0.1:8000 otherwise]
    #[arg(long, env = "LODGE_HTTP_LISTEN", global = true)]
    pub http_listen: Option<String>,
    /// The proxy's HTTPS address, or `off` [default: 0.0.0.0:443 as root, 127.0.0.1:8443 otherwise]
    #[arg(long, env = "LODGE_HTTPS_LISTEN", global = true)]
    pub https_listen: Option<String>,
}

/// The same settings as keys of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    agent_dir: Option<PathBuf>,
    panel_listen: Option<SocketAddr>,
    public_url: Option<String>,
    uid_range: Option<String>,
    tenants_root: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    php_fpm: Option<PathBuf>,
    agent: Option<bool>,
    http_listen: Option<String>,
    https_listen: Option<String>,
}

/// The settings lodge runs with, every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the SQLite store (the panel's).
    pub data_dir: PathBuf,
    /// The agent's own files (root's alone): archives of deleted tenants.
    pub agent_dir: PathBuf,
    /// Address of the panel's HTTP listener.
    pub panel_listen: SocketAddr,
    /// Whether session cookies carry `Secure` (the panel is reached over TLS).
    pub secure_cookies: bool,
    /// The panel's public URL, as configured.
    pub public_url: Option<String>,
    /// Tenant UIDs/GIDs come from this inclusive range.
    pub uid_range: UidRange,
    /// Parent directory of the tenants' homes.
    pub tenants_root: TenantsRoot,
    /// Sockets, pid files, pool files, the routes snapshot (see `contract::RunDir`).
    pub run_dir: RunDir,
    /// The proxy's access logs (see `contract::LogDir`).
    pub log_dir: LogDir,
    /// The php-fpm binary (found at start when not given).
    pub php_fpm: Option<PathBuf>,
    /// Whether `serve` runs the agent alongside the panel.
    pub agent: bool,
    /// The proxy's listeners; `None` is off.
    pub http_listen: Option<SocketAddr>,
    pub https_listen: Option<SocketAddr>,
}

/// A listener setting: an address, or `off`.
fn listen_setting(
    raw: Option<String>,
    default: &str,
    what: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    let raw = raw.unwrap_or_else(|| default.to_owned());
    if raw == "off" {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .with_context(|| format!("{what} must be an address like 0.0.0.0:80, or off"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl UidRange {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let (a, b) = raw
            .split_once('-')
            .context("uid range must look like 20000-29999")?;
        let first: u32 = a
            .trim()
            .parse()
            .context("uid range: first is not a number")?;
        let last: u32 = b
            .trim()
            .parse()
            .context("uid range: last is not a number")?;
        if first < 1000 || last < first || last >= 65_534 {
            bail!("uid range must lie within 1000-65533 and not be empty");
        }
        Ok(Self { first, last })
    }
}

impl Config {
    pub fn load(args: &SettingArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let data_dir = absolute(data_dir)?;
        let agent_dir = match args.agent_dir.clone().or(file.agent_dir) {
            Some(dir) => absolute(dir)?,
            None => beside(&data_dir, "agent")?,
        };
        if agent_dir.starts_with(&data_dir) {
            bail!("agent_dir must not be inside the data directory, which the panel's user owns");
        }
        let panel_listen = args
            .panel_listen
            .or(file.panel_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let public_url = args.public_url.clone().or(file.public_url);
        if let Some(url) = &public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("public_url must start with http:// or https://");
            }
        }
        let uid_range = UidRange::parse(
            args.uid_range
                .as_deref()
                .or(file.uid_range.as_deref())
                .unwrap_or("20000-29999"),
        )?;
        let root = nix::unistd::geteuid().is_root();
        let tenants_root = args
            .tenants_root
            .clone()
            .or(file.tenants_root)
            .unwrap_or_else(|| {
                if root {
                    PathBuf::from("/srv/lodge/tenants")
                } else {
                    data_dir.join("tenants")
                }
            });
        let run_dir = args.run_dir.clone().or(file.run_dir).unwrap_or_else(|| {
            if root {
                PathBuf::from("/run/lodge")
            } else {
                data_dir.join("run")
            }
        });
        let log_dir = args.log_dir.clone().or(file.log_dir).unwrap_or_else(|| {
            if root {
                PathBuf::from("/var/log/lodge")
            } else {
                data_dir.join("log")
            }
        });
        let php_fpm = args.php_fpm.clone().or(file.php_fpm).or_else(find_php_fpm);
        let agent = args.agent.or(file.agent).unwrap_or(true);
        let (http_default, https_default) = if root {
            ("0.0.0.0:80", "0.0.0.0:443")
        } else {
            ("127.0.0.1:8000", "127.0.0.1:8443")
        };
        let http_listen = listen_setting(
            args.http_listen.clone().or(file.http_listen),
            http_default,
            "http_listen",
        )?;
        let https_listen = listen_setting(
            args.https_listen.clone().or(file.https_listen),
            https_default,
            "https_listen",
        )?;
        Ok(Self {
            tenants_root: TenantsRoot::new(pool_safe(absolute(tenants_root)?)?),
            run_dir: RunDir::new(pool_safe(absolute(run_dir)?)?),
            log_dir: LogDir::new(absolute(log_dir)?),
            php_fpm,
            agent,
            http_listen,
            https_listen,
            data_dir,
            agent_dir,
            panel_listen,
            secure_cookies: public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
            public_url,
            uid_range,
        })
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("lodge.db")
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `<dir>-<suffix>` beside `dir`.
fn beside(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the data directory has no name")?;
    Ok(dir.with_file_name(format!("{name}-{suffix}")))
}

/// Paths handed to php-fpm and other processes must not depend on a working directory.
fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// Paths written into pool files: nothing that could end a value or start another.
fn pool_safe(path: PathBuf) -> anyhow::Result<PathBuf> {
    let text = path.to_str().context("paths must be UTF-8")?;
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ';' || c == '"' || c == '\\')
    {
        bail!("path {text:?} has characters a pool file cannot carry");
    }
    Ok(path)
}

/// `php-fpm` on PATH, else the newest `php-fpm8.x` in /usr/sbin.
fn find_php_fpm() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    for dir in on_path.chain([PathBuf::from("/usr/sbin")]) {
        let plain = dir.join("php-fpm");
        if plain.is_file() {
            return Some(plain);
        }
        let mut versioned: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("php-fpm8."))
            })
            .collect();
        versioned.sort();
        if let Some(newest) = versioned.pop() {
            return Some(newest);
        }
    }
    None
}

fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/lodge")
    } else {
        PathBuf::from("./lodge-data")
    }
}
