//! The select backend (every Unix).
//!
//! * Level only, plus oneshot (a fired fd is left out of the sets until
//!   `modify`). Edge is refused.
//! * select reports **no ERR or HUP** (no [`Capabilities::ERRHUP`](crate::Capabilities::ERRHUP)): an
//!   error or a hang-up shows as readable (and writable). A refused connect
//!   must be confirmed with `connect()` again or `getsockopt(SO_ERROR)`;
//!   anypoll's connection layer does so on backends without ERRHUP.
//! * The except set reports out-of-band data as [`Ready::PRIORITY`].
//! * Only fds below `FD_SETSIZE` (1024 on Linux) fit in an `fd_set`;
//!   `add` refuses a larger one with an error that says so, where a C program
//!   would write past the set.
//! * Each wait rebuilds the sets from the registrations: the cost grows with
//!   the highest fd.

use crate::Ready;

/// Translates select's three set memberships into [`Ready`].
pub fn translate(readable: bool, writable: bool, except: bool) -> Ready {
    let mut r = Ready::empty();
    if readable {
        r |= Ready::READABLE;
    }
    if writable {
        r |= Ready::WRITABLE;
    }
    if except {
        r |= Ready::PRIORITY;
    }
    r
}

/// The first fd number that select cannot watch on this platform.
#[allow(clippy::unnecessary_cast)] // usize on some platforms, c_int on others
pub const FD_SETSIZE: usize = libc::FD_SETSIZE as usize;

pub use imp::Select;

mod imp {
    use std::io;
    use std::os::fd::RawFd;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{translate, FD_SETSIZE};
    use crate::slots::Slots;
    use crate::sys::context;
    use crate::waker::FdWaker;
    use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

    const NAME: &str = "select";

    /// The select backend. See the [module docs](super).
    pub struct Select {
        slots: Slots,
        waker: Arc<FdWaker>,
        cursor: RawFd,
    }

