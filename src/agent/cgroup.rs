//! Per-tenant resource limits through cgroups.
//!
//! Every tenant's PHP-FPM master and all of its workers live in a cgroup of their own,
//! `lodge/<tenant>` under each hierarchy that carries a controller we use, with the limits of
//! the tenant's plan: memory, number of processes and a CPU cap.
//!
//! Both layouts are supported:
//!
//! * **cgroup v2** (unified): one hierarchy; `memory.max` (+ `memory.swap.max`), `pids.max`,
//!   `cpu.max`; usage from `memory.current`, `pids.current` and `cpu.stat` (`usage_usec`).
//!   The controllers are enabled in `cgroup.subtree_control` of the mount root and of `lodge`.
//! * **cgroup v1**: one mount per controller (or per set of co-mounted controllers);
//!   `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes` where swap accounting exists),
//!   `pids.max`, `cpu.cfs_period_us`/`cpu.cfs_quota_us`; usage from `memory.usage_in_bytes`,
//!   `pids.current` and `cpuacct.usage`.
//!
//! Detection ([`Cgroups::detect`]) reads `/proc/self/mountinfo`: a controller is taken from a
//! cgroup2 mount whose `cgroup.controllers` lists it, else from the v1 mount carrying it, else it
//! is absent and skipped with a warning (a hybrid machine commonly has an empty cgroup2 mount at
//! `/sys/fs/cgroup/unified`: it carries no controller, so everything comes from v1 there).
//!
//! Moving processes in: [`TenantCgroup::add_process`] moves a running process (all its
//! threads); processes it forks afterwards are born inside. The agent adds the php-fpm master
//! right after spawning it. Anything the master forks *before* it was moved (a short window:
//! php-fpm parses its configuration before forking workers, so in practice nothing) would stay
//! outside; [`TenantCgroup::pids`] lets the caller check, and calling `add_process` again for
//! such a pid is harmless.
//!
//! Files are opened with `O_NOFOLLOW` and written with a single `write(2)`, as cgroupfs expects
//! one value per write.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::nofollow;
use serde::Serialize;

/// The group under each hierarchy that holds all tenants' groups.
pub const PARENT: &str = "lodge";

/// The CFS period lodge uses, in microseconds (100 ms).
pub const CPU_PERIOD_USEC: u64 = 100_000;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// A tenant's limits, from its plan. Zero in any field means "no limit" for that resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Memory (RAM, and on v1 with swap accounting RAM + swap) in MiB.
    pub memory_mb: u64,
    /// Processes (and threads) in the group at once.
    pub max_processes: u64,
    /// CPU time in percent of one core: 100 = one core, 50 = half a core, 200 = two cores.
    pub cpu_percent: u64,
}

/// What a tenant's group uses right now. A field is `None` when its controller is absent (or
/// its file could not be read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Memory charged to the group, page cache included.
    pub memory_bytes: Option<u64>,
    /// Processes and threads in the group.
    pub processes: Option<u64>,
    /// CPU time used by the group since it was created (user + system), in microseconds.
    pub cpu_usec: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup file {path}: short write ({written} of {len} bytes)")]
    ShortWrite {
        path: PathBuf,
        written: usize,
        len: usize,
    },
    #[error("cgroup {path} is not a directory (or is a symbolic link)")]
    NotADirectory { path: PathBuf },
    #[error("cgroup file {path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("limit out of range: {0}")]
    InvalidLimit(&'static str),
}

impl CgroupError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The OS error number, if this is an OS error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// `EBUSY`: from [`TenantCgroup::remove`], the group still has processes (or children);
    /// from [`TenantCgroup::apply`] on v1, the memory in use is above the new limit. Retry
    /// later.
    pub fn is_busy(&self) -> bool {
        self.errno() == Some(nix::libc::EBUSY)
    }
}

/// The cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// The controllers lodge uses. `Cpuacct` only exists on v1 (on v2 CPU usage comes from the
/// `cpu.stat` of the cpu hierarchy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
    Cpuacct,
}

impl Controller {
    pub const ALL: [Controller; 4] = [Self::Memory, Self::Pids, Self::Cpu, Self::Cpuacct];

    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
            Self::Cpuacct => "cpuacct",
        }
    }
}

/// Where a controller is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub version: Version,
    pub path: PathBuf,
}

