//! The FastCGI pools: one per tenant socket, capped at the pool's `pm.max_children` (the
//! proxy knows it; nginx and Apache don't). A request first takes a permit (one per php-fpm
//! worker) from a bounded wait queue, then a kept-alive connection checked to be still open,
//! or a new one. Permits and kept connections are held per event loop.

use super::PhpError;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// How long a request may wait for a free worker before it is refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Waiting requests allowed per worker before new ones are refused at once.
pub const QUEUE_PER_WORKER: usize = 16;
/// A kept connection holds a php-fpm worker; one idle longer than this is closed, so that
/// workers are free for a graceful reload or stop (and for ondemand pools to shrink).
pub const IDLE_KEEP: Duration = Duration::from_secs(2);

struct Pool {
    socket: PathBuf,
    max: usize,
    gate: Mutex<Gate>,
}

impl Pool {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pool's permits (one per php-fpm worker), the requests waiting for one and the kept
/// connections, the last two by event loop: a socket wakes the loop it is registered with,
/// so a loop that leases its own connections and hands permits to its own waiters never has
/// to wake another thread.
#[derive(Default)]
struct Gate {
    /// Permits no request holds.
    free: usize,
    /// Requests waiting for a permit, by event loop, oldest first.
    waiters: Vec<VecDeque<Waiter>>,
    /// Kept connections, by the event loop they are registered with.
    idle: Vec<Vec<(UnixStream, Instant)>>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    since: Instant,
    grant: oneshot::Sender<()>,
}

/// A permit goes to a waiter of the loop that released it, unless another loop's oldest
/// waiter has waited this much longer: loops with more requests draw permits to them.
const LOCAL_SLACK: Duration = Duration::from_millis(5);

fn slot<T: Default>(list: &mut Vec<T>, i: usize) -> &mut T {
    if list.len() <= i {
        list.resize_with(i + 1, T::default);
    }
    &mut list[i]
}

impl Gate {
    /// Requests waiting for a permit, on every loop.
    fn waiting(&self) -> usize {
        self.waiters.iter().map(VecDeque::len).sum()
    }

    /// Hands a permit given back on loop `here` to the next waiter, or keeps it free.
    fn release(&mut self, here: usize) {
        loop {
            let oldest = |q: &VecDeque<Waiter>| q.front().map(|w| w.since);
            let local = self.waiters.get(here).and_then(oldest);
            let remote = (0..self.waiters.len())
                .filter(|&i| i != here)
                .filter_map(|i| Some((i, oldest(&self.waiters[i])?)))
                .min_by_key(|&(_, since)| since);
            let pick = match (local, remote) {
                (Some(l), Some((i, r))) if r + LOCAL_SLACK < l => i,
                (Some(_), _) => here,
                (None, Some((i, _))) => i,
                (None, None) => {
                    self.free += 1;
                    return;
                }
            };
            let Some(w) = self.waiters[pick].pop_front() else {
                return;
            };
            if w.grant.send(()).is_ok() {
                return;
            }
        }
    }

    /// A kept connection: one of loop `here`, else one of the loop that keeps the most
    /// (`true`: it must be moved to this loop).
    fn take_idle(&mut self, here: usize) -> Option<(UnixStream, bool)> {
        if let Some((s, _)) = self.idle.get_mut(here).and_then(Vec::pop) {
            return Some((s, false));
        }
        let most = self
            .idle
            .iter_mut()
            .filter(|l| !l.is_empty())
            .max_by_key(|l| l.len())?;
        most.pop().map(|(s, _)| (s, true))
    }
}

/// A request's place in a pool: a permit (one of `pm.max_children`) and, given back at a
/// clean end, the connection it used.
pub struct Lease {
    pool: Arc<Pool>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.gate().release(crate::proxy::current_loop());
    }
}

