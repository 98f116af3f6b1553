//! The sockets the agent binds and hands to its children: the proxy runs as `lodge-www` and
//! never needs root to listen on :80 or :443; the panel gets the socket the agent reports on.
//!
//! The child finds them at fixed descriptor numbers, named in `LODGE_FDS`
//! (`http=3,https=4,metrics=5,control=6`). Each name and each number may appear once: two
//! names on one descriptor would give it two owners, and both would close it.

use anyhow::{bail, Context};
use std::os::fd::{FromRawFd, RawFd};

/// The variable that names the handed-over descriptors.
pub const ENV: &str = "LODGE_FDS";
/// The first and last descriptor number a handed-over socket may have.
const FIRST_FD: RawFd = 3;
const LAST_FD: RawFd = 9;

/// A socket a child may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// The proxy's plain HTTP listener (TCP).
    Http,
    /// The proxy's HTTPS listener (TCP).
    Https,
    /// Where the panel reads the proxy's metrics (unix, listening).
    Metrics,
    /// Where the agent tells the proxy to load a new snapshot (unix, listening).
    Control,
    /// Where the agent reports to the panel (unix, listening).
    Report,
}

impl Socket {
    const ALL: [Socket; 5] = [
        Socket::Http,
        Socket::Https,
        Socket::Metrics,
        Socket::Control,
        Socket::Report,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Socket::Http => "http",
            Socket::Https => "https",
            Socket::Metrics => "metrics",
            Socket::Control => "control",
            Socket::Report => "report",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The agent's side: which of its descriptors becomes which number in the child.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    entries: Vec<(Socket, RawFd, RawFd)>,
}

impl Plan {
    /// Numbers the sockets 3, 4, ... in the order given. A socket given twice is refused.
    pub fn new(sockets: impl IntoIterator<Item = (Socket, RawFd)>) -> anyhow::Result<Self> {
        let mut entries: Vec<(Socket, RawFd, RawFd)> = Vec::new();
        for (socket, fd) in sockets {
            if entries.iter().any(|(s, _, _)| *s == socket) {
                bail!("the {} socket is handed over twice", socket.name());
            }
            let target = FIRST_FD + entries.len() as RawFd;
            if target > LAST_FD {
                bail!("too many sockets to hand over");
            }
            entries.push((socket, fd, target));
        }
        Ok(Self { entries })
    }