/// The cgroup layout of the machine: for each controller, the hierarchy that carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cgroups {
    memory: Option<Mount>,
    pids: Option<Mount>,
    cpu: Option<Mount>,
    /// v1 only, and only when CPU usage cannot come from a v2 `cpu.stat`.
    cpuacct: Option<Mount>,
}

impl Cgroups {
    /// Reads `/proc/self/mountinfo` (and each cgroup2 mount's `cgroup.controllers`) and logs a
    /// warning for every controller it cannot find. Never fails: without cgroups at all,
    /// [`Cgroups::available`] is false and every tenant group is a no-op.
    pub fn detect() -> Cgroups {
        let found = match fs::read_to_string(MOUNTINFO) {
            Ok(text) => Self::from_mountinfo(&text, |mount| {
                nofollow::read_to_string(&mount.join("cgroup.controllers")).ok()
            }),
            Err(err) => {
                tracing::warn!("cgroups: cannot read {MOUNTINFO}: {err}");
                Cgroups::default()
            }
        };
        for missing in found.missing() {
            tracing::warn!(
                "cgroups: the {} controller is not available; its limit is not applied",
                missing.name()
            );
        }
        found
    }

    /// The layout described by a `mountinfo` text. `controllers` returns the content of a
    /// cgroup2 mount's `cgroup.controllers` (None when unreadable).
    pub fn from_mountinfo(
        mountinfo: &str,
        controllers: impl Fn(&Path) -> Option<String>,
    ) -> Cgroups {
        let mounts = parse_mountinfo(mountinfo);
        // The cgroup2 mount that carries most of what we need (first one on a tie).
        let mut v2: Option<(PathBuf, Vec<String>)> = None;
        let mut v2_count = 0;
        for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
            let list: Vec<String> = controllers(&m.mount_point)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let count = ["memory", "pids", "cpu"]
                .iter()
                .filter(|c| list.iter().any(|l| l == *c))
                .count();
            if count > v2_count {
                v2_count = count;
                v2 = Some((m.mount_point.clone(), list));
            }
        }
        let from_v2 = |name: &str| {
            v2.as_ref()
                .filter(|(_, list)| list.iter().any(|l| l == name))
                .map(|(path, _)| Mount {
                    version: Version::V2,
                    path: path.clone(),
                })
        };
        let from_v1 = |name: &str| {
            mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == name))
                .map(|m| Mount {
                    version: Version::V1,
                    path: m.mount_point.clone(),
                })
        };
        let pick = |name: &str| from_v2(name).or_else(|| from_v1(name));
        let cpu = pick("cpu");
        let cpuacct = match &cpu {
            Some(Mount {
                version: Version::V2,
                ..
            }) => None,
            _ => from_v1("cpuacct"),
        };
        Cgroups {
            memory: pick("memory"),
            pids: pick("pids"),
            cpu,
            cpuacct,
        }
    }

    /// Whether at least one limit can be applied.
    pub fn available(&self) -> bool {
        self.memory.is_some() || self.pids.is_some() || self.cpu.is_some()
    }

    /// Where a controller is, if anywhere.
    pub fn mount(&self, controller: Controller) -> Option<&Mount> {
        match controller {
            Controller::Memory => self.memory.as_ref(),
            Controller::Pids => self.pids.as_ref(),
            Controller::Cpu => self.cpu.as_ref(),
            Controller::Cpuacct => self.cpuacct.as_ref(),
        }
    }

    /// The limit controllers (memory, pids, cpu) that are absent. A missing cpuacct is not
    /// listed: it only costs the CPU usage figure.
    pub fn missing(&self) -> Vec<Controller> {
        [Controller::Memory, Controller::Pids, Controller::Cpu]
            .into_iter()
            .filter(|c| self.mount(*c).is_none())
            .collect()
    }

    /// The group of a tenant: `lodge/<name>` under each hierarchy. Nothing is touched until
    /// [`TenantCgroup::apply`].
    ///
    /// # Panics
    /// When `name` is not a tenant name (`^[a-z][a-z0-9]{1,30}$`): paths are only ever built
    /// from checked names.
    pub fn tenant(&self, name: &str) -> TenantCgroup {
        assert!(is_tenant_name(name), "not a tenant name: {name:?}");
        let group = |mount: &Option<Mount>| {
            mount.as_ref().map(|m| Group {
                version: m.version,
                mount: m.path.clone(),
                dir: m.path.join(PARENT).join(name),
            })
        };
        TenantCgroup {
            name: name.to_owned(),
            memory: group(&self.memory),
            pids: group(&self.pids),
            cpu: group(&self.cpu),
            cpuacct: group(&self.cpuacct),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    version: Version,
    mount: PathBuf,
    dir: PathBuf,
}

/// One tenant's group, across the hierarchies that carry our controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCgroup {
    name: String,
    memory: Option<Group>,
    pids: Option<Group>,
    cpu: Option<Group>,
    cpuacct: Option<Group>,
}

