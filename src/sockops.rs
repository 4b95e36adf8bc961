//! The seam between the transport and the kernel.
//!
//! [`raw_sock`](crate::raw_sock) makes every socket syscall through a
//! [`SockOps`]. In production that is [`Real`], a zero-sized type whose
//! methods are `#[inline]` calls to libc: the transport functions are
//! generic over `SockOps`, so the seam compiles away (no vtable, no branch).
//! Tests substitute a type that scripts errno sequences, short reads and
//! splice failures, and falls through to [`Real`] for everything else, so
//! each platform's quirks run on a Linux host over real sockets.
//!
//! Syscalls are counted here too, in one place: [`Counted`] wraps any
//! `SockOps` and adds each call to the loop's [`Counters`] (obtained with
//! [`Ctx::counted`](crate::Ctx::counted)). Every socket syscall of the loop's
//! I/O helpers, of the transports and of the connection layer goes through
//! it, so none is counted by hand.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::counters::Counters;

/// The flags every send uses: `MSG_NOSIGNAL` where it exists, so that a
/// send to a closed peer is EPIPE and no SIGPIPE. Where it does not
/// (macOS), the loop sets `SO_NOSIGPIPE` on its sockets and ignores
/// SIGPIPE. Pass it to [`SockOps::send`] when calling it directly.
pub use crate::sys::SEND_FLAGS;

/// The socket syscalls the transport makes. Each returns the kernel's
/// result; EINTR is returned, not retried (the transport retries it).
///
/// # Contract
/// The fds are numbers the caller uses (a connection's socket, a pipe's
/// ends), as in [`Ctx`](crate::Ctx)'s contract; an implementation passes
/// them to syscalls only, so a closed one is EBADF, never undefined
/// behaviour.
pub trait SockOps {
    /// recv(2).
    fn recv(&mut self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize>;
    /// send(2).
    fn send(&mut self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize>;
    /// splice(2) of up to `len` bytes, non-blocking, moving pages where it can.
    fn splice(&mut self, from: RawFd, to: RawFd, len: usize) -> io::Result<usize>;
    /// read(2) (draining a pipe after a splice failure).
    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize>;
    /// getsockopt(SO_ERROR): reading it clears it.
    fn so_error(&mut self, fd: RawFd) -> io::Result<i32>;
    /// shutdown(2).
    fn shutdown(&mut self, fd: RawFd, how: libc::c_int) -> io::Result<()>;
    /// socket(2): a new stream socket of `domain` (`AF_INET`, `AF_INET6`).
    /// By default the real call ([`Real`]), so a test seam scripts it only
    /// if it wants to.
    fn socket(&mut self, domain: libc::c_int) -> io::Result<OwnedFd> {
        Real.socket(domain)
    }
    /// connect(2) of `fd` to `addr`; a non-blocking socket says
    /// EINPROGRESS, returned as the error it is. By default the real call.
    fn connect(&mut self, fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
        Real.connect(fd, addr)
    }
    /// accept(2) on listener `fd`: the client's socket, non-blocking and
    /// close-on-exec, and its address; EAGAIN and EINTR are returned as
    /// errors. By default the real call.
    fn accept(&mut self, fd: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
        Real.accept(fd)
    }
    /// The number the next fd this process opens would get: the lowest
    /// free one, found with `fcntl(F_DUPFD_CLOEXEC)` of `fd` (any open fd)
    /// and closed at once, two syscalls. By default the real calls.
    fn lowest_free_fd(&mut self, fd: RawFd) -> io::Result<RawFd> {
        Real.lowest_free_fd(fd)
    }
    /// poll(2) of `fd` for input with a zero timeout: whether anything
    /// (input, a hang-up, an error) is pending on it now. poll(2) has no
    /// fd-number limit, unlike select. By default the real call.
    fn poll_in(&mut self, fd: RawFd) -> io::Result<bool> {
        Real.poll_in(fd)
    }
}

/// The real syscalls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

fn ret(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl SockOps for Real {
    #[inline]
    fn recv(&mut self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length during the call.
        ret(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) })
    }

    #[inline]
    fn send(&mut self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of its length during the call.
        ret(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) })
    }

    #[inline]
    fn splice(&mut self, from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
            // SAFETY: null offsets are allowed for pipes and sockets; no memory is passed.
            ret(unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) })
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = (from, to, len);
            Err(io::Error::from_raw_os_error(libc::ENOSYS))
        }
    }

    #[inline]
    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length during the call.
        ret(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
    }

    fn so_error(&mut self, fd: RawFd) -> io::Result<i32> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are live and describe a c_int.
        let r = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len)
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(err)
        }
    }

    fn shutdown(&mut self, fd: RawFd, how: libc::c_int) -> io::Result<()> {
        // SAFETY: shutdown with integer arguments.
        ret(unsafe { libc::shutdown(fd, how) } as isize).map(drop)
    }

    fn socket(&mut self, domain: libc::c_int) -> io::Result<OwnedFd> {
        // SAFETY: socket() with integer arguments; the result is checked.
        let s = ret(unsafe { libc::socket(domain, libc::SOCK_STREAM, 0) } as isize)?;
        // SAFETY: `s` is a new socket that nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(s as RawFd) })
    }

    fn connect(&mut self, fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
        let (ss, len) = crate::sys::std_to_sockaddr(addr);
        // SAFETY: `ss` holds a sockaddr of `len` bytes, live during the call.
        ret(unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } as isize).map(drop)
    }

    fn accept(&mut self, fd: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
        crate::sys::accept(fd)
    }

    fn lowest_free_fd(&mut self, fd: RawFd) -> io::Result<RawFd> {
        // SAFETY: F_DUPFD_CLOEXEC only reads `fd` (a bad fd gives EBADF) and
        // returns a new fd or -1; it takes no pointer.
        let probe = ret(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) } as isize)? as RawFd;
        // SAFETY: `probe` is the new fd fcntl just returned; nobody else owns
        // it, and dropping it closes it.
        drop(unsafe { OwnedFd::from_raw_fd(probe) });
        Ok(probe)
    }

    fn poll_in(&mut self, fd: RawFd) -> io::Result<bool> {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd, a live local, and a zero timeout.
        ret(unsafe { libc::poll(&mut p, 1, 0) } as isize).map(|n| n > 0)
    }
}

