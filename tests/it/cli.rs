//! The command line: `user add`, `token create`, `check`, and settings from flags, the
//! environment and the TOML file.

use crate::harness::spawn_app;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn lodge(args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodge"));
    for var in [
        "LODGE_CONFIG",
        "LODGE_DATA_DIR",
        "LODGE_PANEL_LISTEN",
        "LODGE_PUBLIC_URL",
        "LODGE_UID_RANGE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LODGE_LOG", "warn")
        .envs(envs.iter().copied())
        .args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("lodge runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lodge-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn user_add_refuses_bad_input_and_token_create_prints_a_working_token() {
    let app = spawn_app().await;
    let dir = app.data_dir.to_str().unwrap().to_owned();

    // Hostile names and short passwords are refused with the field named, and exit non-zero.
    for (name, password, field) in [
        ("bad;name", "a-long-password", "username"),
        ("okname", "short", "password"),
        ("root\n", "a-long-password", "username"),
    ] {
        let out = lodge(
            &[
                "--data-dir",
                &dir,
                "user",
                "add",
                name,
                "--role",
                "reseller",
                "--password-stdin",
            ],
            Some(password),
            &[],
        );
        assert!(!out.status.success(), "{name:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "the message names {field}: {err}");
    }
    // Without --password-stdin the password is never taken from the command line.
    let out = lodge(
        &[
            "--data-dir",
            &dir,
            "user",
            "add",
            "carol",
            "--role",
            "reseller",
        ],
        None,
        &[],
    );
    assert!(!out.status.success());

    let out = lodge(
        &[
            "--data-dir",
            &dir,
            "user",
            "add",
            "carol",
            "--role",
            "reseller",
            "--password-stdin",
        ],
        Some("carol-password\n"),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lodge(
        &[
            "--data-dir",
            &dir,
            "user",
            "add",
            "carol",
            "--role",
            "reseller",
            "--password-stdin",
        ],
        Some("carol-password\n"),
        &[],
    );
    assert!(!out.status.success(), "a taken name is refused");

    let out = lodge(&["--data-dir", &dir, "token", "create", "carol"], None, &[]);
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("lodge_"), "{token}");
    let (status, me) = app.api(&token).get("/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "carol");
    assert_eq!(me["role"], "reseller");

    let (_, audit) = app.admin().await.get("/audit?actor=cli").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"user.create") && actions.contains(&"token.create"),
        "{actions:?}"
    );
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["source"] == "cli"));

    let out = lodge(&["--data-dir", &dir, "check"], None, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: store"));
}

#[test]
fn settings_come_from_flags_then_environment_then_file() {
    let dir = temp_dir("settings");
    let file_dir = dir.join("from-file");
    let env_dir = dir.join("from-env");
    let flag_dir = dir.join("from-flag");
    let config = dir.join("lodge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\npanel_listen = \"127.0.0.1:18181\"\n",
            file_dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let out = lodge(&["--config", config, "check"], None, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("from-file/lodge.db") && text.contains("127.0.0.1:18181"),
        "{text}"
    );

    let out = lodge(
        &["--config", config, "check"],
        None,
        &[
            ("LODGE_DATA_DIR", env_dir.to_str().unwrap()),
            ("LODGE_PANEL_LISTEN", "127.0.0.1:18282"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("from-env/lodge.db") && text.contains("127.0.0.1:18282"),
        "{text}"
    );

    let out = lodge(
        &[
            "--config",
            config,
            "--data-dir",
            flag_dir.to_str().unwrap(),
            "check",
        ],
        None,
        &[("LODGE_DATA_DIR", env_dir.to_str().unwrap())],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from-flag/lodge.db"), "{text}");

    // An unknown key or a bad value is an error, not a silent default.
    std::fs::write(dir.join("bad.toml"), "data_dirr = \"/tmp/x\"\n").unwrap();
    let out = lodge(
        &["--config", dir.join("bad.toml").to_str().unwrap(), "check"],
        None,
        &[],
    );
    assert!(!out.status.success());
    let out = lodge(
        &[
            "--data-dir",
            flag_dir.to_str().unwrap(),
            "--uid-range",
            "5-1",
            "check",
        ],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("uid range"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lodge install-service` writes the unit naming this binary, with a stop that leaves the
/// sites serving; `lodge check` then says it is installed. Where systemd does not run (this
/// development machine, CI), enabling fails and says why; the unit is written all the same.
#[tokio::test]
async fn install_service_writes_the_unit_and_check_reports_it() {
    let unit = std::path::Path::new("/etc/systemd/system/lodge.service");
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/etc/systemd/system").is_dir() {
        eprintln!("SKIPPED install_service_writes_the_unit_and_check_reports_it: needs root and /etc/systemd/system");
        return;
    }
    if unit.exists() {
        eprintln!("SKIPPED install_service_writes_the_unit_and_check_reports_it: a lodge.service is installed here already");
        return;
    }
    let out = lodge(&["install-service"], None, &[]);
    let written = std::fs::read_to_string(unit).expect("the unit is written");
    let _ = std::fs::remove_file(unit);
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_lodge")).unwrap();
    assert!(
        written.contains(&format!("\nExecStart={} serve\n", binary.display())),
        "{written}"
    );
    assert!(written.contains("\nKillMode=process\n") && written.contains("\nRestart=always\n"));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("systemctl"), "{err}");
    }
    // Written again for check to see, then gone.
    std::fs::write(unit, &written).unwrap();
    let dir = temp_dir("check-service");
    let check = lodge(
        &[
            "--data-dir",
            dir.to_str().unwrap(),
            "--agent",
            "false",
            "check",
        ],
        None,
        &[],
    );
    let _ = std::fs::remove_file(unit);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("service: installed at /etc/systemd/system/lodge.service"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