impl TenantCgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's directory in the hierarchy of `controller`, and that hierarchy's version.
    pub fn dir(&self, controller: Controller) -> Option<(Version, &Path)> {
        self.group(controller).map(|g| (g.version, g.dir.as_path()))
    }

    /// The group's distinct directories (one per hierarchy).
    pub fn dirs(&self) -> Vec<&Path> {
        self.groups().into_iter().map(|g| g.dir.as_path()).collect()
    }

    fn group(&self, controller: Controller) -> Option<&Group> {
        match controller {
            Controller::Memory => self.memory.as_ref(),
            Controller::Pids => self.pids.as_ref(),
            Controller::Cpu => self.cpu.as_ref(),
            Controller::Cpuacct => self.cpuacct.as_ref(),
        }
    }

    /// The distinct groups, one per hierarchy, in controller order.
    fn groups(&self) -> Vec<&Group> {
        let mut out: Vec<&Group> = Vec::new();
        for g in Controller::ALL.into_iter().filter_map(|c| self.group(c)) {
            if !out.iter().any(|o| o.dir == g.dir) {
                out.push(g);
            }
        }
        out
    }

    /// Creates the group (and `lodge` above it) where missing and writes the limits.
    /// Idempotent: call it again when the plan changes. On v1, lowering the memory limit
    /// below what the group uses fails with `EBUSY` once the kernel cannot reclaim enough.
    pub fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let memory = match limits.memory_mb {
            0 => None,
            mb => Some(
                mb.checked_mul(1024 * 1024)
                    .filter(|b| *b <= i64::MAX as u64)
                    .ok_or(CgroupError::InvalidLimit("memory_mb"))?,
            ),
        };
        let pids = match limits.max_processes {
            0 => None,
            n => Some(n),
        };
        let cpu_quota = match limits.cpu_percent {
            0 => None,
            p => Some(cpu_quota_usec(p).ok_or(CgroupError::InvalidLimit("cpu_percent"))?),
        };

        for g in self.groups() {
            self.create(g)?;
        }
        if let Some(g) = &self.memory {
            match g.version {
                Version::V2 => {
                    write_file(&g.dir.join("memory.max"), &v2_value(memory))?;
                    // Without this a tenant could go on in swap past its plan; v1's
                    // memsw = limit gives the same bound (RAM + swap <= limit).
                    let swap = g.dir.join("memory.swap.max");
                    if exists(&swap) {
                        let value = if memory.is_some() { "0" } else { "max" };
                        if let Err(err) = write_file(&swap, value) {
                            tracing::warn!("cgroups: {err}");
                        }
                    }
                }
                Version::V1 => apply_v1_memory(&g.dir, &v1_value(memory))?,
            }
        }
        if let Some(g) = &self.pids {
            write_file(&g.dir.join("pids.max"), &v2_value(pids))?;
        }
        if let Some(g) = &self.cpu {
            match g.version {
                Version::V2 => write_file(&g.dir.join("cpu.max"), &cpu_max(cpu_quota))?,
                Version::V1 => {
                    write_file(
                        &g.dir.join("cpu.cfs_period_us"),
                        &CPU_PERIOD_USEC.to_string(),
                    )?;
                    write_file(&g.dir.join("cpu.cfs_quota_us"), &v1_value(cpu_quota))?;
                }
            }
        }
        Ok(())
    }

    /// mkdir `lodge` and `lodge/<name>` in one hierarchy; on v2, enable our controllers for
    /// the children of the mount root and of `lodge` first.
    fn create(&self, g: &Group) -> Result<(), CgroupError> {
        let parent = g.mount.join(PARENT);
        let enable: Vec<&str> = if g.version == Version::V2 {
            [Controller::Memory, Controller::Pids, Controller::Cpu]
                .into_iter()
                .filter(|c| self.group(*c).is_some_and(|o| o.dir == g.dir))
                .map(Controller::name)
                .collect()
        } else {
            Vec::new()
        };
        if !enable.is_empty() {
            enable_controllers(&g.mount, &enable)?;
        }
        make_dir(&parent)?;
        if !enable.is_empty() {
            enable_controllers(&parent, &enable)?;
        }
        make_dir(&g.dir)
    }

    /// Moves a process (with all its threads) into the group, in every hierarchy. Its future
    /// children are born inside. Harmless when it is inside already.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            // "0" would move the writing process itself: never what the caller means.
            return Err(CgroupError::InvalidLimit("pid"));
        }
        for g in self.groups() {
            write_file(&g.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the group, from `cgroup.procs` of every hierarchy, sorted, without
    /// duplicates. A group that does not exist (never applied, or removed) has none.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for g in self.groups() {
            let path = g.dir.join("cgroup.procs");
            let text = match nofollow::read_to_string(&path) {
                Ok(text) => text,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(CgroupError::io(&path, err)),
            };
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let pid = line.parse().map_err(|_| CgroupError::Parse {
                    path: path.clone(),
                    content: line.to_owned(),
                })?;
                all.insert(pid);
            }
        }
        Ok(all.into_iter().collect())
    }

    /// What the group uses now.
    pub fn usage(&self) -> Usage {
        let memory_bytes = self.memory.as_ref().and_then(|g| {
            let file = match g.version {
                Version::V2 => "memory.current",
                Version::V1 => "memory.usage_in_bytes",
            };
            read_u64(&g.dir.join(file))
        });
        let processes = self
            .pids
            .as_ref()
            .and_then(|g| read_u64(&g.dir.join("pids.current")));
        let cpu_usec = match (&self.cpu, &self.cpuacct) {
            (
                Some(Group {
                    version: Version::V2,
                    dir,
                    ..
                }),
                _,
            ) => read_text(&dir.join("cpu.stat")).and_then(|t| flat_keyed(&t, "usage_usec")),
            (_, Some(g)) => read_u64(&g.dir.join("cpuacct.usage")).map(|ns| ns / 1000),
            _ => None,
        };
        Usage {
            memory_bytes,
            processes,
            cpu_usec,
        }
    }

    /// Removes the group's directories (not `lodge`). Moves and kills nothing: works only once
    /// the group is empty, else fails with `EBUSY` ([`CgroupError::is_busy`]) and the caller
    /// may retry. Every hierarchy is attempted; the first error is returned. A directory
    /// already gone is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first = None;
        for g in self.groups() {
            match fs::remove_dir(&g.dir) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    first.get_or_insert(CgroupError::io(&g.dir, err));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// `^[a-z][a-z0-9]{1,30}$`
fn is_tenant_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=31).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The CFS quota for a percentage of one core over [`CPU_PERIOD_USEC`].
fn cpu_quota_usec(percent: u64) -> Option<u64> {
    percent
        .checked_mul(CPU_PERIOD_USEC / 100)
        .filter(|q| *q <= i64::MAX as u64)
}