/// A [`SockOps`] that counts every call in [`Counters`]: recv and read in
/// `reads`, send in `writes`, splice in `splices`, accept in `accepts`,
/// getsockopt(SO_ERROR), shutdown, socket, connect, poll and the free-fd
/// probe (two) in `other`; EINTR and EAGAIN calls included, as the kernel
/// saw them. Made per call with [`Ctx::counted`](crate::Ctx::counted);
/// generic and inline, so it costs the additions and nothing else.
#[derive(Debug)]
pub struct Counted<'a, S> {
    ops: &'a mut S,
    counters: &'a mut Counters,
}

impl<'a, S: SockOps> Counted<'a, S> {
    /// Counts the calls made through `ops` in `counters`.
    #[inline]
    pub fn new(ops: &'a mut S, counters: &'a mut Counters) -> Self {
        Counted { ops, counters }
    }
}

impl<S: SockOps> SockOps for Counted<'_, S> {
    #[inline]
    fn recv(&mut self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        self.counters.reads += 1;
        self.ops.recv(fd, buf, flags)
    }
    #[inline]
    fn send(&mut self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
        self.counters.writes += 1;
        self.ops.send(fd, buf, flags)
    }
    #[inline]
    fn splice(&mut self, from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        self.counters.splices += 1;
        self.ops.splice(from, to, len)
    }
    #[inline]
    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        self.counters.reads += 1;
        self.ops.read(fd, buf)
    }
    #[inline]
    fn so_error(&mut self, fd: RawFd) -> io::Result<i32> {
        self.counters.other += 1;
        self.ops.so_error(fd)
    }
    #[inline]
    fn shutdown(&mut self, fd: RawFd, how: libc::c_int) -> io::Result<()> {
        self.counters.other += 1;
        self.ops.shutdown(fd, how)
    }
    #[inline]
    fn socket(&mut self, domain: libc::c_int) -> io::Result<OwnedFd> {
        self.counters.other += 1;
        self.ops.socket(domain)
    }
    #[inline]
    fn connect(&mut self, fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
        self.counters.other += 1;
        self.ops.connect(fd, addr)
    }
    #[inline]
    fn accept(&mut self, fd: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
        self.counters.accepts += 1;
        self.ops.accept(fd)
    }
    #[inline]
    fn lowest_free_fd(&mut self, fd: RawFd) -> io::Result<RawFd> {
        self.counters.other += 2; // the dup and its close
        self.ops.lowest_free_fd(fd)
    }
    #[inline]
    fn poll_in(&mut self, fd: RawFd) -> io::Result<bool> {
        self.counters.other += 1;
        self.ops.poll_in(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The listener's own calls are counted in the seam like the rest: an
    /// accept that finds no client is still one accept, the free-fd probe
    /// is two calls, the zero-timeout poll is one.
    #[test]
    fn counted_counts_the_listener_calls_and_the_probe_is_true() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let fd = l.as_raw_fd();
        let mut c = Counters::default();
        let mut ops = Real;
        let mut counted = Counted::new(&mut ops, &mut c);
        let e = counted.accept(fd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert!(!counted.poll_in(fd).unwrap(), "nothing is queued yet");
        let next = counted.lowest_free_fd(fd).unwrap();
        let opened = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(next, opened.as_raw_fd(), "the probe named another number than the next open got");
        drop(opened);

        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut counted = Counted::new(&mut ops, &mut c);
        while !counted.poll_in(fd).unwrap() {
            assert!(std::time::Instant::now() < deadline, "the client never showed up on the listener");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (sock, peer) = counted.accept(fd).unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(sock.as_raw_fd() >= 0);
        assert_eq!(c.accepts, 2, "{c}");
        assert!(c.other >= 4, "two polls and the probe's two calls: {c}");
    }
}
