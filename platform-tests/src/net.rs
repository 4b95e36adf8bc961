//! Real sockets and process plumbing for the scenarios: loopback TCP pairs,
//! non-blocking connects, `SO_LINGER` resets, fd counting, `RLIMIT_NOFILE`
//! and a no-op signal handler.
//!
//! Everything here talks to 127.0.0.1 only. Every `unsafe` block says why it
//! is sound.

use std::io::{self, Read};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Turns a `-1` return into the thread's errno.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sets `O_NONBLOCK` and `FD_CLOEXEC` on `fd`.
fn set_nonblock_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns, with integer arguments only.
    unsafe {
        let fl = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
        let fdfl = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, fdfl | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

/// A connected, non-blocking Unix stream pair.
pub fn unix_pair() -> io::Result<(UnixStream, UnixStream)> {
    let (a, b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((a, b))
}

/// A connected, non-blocking TCP pair over 127.0.0.1: (client, server side).
pub fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nonblocking(true)?;
    server.set_nonblocking(true)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data, for which all-zero bytes are valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr = libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() };
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    {
        sa.sin_len = std::mem::size_of::<libc::sockaddr_in>() as u8;
    }
    sa
}

/// A fresh non-blocking, close-on-exec IPv4 TCP socket.
fn tcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() with constant arguments; the result is checked.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })?;
    // SAFETY: socket() succeeded, so fd is open and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_nonblock_cloexec(fd.as_raw_fd())?;
    Ok(fd)
}

/// How a non-blocking connect started.
#[derive(Debug)]
pub enum ConnectStart {
    /// `EINPROGRESS`: the handshake goes on in the kernel.
    InProgress,
    /// It completed (or failed) inside `connect()` itself.
    Immediate(io::Result<()>),
}

/// Starts a non-blocking connect to `addr`. The socket is returned as a
/// [`TcpStream`] so that `take_error` (`SO_ERROR`) and `peer_addr`
/// (`getpeername`) are at hand.
pub fn connect_nonblocking(addr: SocketAddrV4) -> io::Result<(TcpStream, ConnectStart)> {
    let fd = tcp_socket()?;
    let sa = sockaddr_in(addr);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a valid sockaddr_in that outlives the call, and `len` is its size.
    let ret = unsafe { libc::connect(fd.as_raw_fd(), (&sa as *const libc::sockaddr_in).cast(), len) };
    let start = if ret == 0 {
        ConnectStart::Immediate(Ok(()))
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            ConnectStart::InProgress
        } else {
            ConnectStart::Immediate(Err(e))
        }
    };
    Ok((TcpStream::from(fd), start))
}

/// A loopback listener with the given `listen()` backlog (0: the accept
/// queue is full after one connection, so the next SYN is dropped and that
/// connect stays pending until the queue has room).
pub fn listener_with_backlog(backlog: libc::c_int) -> io::Result<TcpListener> {
    let fd = tcp_socket()?;
    let sa = sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a valid sockaddr_in that outlives the call, and `len` is its size.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_in).cast(), len) })?;
    // SAFETY: listen() on a socket we own, with an integer argument.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    let listener = TcpListener::from(fd);
    listener.set_nonblocking(false)?;
    Ok(listener)
}

/// A 127.0.0.1 port with nothing listening: bound once, then released.
pub fn closed_port() -> io::Result<SocketAddrV4> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = l.local_addr()?.port();
    drop(l);
    Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Sets `SO_LINGER {1, 0}` on socket `fd`: its close then sends a RST.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let lg = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `lg` is a valid linger struct that outlives the call; the size matches.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Closes `stream` so that the peer gets a RST: `SO_LINGER {1, 0}`, then close.
pub fn reset(stream: TcpStream) -> io::Result<()> {
    set_linger_zero(stream.as_raw_fd())?;
    drop(stream);
    Ok(())
}

/// Half-closes `stream`'s sending side (the peer then reads EOF).
pub fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)
}

/// Reads until `WouldBlock` or EOF; returns the bytes read.
pub fn drain(mut r: impl Read) -> io::Result<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Makes `fd` refer to the same open file as `src`, closing whatever `fd`
/// was (`dup2`). The caller must own `fd`'s number afterwards.
///
/// # Safety
/// `fd` must not be an fd that something else in the process owns.
pub unsafe fn dup2_onto(src: RawFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: dup2 with integer arguments; the caller vouches that nobody else owns `fd`.
    let got = cvt(unsafe { libc::dup2(src, fd) })?;
    // SAFETY: dup2 succeeded, so `got` (== fd) is open and ours.
    let owned = unsafe { OwnedFd::from_raw_fd(got) };
    set_nonblock_cloexec(got)?;
    Ok(owned)
}

/// A duplicate of `fd` numbered at least `min` (`F_DUPFD_CLOEXEC`).
pub fn dup_at_least(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl with integer arguments; the result is checked.
    let got = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: fcntl succeeded, so `got` is a new open fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(got) })
}

/// How many fds this process has open, from `/proc/self/fd` or `/dev/fd`;
/// `None` where neither lists them.
pub fn open_fd_count() -> Option<usize> {
    for dir in ["/proc/self/fd", "/dev/fd"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let n = rd.count();
            // FreeBSD without fdescfs shows only 0, 1 and 2 in /dev/fd.
            if n > 3 {
                return Some(n);
            }
        }
    }
    None
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    // SAFETY: rlimit is plain data, for which all-zero bytes are valid.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit fills the rlimit we pass.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) })?;
    Ok((rl.rlim_cur as u64, rl.rlim_max as u64))
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` (never above the hard
/// limit, never lowers it). Returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft >= want {
        return Ok(soft);
    }
    let target = want.min(hard);
    let rl = libc::rlimit { rlim_cur: target as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: setrlimit reads the rlimit we pass.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) })?;
    Ok(target)
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs a handler that does nothing for `SIGUSR1`, *without*
/// `SA_RESTART`, so that a blocking wait interrupted by it fails with EINTR
/// instead of being restarted by the kernel. It stays installed (a stray
/// late signal is then harmless).
pub fn install_noop_sigusr1() -> io::Result<()> {
    // SAFETY: sigaction is plain data, for which all-zero bytes are valid.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    sa.sa_flags = 0;
    // SAFETY: sigemptyset initializes the mask inside our sigaction; then
    // sigaction reads it. The handler is async-signal-safe (it does nothing).
    unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        cvt(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// The calling thread, as `pthread_kill` needs it.
#[derive(Clone, Copy)]
pub struct ThreadHandle(libc::pthread_t);

// SAFETY: a pthread_t is an identifier, meaningful in any thread of the
// process; the users of `signal` keep the target thread alive meanwhile.
unsafe impl Send for ThreadHandle {}

impl ThreadHandle {
    /// The calling thread.
    pub fn current() -> ThreadHandle {
        // SAFETY: pthread_self has no preconditions.
        ThreadHandle(unsafe { libc::pthread_self() })
    }

    /// Sends `SIGUSR1` to the thread.
    ///
    /// # Safety
    /// The thread must still be running (pthread_kill on an ended thread is
    /// undefined behaviour).
    pub unsafe fn signal_usr1(self) -> io::Result<()> {
        // SAFETY: the caller keeps the thread alive; SIGUSR1 has a handler.
        let r = unsafe { libc::pthread_kill(self.0, libc::SIGUSR1) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }
}