/// The content of v2's `cpu.max`: "QUOTA PERIOD", or "max PERIOD" without a quota.
fn cpu_max(quota_usec: Option<u64>) -> String {
    match quota_usec {
        Some(q) => format!("{q} {CPU_PERIOD_USEC}"),
        None => format!("max {CPU_PERIOD_USEC}"),
    }
}

/// A v2 (and v1 pids.max) value: the number, or "max".
fn v2_value(value: Option<u64>) -> String {
    value.map_or_else(|| "max".to_owned(), |v| v.to_string())
}

/// A v1 value: the number, or -1 for unlimited.
fn v1_value(value: Option<u64>) -> String {
    value.map_or_else(|| "-1".to_owned(), |v| v.to_string())
}

/// v1 requires memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every moment: raising
/// the limit above the current memsw limit fails with EINVAL, so memsw is raised first then.
fn apply_v1_memory(dir: &Path, value: &str) -> Result<(), CgroupError> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let has_memsw = exists(&memsw);
    match write_file(&limit, value) {
        Ok(()) => {}
        Err(err) if has_memsw && err.errno() == Some(nix::libc::EINVAL) => {
            write_file(&memsw, value)?;
            write_file(&limit, value)?;
        }
        Err(err) => return Err(err),
    }
    if has_memsw {
        if let Err(err) = write_file(&memsw, value) {
            tracing::warn!("cgroups: {err}");
        }
    }
    Ok(())
}

