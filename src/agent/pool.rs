//! A tenant's PHP-FPM master: its config file, rendered from `templates/fpm-pool.conf` out of
//! checked values only, and checked with `php-fpm -t` before it replaces the live one.
//!
//! Files the root master opens itself (pid, master log, slow log) live under
//! `<run-dir>/pools/`, root's alone: a master running as root must never open a path inside
//! a tenant's home, where the tenant could plant a symlink.

use crate::contract::RunDir;
use crate::domain::{PhpBounds, PhpSettings, PmMode, PoolSetting, TenantName};
use crate::nofollow::{self, FileMode};
use askama::Template;
use std::path::{Path, PathBuf};

/// Where a tenant's master keeps its files.
#[derive(Debug, Clone)]
pub struct PoolPaths {
    pub conf: PathBuf,
    pub pid: PathBuf,
    pub master_log: PathBuf,
    pub slow_log: PathBuf,
    pub socket: PathBuf,
}

impl PoolPaths {
    pub fn new(run_dir: &RunDir, name: &TenantName) -> Self {
        Self {
            conf: run_dir.pool_conf(name),
            pid: run_dir.pool_pid(name),
            master_log: run_dir.pool_master_log(name),
            slow_log: run_dir.pool_slow_log(name),
            socket: run_dir.fpm_socket(name),
        }
    }
}

/// Everything a pool file says, each value already checked.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: TenantName,
    pub home: PathBuf,
    pub paths: PoolPaths,
    /// Root: workers switch to the tenant; otherwise they run as the agent's user.
    pub privileged: bool,
    pub www_group: String,
    pub pm: PmMode,
    pub max_children: u32,
    pub max_requests: u32,
    pub terminate_timeout: u32,
    pub disable_functions: Vec<String>,
    pub settings: PhpSettings,
    /// The plan's caps: written as `php_admin_value`, so PHP cannot raise them.
    pub bounds: PhpBounds,
}

#[derive(Template)]
#[template(path = "fpm-pool.conf", escape = "none")]
struct PoolFile<'a> {
    name: &'a str,
    pid_file: String,
    master_log: String,
    slow_log: String,
    privileged: bool,
    www_group: &'a str,
    socket: String,
    pm: &'a str,
    max_children: u32,
    start_servers: u32,
    min_spare: u32,
    max_spare: u32,
    max_requests: u32,
    terminate_timeout: u32,
    home: String,
    disable_functions: String,
    settings: Vec<PoolSetting>,
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl PoolSpec {
    pub fn render(&self) -> Result<String, askama::Error> {
        let max = self.max_children.max(1);
        let min_spare = 1.max(max / 4);
        PoolFile {
            name: self.name.as_str(),
            pid_file: text(&self.paths.pid),
            master_log: text(&self.paths.master_log),
            slow_log: text(&self.paths.slow_log),
            privileged: self.privileged,
            www_group: &self.www_group,
            socket: text(&self.paths.socket),
            pm: self.pm.as_str(),
            max_children: max,
            start_servers: min_spare,
            min_spare,
            max_spare: (max / 2).max(min_spare),
            max_requests: self.max_requests,
            terminate_timeout: self.terminate_timeout,
            home: text(&self.home),
            disable_functions: self.disable_functions.join(","),
            settings: self.settings.pool_settings(&self.bounds),
        }
        .render()
    }
}

/// Runs `php-fpm -t` on a candidate file; `Err` carries php-fpm's own words.
pub async fn check(php_fpm: &Path, conf: &Path) -> Result<(), String> {
    let out = tokio::process::Command::new(php_fpm)
        .arg("-t")
        .arg("-y")
        .arg(conf)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", php_fpm.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("ALERT"))
            .collect();
        let message = if lines.is_empty() {
            stderr.trim().to_owned()
        } else {
            lines.join("; ")
        };
        Err(format!(
            "php-fpm rejected the pool file: {}",
            message.chars().take(600).collect::<String>()
        ))
    }
}

/// Whether the file now in place differs from `content`.
pub fn differs(conf: &Path, content: &str) -> bool {
    nofollow::read_to_string(conf)
        .map(|live| live != content)
        .unwrap_or(true)
}