    /// The value of [`ENV`] for the child.
    pub fn env_value(&self) -> String {
        self.entries
            .iter()
            .map(|(s, _, target)| format!("{}={target}", s.name()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (descriptor in the agent, number in the child), for the launch.
    pub fn fds(&self) -> Vec<(RawFd, RawFd)> {
        self.entries.iter().map(|(_, fd, t)| (*fd, *t)).collect()
    }
}

/// Reads [`ENV`]: each name known, each once, each number in 3..=9 and used once.
pub fn parse(spec: &str) -> anyhow::Result<Vec<(Socket, RawFd)>> {
    let mut out: Vec<(Socket, RawFd)> = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (name, fd) = part
            .split_once('=')
            .with_context(|| format!("{ENV} must look like http=3,https=4,metrics=5"))?;
        let socket =
            Socket::parse(name).with_context(|| format!("{ENV}: unknown socket {name:?}"))?;
        let fd: RawFd = fd
            .parse()
            .with_context(|| format!("{ENV}: {fd:?} is not a descriptor number"))?;
        if !(FIRST_FD..=LAST_FD).contains(&fd) {
            bail!("{ENV}: descriptor {fd} is not one the agent hands over");
        }
        if out.iter().any(|(s, _)| *s == socket) {
            bail!("{ENV}: {name} is named twice");
        }
        if let Some((other, _)) = out.iter().find(|(_, f)| *f == fd) {
            bail!(
                "{ENV}: descriptor {fd} is given to both {} and {name}",
                other.name()
            );
        }
        out.push((socket, fd));
    }
    Ok(out)
}

/// A child's sockets, however it got them.
#[derive(Debug, Default)]
pub struct Sockets {
    pub http: Option<std::net::TcpListener>,
    pub https: Option<std::net::TcpListener>,
    pub metrics: Option<std::os::unix::net::UnixListener>,
    pub control: Option<std::os::unix::net::UnixListener>,
    pub report: Option<std::os::unix::net::UnixListener>,
}

impl Sockets {
    /// The sockets the agent handed over, or `None` when [`ENV`] is not set (the process
    /// runs alone). Call once: each descriptor becomes owned here, and the variable is
    /// removed so that nothing started later believes it has them too.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let Ok(spec) = std::env::var(ENV) else {
            return Ok(None);
        };
        // SAFETY: called once, at start, before the runtime's threads read the environment.
        unsafe { std::env::remove_var(ENV) };
        let mut sockets = Self::default();
        for (socket, fd) in parse(&spec)? {
            check_listening(fd, socket)?;
            // SAFETY: the agent put a listening socket of this kind at this number (checked
            // above), parse() made sure no other name claims it, and nothing else in this
            // process owns it.
            match socket {
                Socket::Http => {
                    sockets.http = Some(unsafe { std::net::TcpListener::from_raw_fd(fd) })
                }
                Socket::Https => {
                    sockets.https = Some(unsafe { std::net::TcpListener::from_raw_fd(fd) })
                }
                Socket::Metrics => {
                    sockets.metrics =
                        Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
                }
                Socket::Control => {
                    sockets.control =
                        Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
                }
                Socket::Report => {
                    sockets.report =
                        Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
                }
            }
        }
        Ok(Some(sockets))
    }
}

/// A handed-over descriptor must be a listening socket of the family its name says.
pub fn check_listening(fd: RawFd, socket: Socket) -> anyhow::Result<()> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};
    // SAFETY: only borrowed for the two queries below; ownership is taken by the caller.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let listening = getsockopt(&borrowed, sockopt::AcceptConn)
        .with_context(|| format!("{ENV}: descriptor {fd} ({}) is not a socket", socket.name()))?;
    if !listening {
        bail!(
            "{ENV}: descriptor {fd} ({}) is not listening",
            socket.name()
        );
    }
    let addr: SockaddrStorage = getsockname(fd)?;
    let unix = addr.as_unix_addr().is_some();
    let wants_unix = matches!(socket, Socket::Metrics | Socket::Control | Socket::Report);
    if unix != wants_unix {
        bail!(
            "{ENV}: descriptor {fd} ({}) is the wrong kind of socket",
            socket.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_each_used_once() {
        assert_eq!(
            parse("http=3,https=4,metrics=5").unwrap(),
            [(Socket::Http, 3), (Socket::Https, 4), (Socket::Metrics, 5)]
        );
        assert!(
            parse("http=3,https=3").is_err(),
            "one descriptor, two owners"
        );
        assert!(parse("http=3,http=4").is_err(), "one name twice");
        assert!(parse("http=2").is_err() && parse("http=10").is_err());
        assert!(parse("ftp=3").is_err() && parse("http").is_err() && parse("http=x").is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn a_plan_numbers_from_three_and_round_trips() {
        let plan = Plan::new([(Socket::Http, 17), (Socket::Metrics, 12)]).unwrap();
        assert_eq!(plan.env_value(), "http=3,metrics=4");
        assert_eq!(plan.fds(), [(17, 3), (12, 4)]);
        assert_eq!(
            parse(&plan.env_value()).unwrap(),
            [(Socket::Http, 3), (Socket::Metrics, 4)]
        );
        assert!(Plan::new([(Socket::Http, 17), (Socket::Http, 18)]).is_err());
    }

    #[test]
    fn only_listening_sockets_of_the_named_kind_are_taken() {
        use std::os::fd::AsRawFd;
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(check_listening(tcp.as_raw_fd(), Socket::Http).is_ok());
        assert!(check_listening(tcp.as_raw_fd(), Socket::Metrics).is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(check_listening(file.as_raw_fd(), Socket::Http).is_err());
        let stream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(check_listening(stream.as_raw_fd(), Socket::Http).is_err());
    }
}
