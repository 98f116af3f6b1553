//! Settings: each one a flag, an environment variable `LODGE_<NAME>` and a key in the optional
//! TOML file given by `--config`. A flag beats the environment, which beats the file, which
//! beats the default.

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
    /// Address the panel listens on; port 0 picks a free port [default: 127.0.0.1:8080]
    #[arg(long, env = "LODGE_PANEL_LISTEN", global = true)]
    pub panel_listen: Option<SocketAddr>,
    /// The panel's public URL; an https:// URL marks session cookies Secure
    #[arg(long, env = "LODGE_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Range tenant UIDs and GIDs are reserved from, as FIRST-LAST [default: 20000-29999]
    #[arg(long, env = "LODGE_UID_RANGE", global = true)]
    pub uid_range: Option<String>,
}

/// The same settings as keys of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    panel_listen: Option<SocketAddr>,
    public_url: Option<String>,
    uid_range: Option<String>,
}

/// The settings lodge runs with, every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the SQLite store and of archives.
    pub data_dir: PathBuf,
    /// Address of the panel's HTTP listener.
    pub panel_listen: SocketAddr,
    /// Whether session cookies carry `Secure` (the panel is reached over TLS).
    pub secure_cookies: bool,
    /// Tenant UIDs/GIDs come from this inclusive range.
    pub uid_range: UidRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
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
        Ok(Self {
            data_dir,
            panel_listen,
            secure_cookies: public_url.is_some_and(|u| u.starts_with("https://")),
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

fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/lodge")
    } else {
        PathBuf::from("./lodge-data")
    }
}
