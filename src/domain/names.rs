//! Tenant names, login names, plan names, roles and passwords.

use super::text_enum::text_enum;
use super::{describe_char, has_forbidden_char, invalid, Invalid};
use serde::Serialize;
use std::fmt;

/// System accounts and words a tenant may never be called, even where no such account
/// exists on this machine yet: a tenant named `root` or `www-data` is a trap for every
/// script that later trusts the name.
pub(crate) const RESERVED: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "systemd",
    "messagebus",
    "sshd",
    "admin",
    "lodge",
    "www",
    "wwwdata",
    "postfix",
    "dovecot",
    "mysql",
    "postgres",
    "redis",
    "nginx",
    "apache",
    "httpd",
    "php",
    "phpfpm",
    "ftp",
    "sftp",
    "git",
    "docker",
    "sudo",
    "wheel",
    "adm",
    "staff",
    "users",
    "operator",
    "shadow",
    "disk",
    "kmem",
    "tty",
    "utmp",
    "audio",
    "video",
    "cdrom",
    "floppy",
    "tape",
    "dialout",
    "plugdev",
    "netdev",
    "input",
    "render",
    "kvm",
    "ssl",
    "cert",
    "api",
    "static",
    "panel",
    "agent",
    "localhost",
    "test",
    "tmp",
    "var",
    "etc",
    "usr",
    "srv",
    "home",
    "run",
    "dev",
    "proc",
    "boot",
    "lib",
    "opt",
    "mnt",
    "media",
    // Accounts and groups Debian and Ubuntu packages create when installed: a tenant that
    // took one of these names first would own what the package later makes for itself.
    "lxd",
    "lxc",
    "libvirt",
    "qemu",
    "sssd",
    "colord",
    "polkitd",
    "avahi",
    "saned",
    "pulse",
    "rtkit",
    "geoclue",
    "gdm",
    "lightdm",
    "sddm",
    "uuidd",
    "tcpdump",
    "tss",
    "ntp",
    "ntpsec",
    "chrony",
    "syslog",
    "klog",
    "dnsmasq",
    "bind",
    "named",
    "unbound",
    "pdns",
    "memcache",
    "memcached",
    "mongodb",
    "mariadb",
    "postgresql",
    "pgbouncer",
    "elasticsearch",
    "opensearch",
    "rabbitmq",
    "zabbix",
    "nagios",
    "munin",
    "prometheus",
    "grafana",
    "influxdb",
    "telegraf",
    "netdata",
    "opendkim",
    "opendmarc",
    "spamd",
    "amavis",
    "clamav",
    "vmail",
    "exim",
    "sendmail",
    "smmsp",
    "courier",
    "cyrus",
    "dovenull",
    "postgrey",
    "fetchmail",
    "mailman",
    "haproxy",
    "varnish",
    "squid",
    "lighttpd",
    "caddy",
    "traefik",
    "tomcat",
    "jenkins",
    "gitlab",
    "gitea",
    "nscd",
    "nslcd",
    "openldap",
    "slapd",
    "sasl",
    "cups",
    "lpadmin",
    "scanner",
    "bluetooth",
    "samba",
    "sambashare",
    "statd",
    "rpc",
    "rpcuser",
    "snap",
    "snapd",
    "landscape",
    "pollinate",
    "fwupd",
    "usbmux",
    "hplip",
    "containerd",
    "podman",
    "cockpit",
    "webmin",
    "tor",
    "stunnel",
    "stunnel4",
    "openvpn",
    "strongswan",
    "freerad",
    "asterisk",
    "minio",
    "ceph",
    "zookeeper",
    "kafka",
    "ubuntu",
    "debian",
    "vagrant",
    "nogroup",
    "crontab",
    "systemdjournal",
    "voice",
    "fax",
    "src",
];

/// A tenant's name: also its Linux user and group, its home directory and its pool's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantName(String);

