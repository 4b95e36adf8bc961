//! Listeners: accept in bounded batches, and survive fd exhaustion.
//!
//! [`accept_batch`] accepts at most `max` connections per call, so one
//! busy listener cannot starve the other fds of the loop; if it stops at
//! `max` without an EAGAIN, the listener stays READY and the loop calls its
//! owner again on the next iteration, after the others had their turn.
//!
//! accept() failing with EMFILE or ENFILE leaves the connection queued, so
//! the listener stays readable: a level-triggered loop would call it again
//! and again. Instead the listener is paused ([`Ctx::pause_recv`]) for
//! [`EMFILE_PAUSE`], a warning is logged once per episode, and it resumes by
//! itself.
//!
//! A backend's fd limit ([`Ctx::fd_limit`], select's `FD_SETSIZE`) is the
//! same kind of capacity, except that the kernel does not enforce it:
//! accept() happily returns fd 1024, which select then cannot watch, and
//! the client would be accepted only to be dropped. So, on such a backend,
//! [`accept_batch`] first asks where the next fd would land
//! ([`next_fd_fits`]: fd numbers are allocated lowest-free-first, so the
//! next one is the lowest free number) and, when it would not fit, leaves
//! the client queued and pauses as on EMFILE (one warning per episode, a
//! retry every [`EMFILE_PAUSE`], no spin), and resumes at once when the
//! loop deregisters an fd (a connection closes). An owner that opens
//! more fds per connection (a relay's server socket) holds them in
//! advance, below the limit, before it accepts: held fds are taken
//! numbers, so the probe then answers for the accepted fd alone.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use anypoll_backends::Poller;

use crate::sockops::{Real, SockOps};
use crate::{Ctx, FdState};

/// How long a listener rests after EMFILE/ENFILE.
pub const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// Why a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchEnd {
    /// EAGAIN: the queue is empty; the listener is polled again.
    Drained,
    /// `max` connections were accepted; the loop calls again soon.
    Budget,
    /// Out of fds (EMFILE/ENFILE): paused for [`EMFILE_PAUSE`].
    Paused,
    /// Another error (logged); the listener is paused too.
    Failed,
}

/// Accepts up to `max` connections from listening socket `fd`, handing
/// each to `f`. Returns how many were accepted and why it stopped.
///
/// # Contract
/// `fd` is a listening socket registered with the loop, named by its
/// number as in [`Ctx`]'s contract; each accepted socket is handed to `f`
/// as an `OwnedFd`.
///
/// ```
/// use anypoll::listener::{self, BatchEnd};
/// use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent};
/// use std::net::TcpStream;
/// use std::os::fd::OwnedFd;
///
/// struct Server {
///     conns: Vec<OwnedFd>,
///     batches: Vec<(usize, BatchEnd)>,
/// }
/// impl Handler for Server {
///     fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
///         // Only the listener is registered here. A real server would
///         // register each connection too, with its own owner value.
///         let conns = &mut self.conns;
///         let batch = listener::accept_batch(cx, ev.fd, 2, |_cx, sock, _peer| conns.push(sock));
///         self.batches.push(batch);
///         if conns.len() == 3 {
///             cx.stop();
///         }
///     }
/// }
///
/// let l = listener::bind("127.0.0.1:0".parse().unwrap(), 128, false).unwrap();
/// let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap()).collect();
/// let mut el = EventLoop::from_env().unwrap();
/// el.cx().register(&l, 0, FdState::RECV_ACTIVE).unwrap();
/// let mut s = Server { conns: Vec::new(), batches: Vec::new() };
/// el.run(&mut s).unwrap();
/// assert_eq!(s.conns.len(), clients.len());
/// // At most 2 per call: the first call stopped at its budget.
/// assert_eq!(s.batches[0], (2, BatchEnd::Budget));
/// ```
pub fn accept_batch<P: Poller>(
    cx: &mut Ctx<P>,
    fd: RawFd,
    max: usize,
    mut f: impl FnMut(&mut Ctx<P>, OwnedFd, SocketAddr),
) -> (usize, BatchEnd) {
    let mut n = 0;
    while n < max {
        if let Some(limit) = cx.fd_limit() {
            // A probe that fails (EMFILE, say) is left to accept() itself,
            // which fails alike and takes the paths below.
            if cx.counted(&mut Real).lowest_free_fd(fd).is_ok_and(|next| next >= limit) {
                let why = format_args!(
                    "the next connection's fd would not fit the {} backend (it watches fds below {limit})",
                    cx.backend()
                );
                return (n, pause_unless_drained(cx, fd, &why));
            }
        }
        match cx.accept(fd) {
            Ok(Some((sock, peer))) => {
                // An accept that works ends an EMFILE episode: the next one logs again.
                cx.emfile_logged = false;
                n += 1;
                f(cx, sock, peer);
            }
            Ok(None) => return (n, BatchEnd::Drained),
            Err(e) if is_out_of_fds(&e) => {
                pause_out_of_fds(cx, fd, &e);
                return (n, BatchEnd::Paused);
            }
            // The client gave up before we accepted: nothing to do.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED) | Some(libc::EPROTO)) => continue,
            Err(e) => {
                log::warn!("listener fd {fd}: accept failed: {e}; pausing accepts for {EMFILE_PAUSE:?}");
                cx.pause_recv(fd, EMFILE_PAUSE);
                return (n, BatchEnd::Failed);
            }
        }
    }
    (n, BatchEnd::Budget)
}

