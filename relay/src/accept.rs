//! Accepting: one client at a time under `maxconn`, with the fd for its
//! server held in advance; pausing and resuming the listeners.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anypoll::listener::{accept_batch, pause_out_of_fds, BatchEnd};
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
    ///   because its server socket failed with EMFILE.
    pub(crate) fn accept(&mut self, cx: &mut Ctx, fd: RawFd) {
        for _ in 0..self.shared.cfg.maxaccept.max(1) {
            if !self.reserve_slot() {
                self.pause_listeners(cx);
                return;
            }
            if self.spare.is_none() {
                match spare_fd() {
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
                    // Its fd number goes to the server socket.
                    self.spare = None;
                    self.open(cx, sock, peer);
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
