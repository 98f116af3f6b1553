//! What in-process tests of the proxy share: a site in a temp dir and a route table for it,
//! a php-fpm pool started for the test, and requests sent through [`server::handle`] over a
//! real HTTP/1.1 connection (hyper on one end, raw bytes on the other).

use super::h1::ReqBody;
use super::metrics::Metrics;
use super::php::{Bodies, BodyLimits, Spool};
use super::routes::{Route, Table};
use super::server::{self, Conn, Shared};
use crate::contract::routes::{RouteEntry, Snapshot};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The domain every test site answers to (and `www.` of it).
pub const DOMAIN: &str = "a.example";

/// A tenant home with one site, `<home>/sites/a.example/public`, removed on drop. Every
/// directory is 0755 and every file 0644, so php-fpm's workers (nobody, under root) read
/// them.
pub struct Site {
    base: PathBuf,
}

impl Site {
    pub fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "lodge-proxy-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&base);
        let site = Site { base };
        fs::create_dir_all(site.docroot()).unwrap();
        for dir in [
            site.base.clone(),
            site.home(),
            site.home().join("sites"),
            site.home().join("sites").join(DOMAIN),
            site.docroot(),
        ] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        site
    }

    pub fn home(&self) -> PathBuf {
        self.base.join("home")
    }

    pub fn docroot(&self) -> PathBuf {
        self.home().join("sites").join(DOMAIN).join("public")
    }

    /// Where the site's php-fpm pool listens.
    pub fn socket(&self) -> PathBuf {
        self.base.join("fpm.sock")
    }

    /// Writes a file beneath the docroot.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.docroot().join(rel);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// The snapshot entry of the site: PHP on, no front controller, no redirects.
    pub fn entry(&self) -> RouteEntry {
        RouteEntry {
            domain: DOMAIN.into(),
            names: vec![DOMAIN.into(), format!("www.{DOMAIN}")],
            tenant: "acme".into(),
            home: self.home(),
            docroot: self.docroot(),
            php: true,
            front_controller: None,
            socket: self.socket(),
            max_children: 2,
            suspended: false,
            redirect_https: false,
            redirect_www: "none".into(),
            tls_cert: None,
            tls_key: None,
            body_limit_mb: 1,
        }
    }

    /// The table routing `entry`.
    pub fn table(entry: RouteEntry) -> Table {
        let (table, problems) = Table::build(&Snapshot {
            generation: 1,
            vhosts: vec![entry],
        });
        assert!(problems.is_empty(), "{problems:?}");
        table
    }

    pub fn route(&self) -> Arc<Route> {
        Self::table(self.entry()).lookup(DOMAIN).unwrap().clone()
    }

    /// What the proxy shares between connections, routing `entry`.
    pub fn shared(entry: RouteEntry) -> Arc<Shared> {
        Self::shared_with(entry, BodyLimits::default())
    }

    /// [`Site::shared`] holding request bodies within `limits`, spooled under the temp dir.
    pub fn shared_with(entry: RouteEntry, limits: BodyLimits) -> Arc<Shared> {
        let metrics = Arc::new(Metrics::default());
        let bodies = Bodies::new(limits, Spool::open(&std::env::temp_dir()));
        Arc::new(Shared::new(Self::table(entry), bodies, metrics, None))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A connection from 192.0.2.7:50123 to 198.51.100.1 on port 80, or 443 with TLS.
pub fn conn(tls: bool, sni: Option<&str>) -> Conn {
    let port = if tls { 443 } else { 80 };
    Conn::new(
        "192.0.2.7:50123".parse().unwrap(),
        format!("198.51.100.1:{port}").parse().unwrap(),
        tls,
        sni.map(str::to_owned),
        None,
    )
}

/// An answer as the client read it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection served by [`server::handle`] through hyper's HTTP/1.1: the client's end.
pub fn connect(shared: Arc<Shared>, conn: Conn) -> DuplexStream {
    let (client, server) = tokio::io::duplex(1 << 16);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (shared, conn) = (shared.clone(), conn.clone());
        async move {
            let req = req.map(ReqBody::Incoming);
            Ok::<_, std::convert::Infallible>(server::handle(shared, conn, req).await)
        }
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), service),
    );
    client
}

/// Reads the answer on `client` until the server closes the connection.
pub async fn reply<R: AsyncRead + Unpin>(client: &mut R) -> Reply {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut raw))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    parse_reply(&raw)
}

/// Sends `request` (a whole HTTP/1.1 request, head and body) on a connection served by
/// [`server::handle`], and reads the answer until the server closes the connection.
pub async fn send(shared: Arc<Shared>, conn: Conn, request: &[u8]) -> Reply {
    let mut client = connect(shared, conn);
    client.write_all(request).await.unwrap();
    reply(&mut client).await
}

/// `data` as one chunk of a chunked body (empty: the last chunk).
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// `GET path` with `Host: host` and nothing else.
pub async fn get(shared: Arc<Shared>, conn: Conn, host: &str, path: &str) -> Reply {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    send(shared, conn, request.as_bytes()).await
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole response head");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let (mut rest, mut joined) = (&body[..], Vec::new());
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = std::str::from_utf8(&rest[..nl]).unwrap();
            let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            joined.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 2 + size + 2..];
        }
        body = joined;
    }
    Reply {
        status: status.parse().unwrap(),
        headers,
        body,
    }
}

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// A php-fpm master for a site's pool (two static workers on [`Site::socket`]), stopped on
/// drop. Its workers run as the current user, or as nobody when that is root.
pub struct Fpm {
    child: Child,
    dir: PathBuf,
}

impl Fpm {
    /// Starts php-fpm, or returns `None` (after saying SKIPPED) where it is not installed.
    pub fn start(site: &Site, test: &str) -> Option<Fpm> {
        if !Path::new(PHP_FPM).exists() {
            eprintln!("SKIPPED {test}: {PHP_FPM} not found (apt-get install php8.2-fpm)");
            return None;
        }
        let root = nix::unistd::geteuid().is_root();
        let dir = site.base.join("fpm");
        fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "[global]\n\
             pid = {dir}/fpm.pid\n\
             error_log = {dir}/fpm.log\n\
             daemonize = no\n\
             \n\
             [site]\n\
             listen = {socket}\n\
             pm = static\n\
             pm.max_children = 2\n\
             php_admin_value[post_max_size] = 64M\n",
            dir = dir.display(),
            socket = site.socket().display(),
        );
        if root {
            conf.push_str(
                "user = nobody\ngroup = nogroup\nlisten.owner = root\nlisten.group = root\n",
            );
        }
        let conf_path = dir.join("fpm.conf");
        fs::write(&conf_path, conf).unwrap();
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
        let mut fpm = Fpm { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(site.socket()).is_err() {
            if let Some(status) = fpm.child.try_wait().unwrap() {
                panic!("php-fpm exited with {status}:\n{}", fpm.logs());
            }
            assert!(
                Instant::now() < deadline,
                "php-fpm did not listen:\n{}",
                fpm.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(fpm)
    }

    fn logs(&self) -> String {
        let read = |name| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("fpm.out"), read("fpm.log"))
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
