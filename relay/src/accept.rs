//! Accepting: one client at a time under `maxconn`, with the fd for its
//! server held in advance; pausing and resuming the listeners.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anypoll::listener::{accept_batch, pause_out_of_fds, pause_unless_drained, BatchEnd};
use anypoll::Ctx;

use crate::tag::TimerTag;
use crate::Worker;

impl Worker {
    ///
    /// Each client needs a slot under `maxconn` and a second fd for its
    /// server, and both are taken before the client is:
    ///
    /// * the slot is reserved in the shared count with a compare-and-swap
    ///   (with several threads, a load then an add would let two threads
    ///   take the last slot each);
    /// * the server's fd is held in advance as a spare fd, closed just
    ///   before the server socket is made. Out of fds, the spare cannot be
    ///   had again, so the next client stays queued in the kernel and the
    ///   listener pauses, rather than a client being accepted, then closed
    ///   because its server socket failed with EMFILE;
    /// * on a backend with an fd limit (select), both fds must also get
    ///   numbers below it. The spare is the server's number: it must be
    ///   below the limit (else it is dropped and the listener pauses as on
    ///   EMFILE), and [`accept_batch`] then checks that the accepted fd
    ///   lands below it too. Numbers are handed out lowest-first, so the
    ///   server socket made right after the spare is closed gets the
    ///   spare's number or a lower one.
    ///
    /// The spare goes with the client: a TLS client holds it through its
    /// handshake, and it is closed just before the server socket is made
    /// (see handshake.rs for why it is one spare per handshaking client).
    pub(crate) fn accept(&mut self, cx: &mut Ctx, fd: RawFd) {
        for _ in 0..self.shared.cfg.maxaccept.max(1) {
            if !self.reserve_slot() {
                self.pause_listeners(cx);
                return;
            }
            if self.spare.is_none() {
                match spare_fd() {
                    Ok(f) if cx.fd_limit().is_some_and(|limit| f.as_raw_fd() >= limit) => {
                        self.release_slot();
                        let why = format_args!(
                            "no fd below {} (the {} backend's limit) for a server connection",
                            cx.fd_limit().unwrap_or_default(),
                            cx.backend()
                        );
                        pause_unless_drained(cx, fd, &why);
                        return;
                    }
                    Ok(f) => self.spare = Some(f),
                    Err(e) => {
                        self.release_slot();
                        // No fd to spare for a client's server: rest as when
                        // accept itself finds none.
                        pause_out_of_fds(cx, fd, &format_args!("no fd for a server connection ({e})"));
                        return;
                    }
                }
            }
            let mut got = None;
            let (_, end) = accept_batch(cx, fd, 1, |_, sock, peer| got = Some((sock, peer)));
            match got {
                Some((sock, peer)) => {
                    self.stats.accepted += 1;
                    // Its fd number goes to the server socket, whenever
                    // that is made (a TLS client's after its handshake).
                    let spare = self.spare.take();
                    self.open(cx, sock, peer, spare);
                }
                None => self.release_slot(),
            }
            if end != BatchEnd::Budget {
                return;
            }
        }
    }

    /// Takes one connection slot under `maxconn`; false when all are taken.
    pub(crate) fn reserve_slot(&self) -> bool {
        let max = self.shared.cfg.maxconn;
        self.shared.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| (a < max).then_some(a + 1)).is_ok()
    }

    pub(crate) fn release_slot(&self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn pause_listeners(&mut self, cx: &mut Ctx) {
        // Always stop polling, even if already paused: an EMFILE pause that
        // ends meanwhile re-enables the listeners, and a listener polled
        // with no slot to fill would be reported ready again and again.
        for l in &self.listeners {
            cx.stop_recv(l.as_raw_fd());
        }
        if !self.paused {
            self.paused = true;
            log::info!("maxconn {} reached: accepting paused", self.shared.cfg.maxconn);
            // Other threads free connections too: look again soon.
            cx.add_timer(Duration::from_millis(50), TimerTag::Maxconn.encode());
        }
    }

    pub(crate) fn maybe_resume(&mut self, cx: &mut Ctx) {
        if self.paused && !self.stopping && self.shared.active.load(Ordering::Relaxed) < self.shared.cfg.maxconn {
            self.paused = false;
            log::info!("below maxconn again: accepting resumed");
            for l in &self.listeners {
                cx.want_recv(l.as_raw_fd());
                cx.may_recv(l.as_raw_fd());
            }
        }
    }
}