/// A request in a pool's queue; dropped before it was granted a permit (the wait ran out,
/// or the client went away) it leaves the queue, and a permit granted meanwhile goes on.
struct Queued {
    pool: Arc<Pool>,
    here: usize,
    id: u64,
    grant: oneshot::Receiver<()>,
    granted: bool,
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        // `grant` lives until this returns: a permit sent before the lock was taken arrived.
        let mut gate = self.pool.gate();
        let queue = slot(&mut gate.waiters, self.here);
        match queue.iter().position(|w| w.id == self.id) {
            Some(at) => {
                queue.remove(at);
            }
            None => gate.release(self.here),
        }
    }
}

impl Lease {
    pub fn socket(&self) -> &Path {
        &self.pool.socket
    }

    /// Keeps `stream` for the next request of this event loop.
    pub fn give_back(self, stream: UnixStream) {
        let mut gate = self.pool.gate();
        slot(&mut gate.idle, crate::proxy::current_loop()).push((stream, Instant::now()));
    }

    /// A kept connection that is still open (`true`), or a new one.
    pub(super) async fn connection(&self) -> Result<(UnixStream, bool), PhpError> {
        let here = crate::proxy::current_loop();
        loop {
            let kept = self.pool.gate().take_idle(here);
            let stream = match kept {
                None => return Ok((connect(&self.pool.socket).await?, false)),
                Some((stream, false)) => stream,
                // Kept by another loop: registered here instead, so that its answers
                // wake this loop.
                Some((stream, true)) => match stream.into_std().and_then(UnixStream::from_std) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            if still_open(&stream) {
                return Ok((stream, true));
            }
        }
    }
}

/// Whether php-fpm has not closed a kept connection: nothing to read and no end of file
/// (a worker that reached `pm.max_requests` hangs up right after its last answer).
fn still_open(stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// All pools, by socket path. A pool whose size changed is replaced.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<PathBuf, Arc<Pool>>>,
}

impl Pools {
    fn pool(&self, socket: &Path, max: u32) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        match pools.get(socket) {
            Some(p) if p.max == max as usize => p.clone(),
            _ => {
                let p = Arc::new(Pool {
                    socket: socket.to_owned(),
                    max: max as usize,
                    gate: Mutex::new(Gate {
                        free: max as usize,
                        ..Gate::default()
                    }),
                });
                pools.insert(socket.to_owned(), p.clone());
                p
            }
        }
    }

