//! The proxy's control socket (`<run-dir>/proxy-control.sock`, bound by the agent and handed
//! to the proxy; root's alone): the agent asks the proxy to load the routes snapshot it just
//! published and hears which generation the proxy now serves, so a tenant is reported
//! `ok` only once its sites answer.
//!
//! One line each way: the agent sends `load`, the proxy answers `serving <generation>`.

use super::RunDir;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The longest line either side reads.
const MAX_LINE: u64 = 128;

/// What the agent may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Load the snapshot if it changed, then say which generation is served.
    Load,
}

impl Request {
    fn as_str(self) -> &'static str {
        match self {
            Request::Load => "load",
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        match line.trim_end() {
            "load" => Some(Request::Load),
            _ => None,
        }
    }
}

/// The proxy's answer to [`Request::Load`].
pub fn serving(generation: i64) -> String {
    format!("serving {generation}\n")
}

fn parse_serving(line: &str) -> Option<i64> {
    line.trim_end().strip_prefix("serving ")?.parse().ok()
}

/// Asks the proxy to load the snapshot; returns the generation it serves. Fails when no
/// proxy listens or it does not answer within `timeout`.
pub async fn load(run_dir: &RunDir, timeout: Duration) -> io::Result<i64> {
    let ask = async {
        let stream = tokio::net::UnixStream::connect(run_dir.proxy_control()).await?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{}\n", Request::Load.as_str()).as_bytes())
            .await?;
        let mut line = String::new();
        BufReader::new(read.take(MAX_LINE))
            .read_line(&mut line)
            .await?;
        parse_serving(&line).ok_or_else(|| io::Error::other(format!("unexpected answer {line:?}")))
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the proxy did not answer"))?
}

/// Reads one request from a connection to the control socket (the proxy's side).
pub async fn read_request(
    stream: &mut tokio::net::UnixStream,
    timeout: Duration,
) -> io::Result<Option<Request>> {
    let read = async {
        let mut line = String::new();
        BufReader::new((&mut *stream).take(MAX_LINE))
            .read_line(&mut line)
            .await?;
        Ok::<_, io::Error>(Request::parse(&line))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_is_answered_with_the_generation_served() {
        let dir = std::env::temp_dir().join(format!("lodge-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = RunDir::new(&dir);
        let listener = tokio::net::UnixListener::bind(run.proxy_control()).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let request = read_request(&mut s, Duration::from_secs(2)).await.unwrap();
            assert_eq!(request, Some(Request::Load));
            s.write_all(serving(42).as_bytes()).await.unwrap();
        });
        assert_eq!(load(&run, Duration::from_secs(2)).await.unwrap(), 42);
        server.await.unwrap();
        assert_eq!(Request::parse("drop tables\n"), None);
        assert_eq!(parse_serving("serving x"), None);
        // Nobody listening: an error, at once.
        std::fs::remove_file(run.proxy_control()).unwrap();
        assert!(load(&run, Duration::from_secs(2)).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
