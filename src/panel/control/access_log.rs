//! A vhost's access log, for those who reach its tenant: the last lines, or the last lines
//! containing a search text. The file is read from its end in blocks, so a large log costs
//! about as much as the lines asked for; a search reads at most `MAX_SCAN` bytes.

use super::{Control, ControlError};
use crate::domain::{DomainName, FieldError, TenantName};
use crate::panel::policy::Actor;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Lines shown when none are asked for.
pub const DEFAULT_LINES: usize = 200;
/// The most lines one answer holds.
pub const MAX_LINES: usize = 1000;
/// The longest search text, in characters.
pub const MAX_SEARCH: usize = 200;
/// The most bytes read from the end of a file for one answer.
pub const MAX_SCAN: u64 = 64 * 1024 * 1024;
/// Bytes read at a time, from the end backwards.
const BLOCK: usize = 64 * 1024;
/// Longer lines are left out (lodge's own are far shorter).
const MAX_LINE: usize = 16 * 1024;

/// What to show: how many lines, and the text they must contain (ASCII case ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRequest {
    pub lines: usize,
    pub search: Option<String>,
}

impl TailRequest {
    /// From the raw `lines` and `q` parameters; an empty one takes the default.
    pub fn parse(lines: Option<&str>, q: Option<&str>) -> Result<Self, ControlError> {
        let mut errors = Vec::new();
        let lines = match lines.map(str::trim).filter(|l| !l.is_empty()) {
            None => DEFAULT_LINES,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LINES).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "lines",
                        format!("must be a whole number from 1 to {MAX_LINES}"),
                    ));
                    DEFAULT_LINES
                }
            },
        };
        let search = match q.filter(|q| !q.is_empty()) {
            None => None,
            Some(q) if q.chars().count() > MAX_SEARCH => {
                errors.push(FieldError::new(
                    "q",
                    format!("must be at most {MAX_SEARCH} characters"),
                ));
                None
            }
            Some(q) if q.chars().any(char::is_control) => {
                errors.push(FieldError::new("q", "must not contain control characters"));
                None
            }
            Some(q) => Some(q.to_owned()),
        };
        if errors.is_empty() {
            Ok(Self { lines, search })
        } else {
            Err(ControlError::Invalid(errors))
        }
    }
}

/// The lines found, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    pub lines: Vec<String>,
    /// The file was read to its start: no older line was left out.
    pub complete: bool,
}

/// A vhost's log as its tenant's people may see it.
#[derive(Debug, Clone)]
pub struct VhostLog {
    pub tenant: String,
    pub domain: String,
    pub tail: Tail,
}

/// The tenant and the domain of a vhost whose log the actor may read: both within reach,
/// and the vhost the tenant's (otherwise: not found).
pub async fn reach(
    ctl: &Control,
    actor: &Actor,
    tenant: &str,
    domain: &str,
) -> Result<(TenantName, DomainName), ControlError> {
    let tenant = super::tenants::get(ctl, actor, tenant).await?;
    let vhost = super::vhosts::get(ctl, actor, domain).await?;
    if vhost.tenant_id != tenant.id {
        return Err(ControlError::NotFound("vhost"));
    }
    // Both become path segments: parsed again, whatever the store holds.
    let tenant = TenantName::parse(&tenant.name).map_err(|_| ControlError::NotFound("vhost"))?;
    let domain = DomainName::parse(&vhost.domain).map_err(|_| ControlError::NotFound("vhost"))?;
    Ok((tenant, domain))
}

/// The end of the access log of `domain`, a vhost of `tenant`. A vhost without a log yet
/// has no lines.
pub async fn tail(
    ctl: &Control,
    actor: &Actor,
    tenant: &str,
    domain: &str,
    request: &TailRequest,
) -> Result<VhostLog, ControlError> {
    let (tenant, domain) = reach(ctl, actor, tenant, domain).await?;
    let path = ctl.config.log_dir.access_log(&tenant, &domain);
    let (lines, search) = (request.lines, request.search.clone());
    let tail = tokio::task::spawn_blocking(move || read_tail(&path, lines, search.as_deref()))
        .await
        .map_err(|e| ControlError::Internal(e.into()))?
        .map_err(|e| {
            ControlError::Internal(anyhow::Error::from(e).context("reading an access log"))
        })?;
    Ok(VhostLog {
        tenant: tenant.as_str().to_owned(),
        domain: domain.as_str().to_owned(),
        tail,
    })
}