    fn all(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Requests waiting for a worker, by pool socket.
    pub fn queues(&self) -> Vec<(PathBuf, usize)> {
        self.all()
            .into_iter()
            .map(|p| {
                let waiting = p.gate().waiting();
                (p.socket.clone(), waiting)
            })
            .collect()
    }

    /// Permits of the pool no request holds.
    #[cfg(test)]
    pub(super) fn free_permits(&self, socket: &Path, max: u32) -> usize {
        self.pool(socket, max).gate().free
    }

    /// Closes kept connections idle for longer than `IDLE_KEEP`; run every second or so.
    pub fn sweep(&self) {
        for pool in self.all() {
            for idle in &mut pool.gate().idle {
                idle.retain(|(_, since)| since.elapsed() < IDLE_KEEP);
            }
        }
    }

    /// Waits for a free worker of the pool (bounded queue, bounded wait).
    pub(super) async fn lease(&self, socket: &Path, max_children: u32) -> Result<Lease, PhpError> {
        let pool = self.pool(socket, max_children.max(1));
        let here = crate::proxy::current_loop();
        let mut queued = {
            let mut gate = pool.gate();
            if gate.free > 0 {
                gate.free -= 1;
                drop(gate);
                return Ok(Lease { pool });
            }
            if gate.waiting() >= pool.max * QUEUE_PER_WORKER {
                return Err(PhpError::Saturated);
            }
            let (tx, rx) = oneshot::channel();
            let id = gate.next_id;
            gate.next_id += 1;
            slot(&mut gate.waiters, here).push_back(Waiter {
                id,
                since: Instant::now(),
                grant: tx,
            });
            Queued {
                pool: pool.clone(),
                here,
                id,
                grant: rx,
                granted: false,
            }
        };
        match tokio::time::timeout(QUEUE_WAIT, &mut queued.grant).await {
            Ok(Ok(())) => {
                queued.granted = true;
                Ok(Lease { pool })
            }
            _ => Err(PhpError::Saturated),
        }
    }
}

async fn connect(socket: &Path) -> Result<UnixStream, PhpError> {
    UnixStream::connect(socket)
        .await
        .map_err(|e| PhpError::Down(format!("{}: {e}", socket.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues a waiter on loop `on` that has waited `ago`; its grant's receiver.
    fn wait(gate: &mut Gate, on: usize, ago: Duration) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        gate.next_id += 1;
        slot(&mut gate.waiters, on).push_back(Waiter {
            id: gate.next_id,
            since: Instant::now() - ago,
            grant: tx,
        });
        rx
    }

    #[test]
    fn a_permit_goes_to_its_own_loop_unless_another_waited_much_longer() {
        let mut gate = Gate::default();
        let mut a = wait(&mut gate, 0, Duration::from_millis(1));
        let mut b = wait(&mut gate, 1, Duration::from_millis(3));
        // Loop 1's waiter is older, but not by LOCAL_SLACK: loop 0 keeps its permit.
        gate.release(0);
        assert!(a.try_recv().is_ok());
        assert!(b.try_recv().is_err());
        // A waiter far older than the local one is served first.
        let mut c = wait(&mut gate, 0, Duration::ZERO);
        let mut d = wait(&mut gate, 2, LOCAL_SLACK * 4);
        gate.release(0);
        assert!(d.try_recv().is_ok() && c.try_recv().is_err());
        // With no waiter of its own, a loop hands its permit to another loop's: the oldest.
        gate.release(3);
        assert!(b.try_recv().is_ok() && c.try_recv().is_err());
        gate.release(1);
        assert!(c.try_recv().is_ok());
        assert_eq!((gate.waiting(), gate.free), (0, 0));
        // A waiter that gave up is skipped; with nobody waiting the permit is free.
        drop(wait(&mut gate, 1, Duration::ZERO));
        gate.release(0);
        assert_eq!((gate.waiting(), gate.free), (0, 1));
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_gives_up_its_place_and_any_slot_it_was_given() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let pools = Pools::default();
        let path = Path::new("/nonexistent/lodge-gate.sock");
        let gate = || {
            let pool = pools.pool(path, 1);
            let g = pool.gate();
            (g.free, g.waiting())
        };
        let mut cx = Context::from_waker(Waker::noop());
        let first = pools.lease(path, 1).await.ok().unwrap();
        assert_eq!(gate(), (0, 0));

        // Queued, then gone before a slot came: it leaves the queue.
        let mut left = Box::pin(pools.lease(path, 1));
        assert!(left.as_mut().poll(&mut cx).is_pending());
        assert_eq!(gate(), (0, 1));
        drop(left);
        assert_eq!(gate(), (0, 0));

        // Queued, handed the slot, gone before it looked: the slot goes on (here: free).
        let mut handed = Box::pin(pools.lease(path, 1));
        assert!(handed.as_mut().poll(&mut cx).is_pending());
        drop(first);
        assert_eq!(gate(), (0, 0));
        drop(handed);
        assert_eq!(gate(), (1, 0));

        // A waiter that stays gets the slot when it is given back.
        let held = pools.lease(path, 1).await.ok().unwrap();
        let mut next = Box::pin(pools.lease(path, 1));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        drop(held);
        let Poll::Ready(Ok(lease)) = next.as_mut().poll(&mut cx) else {
            panic!("the waiter did not get the slot");
        };
        drop(lease);
        assert_eq!(gate(), (1, 0));
    }
}