    impl std::fmt::Debug for Select {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Select").field("fds", &self.slots.len()).finish()
        }
    }

    fn empty_set() -> libc::fd_set {
        // SAFETY: fd_set is plain data; FD_ZERO then makes it a valid empty set.
        unsafe {
            let mut set = std::mem::zeroed::<libc::fd_set>();
            libc::FD_ZERO(&mut set);
            set
        }
    }

    fn too_big(fd: RawFd) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NAME}: fd {fd} is not below FD_SETSIZE ({FD_SETSIZE}), so select cannot watch it; \
                 use another backend (--poller poll, or ANYPOLL_POLLER=poll)"
            ),
        )
    }

    impl Select {
        /// A new select backend with its waker.
        pub fn new() -> io::Result<Select> {
            let waker = Arc::new(FdWaker::new().map_err(|e| context(NAME, "waker (eventfd or pipe)", None, e))?);
            if waker.fd() as usize >= FD_SETSIZE {
                return Err(too_big(waker.fd()));
            }
            Ok(Select { slots: Slots::new(), waker, cursor: 0 })
        }

        fn caps() -> Capabilities {
            Capabilities::LEVEL | Capabilities::ONESHOT | Capabilities::FD_LIMIT
        }
    }

    impl Poller for Select {
        fn name(&self) -> &'static str {
            NAME
        }

        fn capabilities(&self) -> Capabilities {
            Self::caps()
        }

        fn fd_limit(&self) -> Option<RawFd> {
            Some(FD_SETSIZE as RawFd)
        }

        fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, Self::caps(), trigger)?;
            if fd < 0 || fd as usize >= FD_SETSIZE {
                return Err(too_big(fd));
            }
            // select(2) never reports a closed fd above the process's fd
            // table size (Linux ignores it), so a closed fd would wait
            // forever unnoticed; the other backends refuse it at add
            // (epoll, kqueue, event ports) or report it (poll: POLLNVAL).
            // SAFETY: F_GETFD only asks whether the number is open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(context(NAME, "add", Some(fd), io::Error::last_os_error()));
            }
            self.slots.insert(fd, token, interest, trigger).map(drop)
        }

        fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, Self::caps(), trigger)?;
            self.slots.update(NAME, fd, token, interest, trigger).map(drop)
        }

        fn delete(&mut self, fd: RawFd) -> io::Result<()> {
            self.slots.remove(NAME, fd).map(drop)
        }

        fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            events.clear();
            let (mut rd, mut wr, mut ex) = (empty_set(), empty_set(), empty_set());
            let wfd = self.waker.fd();
            // SAFETY: every fd put in a set is below FD_SETSIZE (checked at add and new).
            unsafe { libc::FD_SET(wfd, &mut rd) };
            let mut maxfd = wfd;
            for (fd, slot) in self.slots.iter() {
                let w = slot.watched();
                if w.is_empty() {
                    continue;
                }
                // SAFETY: as above, fd < FD_SETSIZE.
                unsafe {
                    if w.contains(Interest::READ) {
                        libc::FD_SET(fd, &mut rd);
                        libc::FD_SET(fd, &mut ex);
                    }
                    if w.contains(Interest::WRITE) {
                        libc::FD_SET(fd, &mut wr);
                    }
                }
                maxfd = maxfd.max(fd);
            }
            let mut tv = timeout.map(|d| libc::timeval {
                tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                // Round up to the next µs so a timeout never ends early.
                tv_usec: d.subsec_nanos().div_ceil(1000) as _,
            });
            let tvp = tv.as_mut().map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
            // SAFETY: the sets and the timeval are valid for the call; nfds = maxfd + 1.
            let n = unsafe { libc::select(maxfd + 1, &mut rd, &mut wr, &mut ex, tvp) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    return Ok(0);
                }
                if e.raw_os_error() == Some(libc::EBADF) && self.report_closed(events) > 0 {
                    return Ok(events.len());
                }
                return Err(context(NAME, "select", None, e));
            }
            if n == 0 {
                return Ok(0);
            }
            // SAFETY: wfd < FD_SETSIZE and `rd` was filled by select.
            if unsafe { libc::FD_ISSET(wfd, &rd) } {
                self.waker.drain();
                events.set_woken();
            }
            let ready: Vec<(RawFd, bool, bool, bool)> = self
                .slots
                .iter()
                .filter(|(_, s)| !s.watched().is_empty())
                // SAFETY: fd < FD_SETSIZE; the sets were filled by select.
                .map(|(fd, _)| unsafe {
                    (fd, libc::FD_ISSET(fd, &rd), libc::FD_ISSET(fd, &wr), libc::FD_ISSET(fd, &ex))
                })
                .filter(|&(_, r, w, x)| r || w || x)
                .collect();
            // Start after the last fd reported, so a small buffer does not starve high fds.
            let start = ready.iter().position(|&(fd, ..)| fd >= self.cursor).unwrap_or(0);
            for k in 0..ready.len() {
                let (fd, r, w, x) = ready[(start + k) % ready.len()];
                if events.is_full() {
                    break;
                }
                if let Some((token, ready)) = self.slots.accept(fd, None, translate(r, w, x)) {
                    events.push(Event { token, fd, ready });
                    self.cursor = fd + 1;
                }
            }
            Ok(events.len())
        }

        fn timeout_resolution(&self) -> Duration {
            // A timeval, rounded up to the next µs.
            Duration::from_micros(1)
        }

        fn waker(&self) -> Waker {
            Waker::new(self.waker.clone())
        }
    }

    impl Select {
        /// select(2) failed with EBADF: a watched fd was closed without
        /// `delete`. Reports each closed one as ERROR, as poll reports
        /// POLLNVAL, so that its owner learns it and the loop stops
        /// watching it; one closed fd must not fail every wait. Returns
        /// how many it reported.
        fn report_closed(&mut self, events: &mut Events) -> usize {
            let closed: Vec<RawFd> = self
                .slots
                .iter()
                .filter(|(_, s)| !s.watched().is_empty())
                .map(|(fd, _)| fd)
                // SAFETY: F_GETFD only asks whether the number is open.
                .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0)
                .collect();
            let mut n = 0;
            for fd in closed {
                if events.is_full() {
                    break;
                }
                if let Some((token, ready)) = self.slots.accept(fd, None, crate::Ready::ERROR) {
                    events.push(Event { token, fd, ready });
                    n += 1;
                }
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::translate;
    use crate::Ready;

    #[test]
    fn sets_to_ready() {
        assert_eq!(translate(true, false, false), Ready::READABLE);
        assert_eq!(translate(false, true, false), Ready::WRITABLE);
        assert_eq!(translate(true, true, true), Ready::READABLE | Ready::WRITABLE | Ready::PRIORITY);
        // select cannot say ERR or HUP, whatever happened.
        assert!(!translate(true, true, true).intersects(Ready::ERROR | Ready::HUP | Ready::READ_CLOSED));
    }
}
