//! The cgroup limits on the real machine: needs root (skipped otherwise).
//!
//! Creates `lodge/lodgetest<pid>`, checks the limit files, moves processes in, checks the
//! process limit actually stops forks, then kills everything and removes the group. A guard
//! cleans up when an assertion fails halfway.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use lodge::agent::cgroup::{Cgroups, Controller, Limits, TenantCgroup, Version, PARENT};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// Kills every process of the group, reaps what is ours (we are a subreaper, so orphans of
/// the test shell come back to us), and removes the group and the `lodge` parents we created.
struct Guard {
    group: TenantCgroup,
    children: Vec<Child>,
    created_parents: Vec<PathBuf>,
}

impl Guard {
    fn kill_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
            let pids = self.group.pids().unwrap_or_default();
            for pid in &pids {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            reap_orphans();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            sleep(Duration::from_millis(50));
        }
        self.children.clear();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(err) = self.group.remove() {
            if !err.is_busy() || Instant::now() > deadline {
                eprintln!("cleanup: {err}");
                break;
            }
            sleep(Duration::from_millis(50));
        }
        for parent in &self.created_parents {
            // Fails (and stays) when someone else's group is in it.
            let _ = fs::remove_dir(parent);
        }
    }
}

fn reap_orphans() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

#[test]
fn limits_apply_and_bite() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    let cgroups = Cgroups::detect();
    if !cgroups.available() {
        eprintln!("SKIPPED: no cgroup controller available");
        return;
    }
    eprintln!("layout: {cgroups:?}");
    // Orphaned sleeps (their shell may die of a failed fork) are reparented to us, not to
    // an init that may not reap them: their zombies would keep pids.current up.
    nix::sys::prctl::set_child_subreaper(true).unwrap();

    let name = format!("lodgetest{}", std::process::id());
    let group = cgroups.tenant(&name);
    let created_parents = Controller::ALL
        .into_iter()
        .filter_map(|c| cgroups.mount(c))
        .map(|m| m.path.join(PARENT))
        .filter(|p| !p.exists())
        .collect();
    let mut guard = Guard {
        group: group.clone(),
        children: Vec::new(),
        created_parents,
    };

    let limits = Limits {
        memory_mb: 64,
        max_processes: 8,
        cpu_percent: 50,
    };
    group.apply(&limits).unwrap();
    group.apply(&limits).unwrap(); // idempotent

    // The files read back what the plan says.
    if let Some((version, dir)) = group.dir(Controller::Memory) {
        match version {
            Version::V1 => {
                assert_eq!(read(&dir.join("memory.limit_in_bytes")), "67108864");
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    assert_eq!(read(&memsw), "67108864");
                }
            }
            Version::V2 => assert_eq!(read(&dir.join("memory.max")), "67108864"),
        }
    }
    if let Some((_, dir)) = group.dir(Controller::Pids) {
        assert_eq!(read(&dir.join("pids.max")), "8");
    }
    if let Some((version, dir)) = group.dir(Controller::Cpu) {
        match version {
            Version::V1 => {
                assert_eq!(read(&dir.join("cpu.cfs_quota_us")), "50000");
                assert_eq!(read(&dir.join("cpu.cfs_period_us")), "100000");
            }
            Version::V2 => assert_eq!(read(&dir.join("cpu.max")), "50000 100000"),
        }
    }

    // A plan change up (on v1 the memsw limit has to be raised before the memory limit),
    // to unlimited, and back.
    let memory_file = group.dir(Controller::Memory).map(|(v, d)| match v {
        Version::V1 => d.join("memory.limit_in_bytes"),
        Version::V2 => d.join("memory.max"),
    });
    let bigger = Limits {
        memory_mb: 128,
        ..limits
    };
    group.apply(&bigger).unwrap();
    if let Some(file) = &memory_file {
        assert_eq!(read(file), "134217728");
    }
    let unlimited = Limits {
        memory_mb: 0,
        max_processes: 0,
        cpu_percent: 0,
    };
    group.apply(&unlimited).unwrap();
    if let Some(file) = &memory_file {
        let value = read(file);
        assert!(
            value == "max" || value.parse::<u64>().unwrap() >= 1 << 62,
            "{value}"
        );
    }
    if let Some((_, dir)) = group.dir(Controller::Pids) {
        assert_eq!(read(&dir.join("pids.max")), "max");
    }
    if let Some((Version::V1, dir)) = group.dir(Controller::Cpu) {
        assert_eq!(read(&dir.join("cpu.cfs_quota_us")), "-1");
    }
    group.apply(&limits).unwrap();
    if let Some(file) = &memory_file {
        assert_eq!(read(file), "67108864");
    }

    // A process moved in shows up.
    let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let sleeper_pid = sleeper.id() as i32;
    guard.children.push(sleeper);
    group.add_process(sleeper_pid).unwrap();
    assert!(group.pids().unwrap().contains(&sleeper_pid));
    let usage = group.usage();
    eprintln!("usage with one sleep: {usage:?}");
    if group.dir(Controller::Pids).is_some() {
        assert!(usage.processes.unwrap() >= 1, "{usage:?}");
    }
    if group.dir(Controller::Memory).is_some() {
        assert!(usage.memory_bytes.is_some(), "{usage:?}");
    }
    assert!(usage.cpu_usec.is_some() || group.dir(Controller::Cpu).is_none());

    // The process limit bites: a shell that wants 20 sleeps gets at most 8 processes in all.
    if let Some((_, pids_dir)) = group.dir(Controller::Pids) {
        let shell = Command::new("sh")
            .arg("-c")
            .arg("sleep 0.5; for i in $(seq 1 20); do sleep 5 & done; wait")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let shell_pid = shell.id() as i32;
        guard.children.push(shell);
        group.add_process(shell_pid).unwrap();

        let current = pids_dir.join("pids.current");
        let mut peak_current = 0u64;
        let mut peak_listed = 0usize;
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            peak_current = peak_current.max(read(&current).parse().unwrap());
            peak_listed = peak_listed.max(group.pids().unwrap().len());
            sleep(Duration::from_millis(20));
        }
        let events = pids_dir.join("pids.events");
        let events = if events.exists() {
            read(&events)
        } else {
            String::new()
        };
        eprintln!("pids.current peak {peak_current}, listed peak {peak_listed}, events {events:?}");
        assert!(peak_current <= 8, "pids.current reached {peak_current}");
        assert!(peak_listed <= 8, "{peak_listed} processes listed");
        // sleep 30 + sh + at most 6 sleeps: far fewer than the 20 the shell asked for.
        assert!(peak_listed < 20);
        if !events.is_empty() {
            assert_ne!(events, "max 0", "no fork was refused");
        }

        let shell_stderr = guard.children.iter_mut().find_map(|c| c.stderr.take());
        guard.kill_all();
        // The shell's complaint about forks that failed (dash: "Cannot fork"). Everything
        // holding the pipe is dead now, so this reads to the end.
        let mut said = String::new();
        if let Some(mut e) = shell_stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut said);
        }
        eprintln!("shell said: {said:?}");
    }

    // Empty again: the group goes, in every hierarchy.
    guard.kill_all();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !group.pids().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            group.pids()
        );
        sleep(Duration::from_millis(20));
    }
    group.remove().unwrap();
    for dir in group.dirs() {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    assert_eq!(group.pids().unwrap(), Vec::<i32>::new());
    group.remove().unwrap(); // already gone: fine
}