/// Whether the next fd this process opens gets a number below `limit`.
///
/// POSIX allocates the lowest free fd number, so the answer is the lowest
/// free number, found with one `fcntl(F_DUPFD_CLOEXEC)` of `fd` (any open
/// fd) and closed at once: two syscalls. The answer holds until another
/// fd is opened; in one thread nothing runs between the probe and the
/// accept that follows it, but another thread of the process may open an
/// fd in between (a multi-threaded owner keeps some headroom below the
/// limit, as the relay's maxconn does). An fd the caller holds in advance
/// for the same connection is a taken number, so the probe counts past it.
///
/// # Errors
/// The dup's OS error, errno kept: EMFILE/ENFILE when the process is out of
/// fds altogether ([`is_out_of_fds`]).
pub fn next_fd_fits(fd: RawFd, limit: RawFd) -> io::Result<bool> {
    // The bare OS error on failure, so that is_out_of_fds sees its errno;
    // the callers' messages name the listener.
    Ok(Real.lowest_free_fd(fd)? < limit)
}

/// Whether `e` says the process or the system is out of fds (EMFILE,
/// ENFILE).
pub fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Pauses listener `fd` for [`EMFILE_PAUSE`] because fds ran out (`why`),
/// with one warning per episode; an accept that works ends the episode.
/// [`accept_batch`] calls it when accept itself finds no fd; an owner that
/// finds none for what a new connection needs (its server socket, say)
/// calls it too, so that both pause and log alike.
pub fn pause_out_of_fds<P: Poller>(cx: &mut Ctx<P>, fd: RawFd, why: &dyn std::fmt::Display) {
    if !cx.emfile_logged {
        log::warn!("listener fd {fd}: {why}; pausing accepts for {EMFILE_PAUSE:?}");
        cx.emfile_logged = true;
    }
    cx.pause_recv(fd, EMFILE_PAUSE);
}

/// [`pause_out_of_fds`] for a listener that is out of room *before* it
/// tried accept() (a backend's fd limit): the queue may as well be empty
/// (the last client was just taken), and an empty queue is no episode to
/// log. One poll(2) of `fd`, which has no fd-number limit, tells: with no
/// client queued, READY is cleared as by an EAGAIN and the batch ends
/// [`Drained`](BatchEnd::Drained) (the next client wakes the listener,
/// which then pauses); otherwise the listener pauses and logs as on EMFILE,
/// and it looks again at the end of the pause or as soon as the loop
/// deregisters an fd (a connection closing frees a number), whichever
/// comes first.
pub fn pause_unless_drained<P: Poller>(cx: &mut Ctx<P>, fd: RawFd, why: &dyn std::fmt::Display) -> BatchEnd {
    if let Ok(false) = cx.counted(&mut Real).poll_in(fd) {
        cx.would_block(fd, FdState::RECV_READY);
        return BatchEnd::Drained;
    }
    // Readable, or poll failed: assume a client waits, until the pause
    // ends or the loop deregisters an fd, whichever comes first.
    pause_out_of_fds(cx, fd, why);
    cx.wait_for_room(fd);
    BatchEnd::Paused
}

/// Creates a non-blocking listening TCP socket on `addr` with SO_REUSEADDR
/// (and SO_REUSEPORT when `reuse_port`), for one loop per thread.
pub fn bind(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket() with constant arguments; the result is checked.
    let s = unsafe { libc::socket(domain, libc::SOCK_STREAM, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a new socket that nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(s) };
    crate::sys::set_nonblock_cloexec(s)?;
    let one: libc::c_int = 1;
    let setopt = |opt| {
        // SAFETY: `one` is a live c_int and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of_val(&one) as _,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    setopt(libc::SO_REUSEADDR)?;
    if reuse_port {
        #[cfg(not(any(target_os = "illumos", target_os = "solaris")))]
        setopt(libc::SO_REUSEPORT)?;
        #[cfg(any(target_os = "illumos", target_os = "solaris"))]
        return Err(io::Error::new(io::ErrorKind::Unsupported, "SO_REUSEPORT is not available on this platform"));
    }
    let (ss, len) = crate::sys::std_to_sockaddr(&addr);
    // SAFETY: `ss` holds a sockaddr of `len` bytes.
    if unsafe { libc::bind(s, (&ss as *const libc::sockaddr_storage).cast(), len) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("bind {addr}: {e}")));
    }
    // SAFETY: listen on our bound socket.
    if unsafe { libc::listen(s, backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ownership moves from `owned` into the listener.
    Ok(unsafe { std::net::TcpListener::from_raw_fd(owned.into_raw_fd()) })
}
