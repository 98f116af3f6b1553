//! lodge's FastCGI client against a real php-fpm (Debian's php8.2-fpm).
//!
//! Each test starts its own php-fpm master in the foreground with a pool of two static
//! workers on a unix socket in a temp dir, and stops it when done. Without php-fpm
//! installed the tests say SKIPPED on stderr and pass; CI installs php8.2-fpm.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lodge::fastcgi::{self, FcgiError, Request};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, Pid, User};

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";
const POOL: &str = "lodge-test";
const PING_PATH: &str = "/fpm-ping";
const STATUS_PATH: &str = "/fpm-status";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A php-fpm master and its temp dir, stopped and removed on drop.
struct Fpm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Fpm {
    /// Starts php-fpm, or returns `None` (after saying SKIPPED) where it is not installed.
    fn start(test: &str) -> Option<Fpm> {
        if !Path::new(PHP_FPM).exists() {
            eprintln!("SKIPPED {test}: {PHP_FPM} not found (apt-get install php8.2-fpm)");
            return None;
        }
        let root = geteuid().is_root();
        let dir = std::env::temp_dir().join(format!("lodge-fpm-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // The workers run as nobody when we are root: they must reach the scripts.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("t.sock");

        let mut conf = format!(
            "[global]\n\
             pid = {dir}/fpm.pid\n\
             error_log = {dir}/fpm.log\n\
             daemonize = no\n\
             \n\
             [{POOL}]\n\
             listen = {socket}\n\
             pm = static\n\
             pm.max_children = 2\n\
             pm.status_path = {STATUS_PATH}\n\
             ping.path = {PING_PATH}\n",
            dir = dir.display(),
            socket = socket.display(),
        );
        if root {
            conf.push_str(
                "user = nobody\ngroup = nogroup\nlisten.owner = root\nlisten.group = root\n",
            );
        }
        let conf_path = dir.join("fpm.conf");
        fs::write(&conf_path, conf).unwrap();

        // Whatever php-fpm says before its error_log is open lands here.
        let out = fs::File::create(dir.join("fpm.out")).unwrap();
        let mut cmd = Command::new(PHP_FPM);
        cmd.arg("-F").arg("-y").arg(&conf_path);
        if root {
            cmd.arg("-R");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut fpm = Fpm { child, dir, socket };
        fpm.wait_ready();
        Some(fpm)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("php-fpm exited with {status}:\n{}", self.logs());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "php-fpm did not listen on {}:\n{}",
                    self.socket.display(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        let read = |name| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("fpm.out"), read("fpm.log"))
    }

    /// Writes a PHP script readable by the pool's user and returns its path.
    fn script(&self, name: &str, php: &str) -> String {
        let path = self.dir.join(name);
        fs::write(&path, php).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The uid scripts should run as: the pool's `nobody` when we are root, else ourselves.
fn pool_uid() -> u32 {
    if geteuid().is_root() {
        User::from_name("nobody").unwrap().unwrap().uid.as_raw()
    } else {
        geteuid().as_raw()
    }
}

#[tokio::test]
async fn ping_and_status() {
    let Some(fpm) = Fpm::start("ping_and_status") else {
        return;
    };
    let rtt = fastcgi::ping(&fpm.socket, PING_PATH, TIMEOUT)
        .await
        .unwrap();
    assert!(rtt < TIMEOUT);

    // The master listens before it has forked every worker: the status counts them as they
    // start.
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        let status = fastcgi::status(&fpm.socket, STATUS_PATH, TIMEOUT)
            .await
            .unwrap();
        if status.total_processes == 2 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.pool, POOL);
    assert_eq!(status.process_manager, "static");
    assert_eq!(status.total_processes, 2, "{status:?}");
    assert_eq!(status.idle_processes + status.active_processes, 2);
    // The status request itself is being served by a worker, and the ping came before.
    assert!(status.active_processes >= 1, "{status:?}");
    assert!(status.accepted_conn >= 2, "{status:?}");

    // A path that is neither page nor script: php-fpm looks for a file and finds none.
    let err = fastcgi::ping(&fpm.socket, "/not-the-ping", TIMEOUT)
        .await
        .unwrap_err();
    match err {
        FcgiError::Status {
            status: 404,
            detail,
        } => {
            assert!(detail.contains("Primary script unknown"), "{detail}")
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn script_runs_as_the_pool_user() {
    let Some(fpm) = Fpm::start("script_user") else {
        return;
    };
    let script = fpm.script(
        "who.php",
        "<?php\nheader('X-Test: 1');\nhttp_response_code(201);\n\
         echo posix_geteuid(), \"\\n\", $_SERVER['QUERY_STRING'], \"\\n\", \
         $_SERVER['REQUEST_URI'], \"\\n\";\n",
    );
    let req = Request::get(&script, "/who.php", "a=1&b=2");
    let resp = fastcgi::request(&fpm.socket, &req, TIMEOUT).await.unwrap();
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.header("x-test"), Some("1"));
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let body = String::from_utf8(resp.body).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines,
        [
            pool_uid().to_string().as_str(),
            "a=1&b=2",
            "/who.php?a=1&b=2"
        ]
    );
    assert_eq!(resp.app_status, 0);
}

#[tokio::test]
async fn post_body_is_echoed() {
    let Some(fpm) = Fpm::start("post_body") else {
        return;
    };
    let script = fpm.script(
        "echo.php",
        "<?php\nheader('Content-Type: application/octet-stream');\n\
         echo $_SERVER['CONTENT_LENGTH'], \"\\n\", file_get_contents('php://input');\n",
    );
    // Several STDIN records on the way in, several STDOUT records on the way out.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let req = Request::post(
        &script,
        "/echo.php",
        "application/octet-stream",
        body.clone(),
    );
    let resp = fastcgi::request(&fpm.socket, &req, TIMEOUT).await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let expected = [b"200000\n".to_vec(), body].concat();
    assert!(resp.body == expected, "echoed body differs");
}

#[tokio::test]
async fn big_params_take_several_records() {
    let Some(fpm) = Fpm::start("big_params") else {
        return;
    };
    let script = fpm.script(
        "params.php",
        "<?php\necho strlen($_SERVER['HTTP_X_ONE']), ' ', strlen($_SERVER['HTTP_X_TWO']), ' ', \
         md5($_SERVER['HTTP_X_TWO']);\n",
    );
    // Together too big for one PARAMS record; each pair must arrive whole.
    let two = "t".repeat(40_000);
    let req = Request::get(&script, "/params.php", "")
        .param("HTTP_X_ONE", "o".repeat(40_000))
        .param("HTTP_X_TWO", &two);
    let resp = fastcgi::request(&fpm.socket, &req, TIMEOUT).await.unwrap();
    let body = String::from_utf8(resp.body).unwrap();
    assert!(body.starts_with("40000 40000 "), "{body}");
}

#[tokio::test]
async fn stderr_does_not_break_the_response() {
    let Some(fpm) = Fpm::start("stderr") else {
        return;
    };
    let script = fpm.script(
        "noisy.php",
        "<?php\nerror_log('lodge-via-error-log');\n\
         file_put_contents('php://stderr', \"lodge-via-stderr-stream\\n\");\n\
         trigger_error('lodge-warning', E_USER_WARNING);\n\
         echo 'still fine';\n",
    );
    let req = Request::get(&script, "/noisy.php", "");
    let resp = fastcgi::request(&fpm.socket, &req, TIMEOUT).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"still fine");
    // error_log() and logged errors travel as FCGI_STDERR (php.ini has no error_log file).
    let stderr = String::from_utf8_lossy(&resp.stderr);
    assert!(stderr.contains("lodge-via-error-log"), "{stderr}");
    assert!(stderr.contains("lodge-warning"), "{stderr}");
}

#[tokio::test]
async fn missing_script_is_404() {
    let Some(fpm) = Fpm::start("missing") else {
        return;
    };
    let missing = fpm.dir.join("nope.php");
    let req = Request::get(missing.to_str().unwrap(), "/nope.php", "");
    let resp = fastcgi::request(&fpm.socket, &req, TIMEOUT).await.unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.body, b"File not found.\n");
    let stderr = String::from_utf8_lossy(&resp.stderr);
    assert!(stderr.contains("Primary script unknown"), "{stderr}");
}

#[tokio::test]
async fn too_large_and_too_slow() {
    let Some(fpm) = Fpm::start("limits") else {
        return;
    };
    let big = fpm.script("big.php", "<?php echo str_repeat('x', 17 << 20);");
    let req = Request::get(&big, "/big.php", "");
    let err = fastcgi::request(&fpm.socket, &req, TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FcgiError::TooLarge { limit } if limit == 16 << 20),
        "{err}"
    );

    let slow = fpm.script("slow.php", "<?php usleep(3000000); echo 'late';");
    let req = Request::get(&slow, "/slow.php", "");
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = fastcgi::request(&fpm.socket, &req, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FcgiError::Timeout(t) if t == timeout),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
