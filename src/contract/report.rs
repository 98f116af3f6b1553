//! The agent's reports to the panel: what it applied, what failed, which removals are done,
//! what the health checks saw. The panel is the only writer of the store; the agent (root)
//! only reads it (read-only, and refusing a store reached through a link) and reports here.
//!
//! The agent binds `<run-dir>/panel-report.sock` (root's alone, 0600) and hands the
//! listening socket to the panel. Each report is one JSON line; the panel answers `ok` once
//! it is in the store, or `refused <why>`.

use super::RunDir;
use crate::domain::AppliedState;
use serde::{Deserialize, Serialize};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The longest report line the panel reads (a health round of thousands of tenants).
pub const MAX_REPORT: u64 = 16 * 1024 * 1024;
/// The longest error message a report may carry.
pub const MAX_MESSAGE: usize = 4096;

/// What one health check saw of a tenant's pool.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthRecord {
    pub tenant_id: i64,
    pub ok: bool,
    pub error: Option<String>,
    pub ping_ms: Option<f64>,
    pub active_processes: Option<i64>,
    pub idle_processes: Option<i64>,
    pub total_processes: Option<i64>,
    pub listen_queue: Option<i64>,
    pub max_children_reached: Option<i64>,
    pub slow_requests: Option<i64>,
    pub accepted_conn: Option<i64>,
    pub restarts: i64,
    pub memory_bytes: Option<i64>,
    pub processes: Option<i64>,
    pub cpu_usec: Option<i64>,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// What the agent made of a tenant's generation.
    Applied {
        tenant_id: i64,
        generation: i64,
        state: AppliedState,
        error: Option<String>,
    },
    /// A tenant's master failed between passes (a crash loop): its applied state becomes
    /// `error` whatever its generation.
    Failed { tenant: String, message: String },
    /// A deleted tenant is torn down.
    Removed { removal_id: i64 },
    /// A round of health checks at `at`; `sample` keeps a point of the chart too.
    Health {
        at: i64,
        sample: bool,
        checks: Vec<HealthRecord>,
    },
}

impl Report {
    /// Whether the values are ones the agent would send: ids positive, messages bounded.
    pub fn check(&self) -> Result<(), &'static str> {
        let short = |m: &Option<String>| m.as_ref().is_none_or(|m| m.len() <= MAX_MESSAGE);
        match self {
            Report::Applied {
                tenant_id,
                generation,
                error,
                ..
            } if *tenant_id > 0 && *generation >= 0 && short(error) => Ok(()),
            Report::Failed { tenant, message }
                if crate::domain::TenantName::parse(tenant).is_ok()
                    && message.len() <= MAX_MESSAGE =>
            {
                Ok(())
            }
            Report::Removed { removal_id } if *removal_id > 0 => Ok(()),
            Report::Health { at, checks, .. }
                if *at > 0 && checks.iter().all(|c| c.tenant_id > 0 && short(&c.error)) =>
            {
                Ok(())
            }
            _ => Err("a value outside what the agent sends"),
        }
    }
}

/// The agent's end: one connection, made again when it breaks.
#[derive(Debug)]
pub struct Reporter {
    run_dir: RunDir,
    stream: Option<BufReader<UnixStream>>,
}

/// How long one report may take to be taken.
const TIMEOUT: Duration = Duration::from_secs(5);

impl Reporter {
    pub fn new(run_dir: RunDir) -> Self {
        Self {
            run_dir,
            stream: None,
        }
    }

    /// Sends a report and waits until the panel has stored it.
    pub async fn send(&mut self, report: &Report) -> io::Result<()> {
        let mut line = serde_json::to_vec(report).map_err(io::Error::other)?;
        line.push(b'\n');
        let result = tokio::time::timeout(TIMEOUT, self.exchange(&line))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")));
        match result {
            Ok(Ok(())) => Ok(()),
            // Refused, on a connection that stays good.
            Ok(Err(why)) => Err(io::Error::other(why)),
            Err(e) => {
                // The next report starts on a fresh connection.
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, line: &[u8]) -> io::Result<Result<(), String>> {
        if self.stream.is_none() {
            let stream = UnixStream::connect(self.run_dir.panel_report()).await?;
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.get_mut().write_all(line).await?;
        let mut answer = String::new();
        (&mut *stream).take(1024).read_line(&mut answer).await?;
        match answer.trim_end() {
            "ok" => Ok(Ok(())),
            "" => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the panel closed the connection",
            )),
            other if other.starts_with("refused") => Ok(Err(other.to_owned())),
            other => Err(io::Error::other(format!("an unexpected answer {other:?}"))),
        }
    }
}

/// Reads one report line from the agent (the panel's side); `None` at the end.
pub async fn read_report(
    stream: &mut BufReader<UnixStream>,
) -> io::Result<Option<Result<Report, String>>> {
    let mut line = Vec::new();
    let n = (&mut *stream)
        .take(MAX_REPORT)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a report without its end",
        ));
    }
    Ok(Some(
        serde_json::from_slice::<Report>(&line)
            .map_err(|e| e.to_string())
            .and_then(|r| r.check().map(|()| r).map_err(str::to_owned)),
    ))
}

/// The panel's answer to one report.
pub fn answer(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "ok\n".to_owned(),
        // One line: the reason's own line breaks are not passed on.
        Err(why) => format!("refused {}\n", why.replace(['\r', '\n'], " ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_odd_values_are_refused() {
        let r = Report::Applied {
            tenant_id: 3,
            generation: 9,
            state: AppliedState::Ok,
            error: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
        assert!(r.check().is_ok());
        assert!(Report::Removed { removal_id: 0 }.check().is_err());
        let failed = Report::Failed {
            tenant: "../etc".into(),
            message: "x".into(),
        };
        assert!(failed.check().is_err());
        assert!(serde_json::from_str::<Report>(r#"{"kind":"drop","x":1}"#).is_err());
        assert_eq!(answer(&Err("a\nb".into())), "refused a b\n");
    }

    #[tokio::test]
    async fn the_agent_hears_whether_its_report_was_stored() {
        let dir = std::env::temp_dir().join(format!("lodge-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = RunDir::new(&dir);
        let listener = tokio::net::UnixListener::bind(run.panel_report()).unwrap();
        let panel = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = BufReader::new(s);
            let mut seen = Vec::new();
            while let Some(report) = read_report(&mut s).await.unwrap() {
                let result = report.map(|r| seen.push(r));
                s.get_mut()
                    .write_all(answer(&result).as_bytes())
                    .await
                    .unwrap();
            }
            seen
        });
        let mut reporter = Reporter::new(run.clone());
        reporter
            .send(&Report::Removed { removal_id: 4 })
            .await
            .unwrap();
        // Refused by the panel's check: the agent hears why.
        let refused = reporter.send(&Report::Removed { removal_id: -1 }).await;
        assert!(refused.unwrap_err().to_string().contains("refused"));
        reporter
            .send(&Report::Removed { removal_id: 5 })
            .await
            .unwrap();
        drop(reporter);
        assert_eq!(
            panel.await.unwrap(),
            [
                Report::Removed { removal_id: 4 },
                Report::Removed { removal_id: 5 }
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