/// Writes `content` as a candidate beside the live file (not yet in place): [`check_all`]
/// checks it, and only then is it renamed over the live one. A candidate dropped unchecked
/// is removed and the live file stays. Pool files are root's alone: they name paths and
/// users.
pub fn write_candidate(conf: &Path, content: &str) -> Result<nofollow::Pending, String> {
    nofollow::write_beside(conf, content.as_bytes(), FileMode::private())
        .map_err(|e| format!("writing the candidate for {}: {e}", conf.display()))
}

/// Checks many candidates with one `php-fpm -t` (a file that includes them all: 500 pools
/// take a third of a second, against 20 ms each alone); only when that fails is each
/// checked alone, to say which. Returns each candidate's verdict, in order.
pub async fn check_all(
    php_fpm: &Path,
    pools_dir: &Path,
    candidates: &[&Path],
) -> Vec<Result<(), String>> {
    if candidates.is_empty() {
        return Vec::new();
    }
    if candidates.len() > 1 {
        let mut batch = String::from("[global]\nerror_log = /dev/null\n");
        for c in candidates {
            batch.push_str(&format!("include = {}\n", c.display()));
        }
        let path = pools_dir.join(".check-all.conf");
        if let Ok(file) = nofollow::write_beside(&path, batch.as_bytes(), FileMode::private()) {
            if check(php_fpm, file.path()).await.is_ok() {
                return candidates.iter().map(|_| Ok(())).collect();
            }
        }
    }
    // One at a time, a few at once: which one php-fpm refuses.
    let mut verdicts = Vec::with_capacity(candidates.len());
    for chunk in candidates.chunks(CHECKS_AT_ONCE) {
        let checks = chunk.iter().map(|c| check(php_fpm, c));
        verdicts.extend(futures_util::future::join_all(checks).await);
    }
    verdicts
}

/// How many `php-fpm -t` run at once when candidates are checked alone.
const CHECKS_AT_ONCE: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_checked_values_only() {
        let name = TenantName::parse("acme").unwrap();
        let bounds = PhpBounds {
            memory_limit_mb: 256,
            upload_max_mb: 64,
            max_execution_time: 60,
        };
        let settings = PhpSettings::parse(
            serde_json::json!({"memory_limit": "128M", "display_errors": false})
                .as_object()
                .unwrap(),
            &bounds,
        )
        .unwrap();
        let spec = PoolSpec {
            name: name.clone(),
            home: PathBuf::from("/srv/lodge/tenants/acme"),
            paths: PoolPaths::new(&RunDir::new("/run/lodge"), &name),
            privileged: true,
            www_group: "lodge-www".into(),
            pm: PmMode::Dynamic,
            max_children: 8,
            max_requests: 500,
            terminate_timeout: 70,
            disable_functions: vec!["exec".into(), "system".into()],
            settings,
            bounds,
        };
        let conf = spec.render().unwrap();
        assert!(conf.contains("[acme]\nuser = acme\ngroup = acme\n"));
        assert!(conf.contains("listen = /run/lodge/fpm/acme.sock\n"));
        assert!(conf.contains("listen.group = lodge-www\n"));
        assert!(conf.contains("pm = dynamic\npm.max_children = 8\npm.start_servers = 2\n"));
        assert!(conf.contains("php_admin_value[open_basedir] = /srv/lodge/tenants/acme/\n"));
        assert!(conf.contains("php_admin_value[disable_functions] = exec,system\n"));
        // What the plan caps is an admin value (ini_set cannot raise it): the tenant's own
        // value, or the plan's cap where the tenant set none.
        assert!(conf.contains("php_admin_value[memory_limit] = 128M\n"));
        assert!(conf.contains("php_admin_value[upload_max_filesize] = 64M\n"));
        assert!(conf.contains("php_admin_value[post_max_size] = 64M\n"));
        assert!(conf.contains("php_admin_value[max_execution_time] = 60\n"));
        assert!(!conf.contains("php_value[memory_limit]"));
        assert!(conf.contains("php_value[display_errors] = Off\n"));
        assert!(conf.contains("slowlog = /run/lodge/pools/acme.slow.log\n"));
        assert!(conf.contains("process_control_timeout = 30s"));
        assert!(!conf.contains("/tmp\n") || conf.contains("acme/tmp\n"));
    }
}