/// The last `want` lines of the file (containing `search`, if given). A missing file has
/// none. Never follows a symlink, never blocks on a FIFO.
pub fn read_tail(path: &Path, want: usize, search: Option<&str>) -> std::io::Result<Tail> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            (nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC)
                .bits(),
        )
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Tail {
                lines: Vec::new(),
                complete: true,
            })
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    tail_of(file, meta.len(), want, search, MAX_SCAN, BLOCK)
}

/// Reads backwards from `len` in blocks of `block` bytes, at most `max_scan` bytes.
fn tail_of<R: Read + Seek>(
    mut r: R,
    len: u64,
    want: usize,
    search: Option<&str>,
    max_scan: u64,
    block: usize,
) -> std::io::Result<Tail> {
    let needle = search.map(str::as_bytes).filter(|s| !s.is_empty());
    let floor = len.saturating_sub(max_scan);
    let mut found: Vec<String> = Vec::new(); // newest first
    let keep = |line: &[u8], found: &mut Vec<String>| {
        if !line.is_empty() && needle.is_none_or(|n| contains_ignore_case(line, n)) {
            found.push(String::from_utf8_lossy(line).into_owned());
        }
    };
    let mut pos = len;
    // The end of a line whose start lies in a block not read yet.
    let mut carry: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut buf = vec![0u8; block];
    while pos > floor && found.len() < want {
        let start = pos.saturating_sub(block as u64).max(floor);
        let n = (pos - start) as usize;
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(&mut buf[..n])?;
        pos = start;
        let chunk = &buf[..n];
        let mut end = n;
        while found.len() < want {
            let Some(newline) = chunk[..end].iter().rposition(|&b| b == b'\n') else {
                break;
            };
            let piece = &chunk[newline + 1..end];
            if !overlong && piece.len() + carry.len() <= MAX_LINE {
                if carry.is_empty() {
                    keep(piece, &mut found);
                } else {
                    let mut line = piece.to_vec();
                    line.extend_from_slice(&carry);
                    keep(&line, &mut found);
                }
            }
            carry.clear();
            overlong = false;
            end = newline;
        }
        if found.len() >= want {
            break;
        }
        // What precedes the first newline continues a line that starts further back.
        if overlong || end + carry.len() > MAX_LINE {
            overlong = true;
            carry.clear();
        } else {
            carry.splice(0..0, chunk[..end].iter().copied());
        }
    }
    // The file's first line has no newline before it.
    let mut complete = false;
    if pos == 0 && found.len() < want {
        if !overlong {
            keep(&carry, &mut found);
        }
        complete = true;
    }
    found.reverse();
    Ok(Tail {
        lines: found,
        complete,
    })
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tail(text: &str, want: usize, search: Option<&str>, block: usize) -> Tail {
        let bytes = text.as_bytes().to_vec();
        let len = bytes.len() as u64;
        tail_of(Cursor::new(bytes), len, want, search, MAX_SCAN, block).unwrap()
    }

    fn numbered(n: usize) -> String {
        (1..=n).map(|i| format!("line {i} GET /p{i}\n")).collect()
    }

    #[test]
    fn last_lines_whatever_the_block_size() {
        let text = numbered(100);
        for block in [1, 2, 3, 7, 16, 64, 4096] {
            let t = tail(&text, 3, None, block);
            assert_eq!(
                t.lines,
                ["line 98 GET /p98", "line 99 GET /p99", "line 100 GET /p100"],
                "block {block}"
            );
            assert!(!t.complete);
            let t = tail(&text, 500, None, block);
            assert_eq!(t.lines.len(), 100, "block {block}");
            assert_eq!(t.lines[0], "line 1 GET /p1");
            assert!(t.complete);
        }
    }

    #[test]
    fn search_ignores_ascii_case_and_keeps_order() {
        let text = numbered(100);
        for block in [5, 64, 4096] {
            let t = tail(&text, 2, Some("get /P1"), block);
            assert_eq!(t.lines, ["line 19 GET /p19", "line 100 GET /p100"]);
            let t = tail(&text, 50, Some("/p5"), block);
            assert_eq!(t.lines.len(), 11);
            assert_eq!(t.lines[0], "line 5 GET /p5");
            assert!(t.complete);
        }
        assert!(tail(&text, 5, Some("nowhere"), 64).lines.is_empty());
    }

    #[test]
    fn edges_empty_file_no_final_newline_blank_and_long_lines() {
        assert_eq!(
            tail("", 10, None, 8),
            Tail {
                lines: vec![],
                complete: true
            }
        );
        let t = tail("first\nsecond", 10, None, 4);
        assert_eq!(t.lines, ["first", "second"]);
        let t = tail("a\n\n\nb\n", 10, None, 2);
        assert_eq!(t.lines, ["a", "b"]);
        let long = "x".repeat(MAX_LINE + 10);
        let text = format!("before\n{long}\nafter\n");
        for block in [100, 4096, 1 << 20] {
            let t = tail(&text, 10, None, block);
            assert_eq!(t.lines, ["before", "after"], "block {block}");
        }
        // Invalid UTF-8 is shown, replaced.
        let t = tail_of(
            Cursor::new(b"ok\n\xff\xfe\n".to_vec()),
            6,
            5,
            None,
            MAX_SCAN,
            3,
        )
        .unwrap();
        assert_eq!(t.lines, ["ok", "\u{fffd}\u{fffd}"]);
    }

    #[test]
    fn a_search_stops_after_max_scan_bytes() {
        let text = format!("needle\n{}", numbered(1000));
        let len = text.len() as u64;
        let t = tail_of(
            Cursor::new(text.into_bytes()),
            len,
            10,
            Some("needle"),
            4096,
            512,
        )
        .unwrap();
        assert!(t.lines.is_empty());
        assert!(!t.complete, "the start of the file was not reached");
    }

    #[test]
    fn a_missing_file_has_no_lines_and_a_symlink_is_refused() {
        let dir = std::env::temp_dir().join(format!("lodge-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = read_tail(&dir.join("none.log"), 10, None).unwrap();
        assert!(t.lines.is_empty() && t.complete);
        std::fs::write(dir.join("real.log"), "secret\n").unwrap();
        std::os::unix::fs::symlink(dir.join("real.log"), dir.join("link.log")).unwrap();
        assert!(read_tail(&dir.join("link.log"), 10, None).is_err());
        assert_eq!(
            read_tail(&dir.join("real.log"), 10, None).unwrap().lines,
            ["secret"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parameters_are_checked() {
        let ok = TailRequest::parse(None, None).unwrap();
        assert_eq!((ok.lines, ok.search), (DEFAULT_LINES, None));
        let ok = TailRequest::parse(Some("50"), Some("GET /x")).unwrap();
        assert_eq!((ok.lines, ok.search.as_deref()), (50, Some("GET /x")));
        let field = |r: Result<TailRequest, ControlError>| match r {
            Err(ControlError::Invalid(e)) => e.iter().map(|e| e.field.clone()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        for bad in ["0", "1001", "-1", "ten", "1e3"] {
            assert_eq!(
                field(TailRequest::parse(Some(bad), None)),
                ["lines"],
                "{bad}"
            );
        }
        for bad in [
            "a\nb",
            "a\rb",
            "\u{0}",
            "\u{1b}[31m",
            &"q".repeat(MAX_SEARCH + 1),
        ] {
            assert_eq!(field(TailRequest::parse(None, Some(bad))), ["q"], "{bad:?}");
        }
        assert_eq!(
            field(TailRequest::parse(Some("5000"), Some("\t"))),
            ["lines", "q"]
        );
    }
}