/// Adds the controllers missing from `dir/cgroup.subtree_control`, in a single write.
fn enable_controllers(dir: &Path, names: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let current = nofollow::read_to_string(&path).map_err(|e| CgroupError::io(&path, e))?;
    let enabled: Vec<&str> = current.split_whitespace().collect();
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !enabled.contains(n))
        .map(|n| format!("+{n}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&path, &missing.join(" "))
}

/// mkdir, EEXIST being fine as long as it is a real directory (not a symbolic link).
fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path).map_err(|e| CgroupError::io(path, e))?;
            if meta.file_type().is_dir() {
                Ok(())
            } else {
                Err(CgroupError::NotADirectory {
                    path: path.to_owned(),
                })
            }
        }
        Err(err) => Err(CgroupError::io(path, err)),
    }
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// One value, one `write(2)`: cgroupfs takes each write as a whole value.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = nofollow::open_file(path, true).map_err(|e| CgroupError::io(path, e))?;
    let written = loop {
        match file.write(value.as_bytes()) {
            Ok(n) => break n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CgroupError::io(path, err)),
        }
    };
    if written != value.len() {
        return Err(CgroupError::ShortWrite {
            path: path.to_owned(),
            written,
            len: value.len(),
        });
    }
    Ok(())
}

fn read_text(path: &Path) -> Option<String> {
    match nofollow::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) => {
            tracing::debug!("cgroups: {}: {err}", path.display());
            None
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    read_text(path).and_then(|t| t.trim().parse().ok())
}

/// A value of a "flat keyed" file such as cpu.stat ("key value" lines).
fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