/// An fd to hold in reserve: an unbound Unix datagram socket (close-on-exec;
/// no file system path needed, so it works in a chroot too).
pub(crate) fn spare_fd() -> io::Result<std::os::unix::net::UnixDatagram> {
    std::os::unix::net::UnixDatagram::unbound()
}

/// How many fds below `limit` are open now: one `fcntl(F_GETFD)` per
/// number, done once at start.
pub(crate) fn open_fds_below(limit: RawFd) -> usize {
    // SAFETY: F_GETFD only asks for the fd's flags; a closed number gives
    // EBADF. No pointer is passed.
    (0..limit).filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).count()
}

/// What the relay needs below a backend's fd limit, besides the fds
/// already open: the numbers it holds or takes for its own use, and the
/// numbers per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdBudget {
    /// Held by the relay itself, not by a connection: one spare per thread
    /// (the next server socket), one health-check socket per server
    /// (thread 0), one stats client.
    pub(crate) own: usize,
    /// Per connection: the client's and the server's socket, and with
    /// splice one pipe (two fds; pipes are not watched, but they take
    /// numbers, handed out lowest-first, like any fd).
    pub(crate) per_conn: usize,
}

impl FdBudget {
    pub(crate) fn of(cfg: &crate::config::RelayConfig) -> FdBudget {
        let checks = if cfg.check == crate::config::CheckKind::None { 0 } else { cfg.servers.len() };
        let stats = usize::from(cfg.stats.is_some());
        let pipe = if cfg.splice == anypoll::stream::SpliceMode::Never { 0 } else { 2 };
        FdBudget { own: cfg.threads + checks + stats, per_conn: 2 + pipe }
    }

    /// The largest maxconn whose connections all fit below `limit` with
    /// `open` fds open now: `(limit − open − own) / per_conn`, at least 1
    /// (below that, accepting still works one at a time: the listener
    /// checks the next fd before each accept). A higher `maxconn` would
    /// only make accept pause on the fd limit, so it is lowered to this.
    pub(crate) fn maxconn(self, maxconn: usize, limit: RawFd, open: usize) -> usize {
        let room = (limit.max(0) as usize).saturating_sub(open + self.own);
        maxconn.min((room / self.per_conn.max(1)).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxconn_fits_below_the_fd_limit() {
        let b = FdBudget { own: 3, per_conn: 2 };
        // 1024 - 21 open - 3 own = 1000 numbers: 500 connections.
        assert_eq!(b.maxconn(10_000, 1024, 21), 500);
        // A maxconn that fits is kept.
        assert_eq!(b.maxconn(100, 1024, 21), 100);
        // With a pipe per connection: 4 fds each.
        assert_eq!(FdBudget { own: 3, per_conn: 4 }.maxconn(10_000, 1024, 21), 250);
        // No room at all: still 1 (the listener's own check then holds).
        assert_eq!(b.maxconn(10_000, 1024, 2000), 1);
    }

    #[test]
    fn open_fds_are_counted() {
        // Another test of this binary may open a file meanwhile: the
        // count must be exact in one of a few tries.
        let exact = (0..5).any(|_| {
            let before = open_fds_below(1 << 16);
            let held: Vec<_> = (0..5).map(|_| spare_fd().expect("spare")).collect();
            open_fds_below(1 << 16) == before + held.len()
        });
        assert!(exact, "5 fds opened are not counted as 5");
    }
}