impl TenantName {
    /// `^[a-z][a-z0-9]{1,30}$`, not a reserved word. Whether a system account of that name
    /// exists is the caller's question (it needs the machine, not the string).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        check_ascii_name(raw, 2, 31, |c| c.is_ascii_lowercase() || c.is_ascii_digit())?;
        if RESERVED.contains(&raw) {
            return invalid(format!("'{raw}' is reserved for the system"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A login name. Admins and resellers choose theirs; a tenant's login is its tenant name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// `^[a-z][a-z0-9_-]{1,31}$`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        check_ascii_name(raw, 2, 32, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
        })?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plan's name, as it appears in URLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PlanName(String);

impl PlanName {
    /// `^[a-z][a-z0-9-]{0,39}$`, no trailing hyphen.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        check_ascii_name(raw, 1, 40, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        })?;
        if raw.ends_with('-') {
            return invalid("must not end with '-'");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_ascii_name(
    raw: &str,
    min: usize,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), Invalid> {
    if raw.is_empty() {
        return invalid("must not be empty");
    }
    if let Some(c) = has_forbidden_char(raw) {
        return invalid(format!(
            "contains the forbidden character {}",
            describe_char(c)
        ));
    }
    if raw.len() > max {
        return invalid(format!("must be at most {max} characters"));
    }
    if raw.chars().count() < min {
        return invalid(format!("must be at least {min} characters"));
    }
    if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("must start with a lowercase letter a-z");
    }
    if let Some(c) = raw.chars().find(|&c| !allowed(c)) {
        return invalid(format!(
            "contains {}, which is not allowed here",
            describe_char(c)
        ));
    }
    Ok(())
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for PlanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_enum! {
    /// What an account may do; see `policy`.
    pub enum Role {
        Admin = "admin",
        Reseller = "reseller",
        Tenant = "tenant",
    }
}

/// A password on its way to argon2. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// 10 to 256 characters (argon2 of a megabyte is a cheap denial of service; 256
    /// characters are at most 1 KiB), no control characters. Characters rather than bytes,
    /// so the API's document can state the bound.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if chars < 10 {
            return invalid("must be at least 10 characters");
        }
        if chars > 256 {
            return invalid("must be at most 256 characters");
        }
        if raw.chars().any(|c| c.is_control()) {
            return invalid("must not contain control characters");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        assert!(TenantName::parse("acme").is_ok());
        assert!(TenantName::parse("a1").is_ok());
        for bad in [
            "",
            "a",
            "1abc",
            "Acme",
            "ac-me",
            "ac me",
            "root",
            "acme;ls",
            &"a".repeat(32),
        ] {
            assert!(TenantName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TenantName::parse(&"a".repeat(31)).is_ok());
    }

    #[test]
    fn names_packages_take_later_are_refused_before_the_package_comes() {
        for name in [
            "lxd", "libvirt", "mariadb", "sshd", "clamav", "netdata", "tss",
        ] {
            let e = TenantName::parse(name).unwrap_err();
            assert!(e.0.contains("reserved"), "{name}: {e}");
        }
        assert!(TenantName::parse("lxdfan").is_ok());
    }

    #[test]
    fn usernames_and_plans() {
        assert!(Username::parse("alice_b-2").is_ok());
        assert!(Username::parse("alice\n").is_err());
        assert!(PlanName::parse("pro-2").is_ok());
        assert!(PlanName::parse("pro-").is_err());
        assert!(PlanName::parse("Pro").is_err());
    }

    #[test]
    fn passwords() {
        assert!(Password::parse("correct horse").is_ok());
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("has\0nul-in-it").is_err());
        assert!(Password::parse(&"x".repeat(300)).is_err());
    }
}

/// A vhost's id in the store: a positive number, never reused. Files kept per vhost (its
/// certificates) are named by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VhostId(i64);

impl VhostId {
    pub fn new(id: i64) -> Result<Self, Invalid> {
        if id > 0 {
            Ok(Self(id))
        } else {
            invalid("a vhost id is a positive number")
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for VhostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
