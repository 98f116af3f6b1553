//! lodge as a systemd service: `lodge install-service` writes the unit (`dist/lodge.service`,
//! built in) naming the binary it runs from, and `lodge check` says whether it is installed
//! and active.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit as shipped.
const UNIT: &str = include_str!("../dist/lodge.service");
/// Where it is installed.
pub const UNIT_PATH: &str = "/etc/systemd/system/lodge.service";

/// The unit for `binary`, with `config` (a settings file) passed on when given.
pub fn unit(binary: &Path, config: Option<&Path>) -> anyhow::Result<String> {
    let text = |p: &Path| -> anyhow::Result<String> {
        let s = p.to_str().context("paths in the unit must be UTF-8")?;
        // systemd splits ExecStart on whitespace and reads quotes and specifiers.
        if s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '%' | '$')
        }) {
            bail!("{s:?} has characters a unit file cannot carry");
        }
        Ok(s.to_owned())
    };
    let mut exec = format!("ExecStart={} serve", text(binary)?);
    if let Some(config) = config {
        exec = format!(
            "ExecStart={} --config {} serve",
            text(binary)?,
            text(config)?
        );
    }
    let mut out = String::with_capacity(UNIT.len());
    for line in UNIT.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&exec);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Installs and enables the unit (and starts it with `now`).
pub fn install(config: Option<&Path>, now: bool) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("installing the service takes root");
    }
    let binary: PathBuf = std::fs::canonicalize(std::env::current_exe()?)?;
    let config = config.map(std::fs::canonicalize).transpose()?;
    let unit = unit(&binary, config.as_deref())?;
    let mode = crate::nofollow::FileMode {
        mode: 0o644,
        owner: None,
    };
    crate::nofollow::replace_file(Path::new(UNIT_PATH), unit.as_bytes(), mode)
        .with_context(|| format!("writing {UNIT_PATH}"))?;
    println!("wrote {UNIT_PATH} (ExecStart {} serve)", binary.display());
    systemctl(&["daemon-reload"])?;
    if now {
        systemctl(&["enable", "--now", "lodge.service"])?;
        println!("lodge.service is enabled and started");
    } else {
        systemctl(&["enable", "lodge.service"])?;
        println!("lodge.service is enabled; start it with: systemctl start lodge");
    }
    Ok(())
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .context("running systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ")
        );
    }
    Ok(())
}

/// One line on the unit for `lodge check`.
pub fn status() -> String {
    if !Path::new(UNIT_PATH).exists() {
        return "service: not installed (lodge install-service)".to_owned();
    }
    let state = Command::new("systemctl")
        .args(["is-active", "lodge.service"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output();
    match state {
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if said.is_empty() {
                format!(
                    "service: installed at {UNIT_PATH}; systemd does not answer ({})",
                    String::from_utf8_lossy(&out.stderr)
                        .trim()
                        .replace('\n', " ")
                )
            } else {
                format!("service: installed at {UNIT_PATH}, {said}")
            }
        }
        Err(e) => format!("service: installed at {UNIT_PATH}; no systemctl ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_names_the_binary_and_leaves_the_sites_serving() {
        let unit = unit(
            Path::new("/opt/lodge/bin/lodge"),
            Some(Path::new("/etc/lodge.toml")),
        )
        .unwrap();
        assert!(unit.contains("\nExecStart=/opt/lodge/bin/lodge --config /etc/lodge.toml serve\n"));
        assert!(unit.contains("\nKillMode=process\n"));
        assert!(unit.contains("\nKillSignal=SIGQUIT\n"));
        assert!(unit.contains("\nRestart=always\n"));
        assert_eq!(unit.matches("ExecStart=").count(), 1);
        assert!(super::unit(Path::new("/opt/my lodge"), None).is_err());
        assert!(super::unit(Path::new("/opt/lodge%n"), None).is_err());
    }
}
