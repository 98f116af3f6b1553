//! Processes the agent started, found again after it restarts: each has a record in the
//! agent's root-only `<run-dir>/pids/` (pid, start time, executable), and a pidfd once it is
//! adopted, so a pid the kernel reused for another process is never mistaken for ours and a
//! signal never reaches the wrong process.

use nix::libc;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// What is kept of a started process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    /// Clock ticks after boot at which it started (`/proc/<pid>/stat`, field 22).
    pub start: u64,
    /// The program it runs (`/proc/<pid>/exe`).
    pub exe: PathBuf,
}

impl Record {
    /// The record of a running process, read from /proc.
    pub fn of(pid: u32) -> io::Result<Self> {
        Ok(Self {
            pid,
            start: start_time(pid)?,
            exe: std::fs::read_link(format!("/proc/{pid}/exe"))?,
        })
    }

    /// Whether the process `pid` names is still this one: same start time, same program
    /// (the kernel names a program whose file was replaced since, an upgraded binary, with
    /// ` (deleted)` after its path).
    pub fn matches_live(&self) -> bool {
        Record::of(self.pid).is_ok_and(|live| {
            live.start == self.start && without_deleted(&live.exe) == without_deleted(&self.exe)
        })
    }

    /// Whether the program's file is still the one the process runs (not replaced since).
    pub fn program_unchanged(&self) -> bool {
        std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .is_ok_and(|exe| exe.to_str().is_some_and(|e| !e.ends_with(" (deleted)")))
    }
}

fn without_deleted(exe: &Path) -> &Path {
    exe.to_str()
        .and_then(|e| e.strip_suffix(" (deleted)"))
        .map(Path::new)
        .unwrap_or(exe)
}

/// The start time of `pid`: field 22 of `/proc/<pid>/stat`, counted after the command
/// (which is in parentheses and may hold spaces).
fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unreadable stat"))?;
    // After the command: state is field 3, so start time (22) is the 20th here.
    after
        .split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no start time in stat"))
}

/// The directory of the records, root's alone.
pub fn records_dir(run_dir: &crate::contract::RunDir) -> PathBuf {
    run_dir.path().join("pids")
}

fn record_path(dir: &Path, key: &str) -> PathBuf {
    // Keys are `panel`, `proxy`, `fpm:<tenant>` (checked names): `:` becomes `-`.
    dir.join(format!("{}.json", key.replace(':', "-")))
}

/// Keeps the record of `key`'s process (written beside and renamed: never half a record).
pub fn save(dir: &Path, key: &str, record: &Record) -> io::Result<()> {
    let text = serde_json::to_vec(record).map_err(io::Error::other)?;
    crate::nofollow::replace_file(
        &record_path(dir, key),
        &text,
        crate::nofollow::FileMode::private(),
    )
    .map(|_| ())
}

/// The record of `key`, if one was kept.
pub fn load(dir: &Path, key: &str) -> Option<Record> {
    let text = crate::nofollow::read_to_string(&record_path(dir, key)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn forget(dir: &Path, key: &str) {
    let _ = std::fs::remove_file(record_path(dir, key));
}

/// Every key with a record.
pub fn keys(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json")?;
            Some(match stem.strip_prefix("fpm-") {
                Some(tenant) => format!("fpm:{tenant}"),
                None => stem.to_owned(),
            })
        })
        .collect()
}

/// A process held by a pidfd: signals and waits reach exactly it.
#[derive(Debug)]
pub struct Pidfd {
    pub pid: u32,
    fd: OwnedFd,
}

impl Pidfd {
    /// Opens a pidfd for the process `record` names, if it is still that process (checked
    /// after the pidfd is open, so the pid cannot be reused in between).
    pub fn adopt(record: &Record) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, record.pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just returned by pidfd_open and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        if !record.matches_live() {
            return Err(io::Error::other("the pid now belongs to another process"));
        }
        Ok(Self {
            pid: record.pid,
            fd,
        })
    }

    /// Whether the process has exited (never blocks).
    pub fn exited(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut poll, 1, 0) };
        n > 0 && poll.revents & libc::POLLIN != 0
    }

    /// Sends `signal` to exactly this process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A copy of the process's descriptor `target` (its listening sockets, for instance):
    /// `pidfd_getfd(2)`, which root may do.
    pub fn take_fd(&self, target: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: a valid pidfd, a descriptor number in that process, no flags.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.fd.as_raw_fd(), target, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pidfd_getfd returned a new descriptor of ours (close-on-exec).
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) {
        // The pidfd is readable once the process is gone.
        // SAFETY: the descriptor is this pidfd's, open for as long as the registration (the
        // future borrows `self`), and registered nowhere else.
        match unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                self.fd.as_raw_fd(),
                tokio::io::Interest::READABLE,
            )
        } {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(_) => {
                while !self.exited() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The process's environment (`/proc/<pid>/environ`), as name and value.
    pub fn environment(&self) -> Option<Vec<(String, String)>> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid)).ok()?;
        Some(
            environ
                .split(|b| *b == 0)
                .filter_map(|entry| {
                    let (k, v) = std::str::from_utf8(entry).ok()?.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect(),
        )
    }

    /// The process's environment variable `name` (`/proc/<pid>/environ`).
    pub fn env(&self, name: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid)).ok()?;
        let prefix = format!("{name}=");
        environ.split(|b| *b == 0).find_map(|entry| {
            std::str::from_utf8(entry)
                .ok()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_finds_its_process_and_not_a_reused_pid() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let record = Record::of(child.id()).unwrap();
        assert!(record.exe.ends_with("sleep"));
        let pidfd = Pidfd::adopt(&record).unwrap();
        assert!(!pidfd.exited());
        // The same pid with another start time is another process.
        let mut other = record.clone();
        other.start += 1;
        assert!(Pidfd::adopt(&other).is_err());
        pidfd.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
        child.wait().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), pidfd.wait())
            .await
            .unwrap();
        assert!(pidfd.exited());
        assert!(Pidfd::adopt(&record).is_err(), "gone");
    }

    #[test]
    fn records_round_trip_by_key() {
        let dir = std::env::temp_dir().join(format!("lodge-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let r = Record {
            pid: 42,
            start: 7,
            exe: "/usr/sbin/php-fpm8.2".into(),
        };
        save(&dir, "fpm:acme", &r).unwrap();
        save(&dir, "proxy", &r).unwrap();
        assert_eq!(load(&dir, "fpm:acme"), Some(r));
        let mut keys = keys(&dir);
        keys.sort();
        assert_eq!(keys, ["fpm:acme", "proxy"]);
        forget(&dir, "proxy");
        assert_eq!(load(&dir, "proxy"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