/// The mounts of a `/proc/<pid>/mountinfo` text (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNTPOINT
/// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS". Malformed lines are skipped.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            Some(MountEntry {
                mount_point: PathBuf::from(unescape_octal(fields.get(4)?)),
                fstype: (*fields.get(sep + 1)?).to_owned(),
                super_options: fields.get(sep + 3).copied().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This kind of machine: v1 controllers each on its own mount, plus an empty cgroup2 at
    /// /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// systemd's classic v1 layout: cpu and cpuacct co-mounted, optional fields present.
    const V1_COMOUNTED: &str = "\
25 21 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    const V2: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
26 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn v1(path: &str) -> Option<Mount> {
        Some(Mount {
            version: Version::V1,
            path: path.into(),
        })
    }

    #[test]
    fn hybrid_with_empty_unified_uses_v1_per_controller() {
        let c = Cgroups::from_mountinfo(HYBRID, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/unified"));
            Some("hugetlb\n".into())
        });
        assert_eq!(c.memory, v1("/sys/fs/cgroup/memory"));
        assert_eq!(c.pids, v1("/sys/fs/cgroup/pids"));
        assert_eq!(c.cpu, v1("/sys/fs/cgroup/cpu"));
        assert_eq!(c.cpuacct, v1("/sys/fs/cgroup/cpuacct"));
        assert!(c.available());
        assert!(c.missing().is_empty());
    }

    #[test]
    fn comounted_cpu_cpuacct_and_missing_pids() {
        let c = Cgroups::from_mountinfo(V1_COMOUNTED, |_| Some(String::new()));
        assert_eq!(c.cpu, v1("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(c.cpuacct, v1("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(c.memory, v1("/sys/fs/cgroup/memory"));
        assert_eq!(c.pids, None);
        assert_eq!(c.missing(), vec![Controller::Pids]);
        // One directory per hierarchy: cpu and cpuacct share theirs.
        let t = c.tenant("alice");
        assert_eq!(
            t.dirs(),
            vec![
                Path::new("/sys/fs/cgroup/memory/lodge/alice"),
                Path::new("/sys/fs/cgroup/cpu,cpuacct/lodge/alice"),
            ]
        );
    }

    #[test]
    fn unified_v2() {
        let c = Cgroups::from_mountinfo(V2, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory hugetlb pids rdma misc\n".into())
        });
        let v2 = Some(Mount {
            version: Version::V2,
            path: "/sys/fs/cgroup".into(),
        });
        assert_eq!(c.memory, v2);
        assert_eq!(c.pids, v2);
        assert_eq!(c.cpu, v2);
        assert_eq!(c.cpuacct, None);
        let t = c.tenant("bob2");
        assert_eq!(t.dirs(), vec![Path::new("/sys/fs/cgroup/lodge/bob2")]);
        assert_eq!(
            t.dir(Controller::Cpu),
            Some((Version::V2, Path::new("/sys/fs/cgroup/lodge/bob2")))
        );
    }

    #[test]
    fn v2_without_controllers_and_no_v1_is_unavailable() {
        let c = Cgroups::from_mountinfo(V2, |_| Some(String::new()));
        assert!(!c.available());
        assert_eq!(c.missing().len(), 3);
        assert!(c.tenant("carol").dirs().is_empty());
        // A group on nothing: every operation is a no-op.
        let t = c.tenant("carol");
        t.apply(&Limits {
            memory_mb: 1,
            max_processes: 1,
            cpu_percent: 1,
        })
        .unwrap();
        assert_eq!(t.pids().unwrap(), Vec::<i32>::new());
        assert_eq!(t.usage(), Usage::default());
        t.remove().unwrap();
    }

    #[test]
    fn mixed_v2_and_v1() {
        // v2 carries memory and pids, cpu stays on v1.
        let text = format!("{V2}40 31 0:37 / /v1/cpu rw - cgroup cgroup rw,cpu,cpuacct\n");
        let c = Cgroups::from_mountinfo(&text, |_| Some("memory pids".into()));
        assert_eq!(c.memory.as_ref().unwrap().version, Version::V2);
        assert_eq!(c.pids.as_ref().unwrap().version, Version::V2);
        assert_eq!(c.cpu, v1("/v1/cpu"));
        assert_eq!(c.cpuacct, v1("/v1/cpu"));
    }

    #[test]
    fn mountinfo_escapes_and_garbage() {
        let text = "1 2 0:3 / /a\\040b rw - cgroup cgroup rw,memory\nnonsense\n\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, Path::new("/a b"));
        assert_eq!(m[0].fstype, "cgroup");
        assert_eq!(m[0].super_options, "rw,memory");
        assert_eq!(unescape_octal("\\134x\\01"), "\\x\\01");
    }

    #[test]
    fn cpu_values() {
        assert_eq!(cpu_quota_usec(50), Some(50_000));
        assert_eq!(cpu_quota_usec(100), Some(100_000));
        assert_eq!(cpu_quota_usec(250), Some(250_000));
        assert_eq!(cpu_quota_usec(u64::MAX), None);
        assert_eq!(cpu_max(Some(50_000)), "50000 100000");
        assert_eq!(cpu_max(None), "max 100000");
        assert_eq!(v1_value(None), "-1");
        assert_eq!(v1_value(Some(8)), "8");
        assert_eq!(v2_value(None), "max");
        assert_eq!(v2_value(Some(67108864)), "67108864");
    }

    #[test]
    fn cpu_stat_parsing() {
        let stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(flat_keyed(stat, "usage_usec"), Some(123456));
        assert_eq!(flat_keyed(stat, "system_usec"), Some(23456));
        assert_eq!(flat_keyed(stat, "nr_periods"), None);
    }

    #[test]
    fn limits_out_of_range_are_rejected_before_touching_anything() {
        let c = Cgroups::from_mountinfo(HYBRID, |_| None);
        let t = c.tenant("dave");
        let err = t
            .apply(&Limits {
                memory_mb: u64::MAX / 1024,
                max_processes: 1,
                cpu_percent: 1,
            })
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidLimit("memory_mb")),
            "{err}"
        );
        assert!(t.add_process(0).is_err());
    }

    #[test]
    fn tenant_names() {
        assert!(is_tenant_name("ab"));
        assert!(is_tenant_name(
            "a1234567890123456789012345678901".get(..31).unwrap()
        ));
        for bad in [
            "a",
            "1ab",
            "Ab",
            "a/b",
            "..",
            "a.b",
            "",
            "a-b",
            &"a".repeat(32),
        ] {
            assert!(!is_tenant_name(bad), "{bad:?}");
        }
    }

    #[test]
    #[should_panic(expected = "not a tenant name")]
    fn tenant_rejects_paths() {
        Cgroups::default().tenant("../etc");
    }
}
