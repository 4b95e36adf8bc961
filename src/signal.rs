//! Signals as loop events, through a self-pipe.
//!
//! The handler installed for each signal writes the signal number as one
//! byte into a non-blocking pipe (write(2) is async-signal-safe) and
//! restores errno. The loop watches the read end like any fd and hands each
//! signal to [`Handler::signal`](crate::Handler::signal). A full pipe drops
//! the byte, which is harmless: the same signal is already pending in it.
//! SA_RESTART is set, so no other syscall of the program sees EINTR because
//! of these signals; the pipe wakes the loop instead.
//!
//! One [`SignalPipe`] exists per process at a time (signal dispositions are
//! per process); creating a second one is an error. Dropping it restores
//! the previous dispositions.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// A signal a loop can deliver as an event: the ones a daemon handles.
/// Typed, so that an embedder needs no libc for them, and so that a signal
/// that cannot be caught (SIGKILL, SIGSTOP) or must not be (SIGSEGV)
/// cannot be asked for.
///
/// ```
/// use anypoll::Signal;
///
/// assert_eq!(Signal::from_raw(Signal::Term.as_raw()), Some(Signal::Term));
/// assert_eq!(Signal::Usr1.to_string(), "SIGUSR1");
/// assert_eq!(Signal::from_raw(9), None); // SIGKILL
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGINT: interrupt from the terminal (Ctrl-C).
    Int,
    /// SIGTERM: a request to stop.
    Term,
    /// SIGHUP: the terminal went away; daemons often reload on it.
    Hup,
    /// SIGUSR1: user-defined.
    Usr1,
    /// SIGUSR2: user-defined.
    Usr2,
    /// SIGCHLD: a child process stopped or exited.
    Chld,
}

impl Signal {
    /// Every signal a loop can deliver.
    pub const ALL: [Signal; 6] = [Signal::Int, Signal::Term, Signal::Hup, Signal::Usr1, Signal::Usr2, Signal::Chld];

    /// The platform's signal number.
    pub fn as_raw(self) -> libc::c_int {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Hup => libc::SIGHUP,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Chld => libc::SIGCHLD,
        }
    }

    /// The signal with number `raw`, if a loop can deliver it.
    pub fn from_raw(raw: libc::c_int) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_raw() == raw)
    }

    /// `"SIGINT"`, `"SIGTERM"`, …
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
            Signal::Hup => "SIGHUP",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Chld => "SIGCHLD",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let byte = sig as u8;
    // SAFETY: errno is thread-local; saving and restoring it keeps the
    // interrupted code's errno intact. write(2) is async-signal-safe and
    // `byte` lives for the call.
    unsafe {
        let errno = errno_location();
        let saved = *errno;
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *errno = saved;
    }
}

/// # Safety
/// Returns the calling thread's errno location, valid for the thread's life.
unsafe fn errno_location() -> *mut libc::c_int {
    cfg_if::cfg_if! {
        if #[cfg(any(target_os = "linux", target_os = "android", target_os = "dragonfly"))] {
            // SAFETY: libc's documented errno accessor on these platforms.
            unsafe { libc::__errno_location() }
        } else if #[cfg(any(target_os = "illumos", target_os = "solaris"))] {
            // SAFETY: as above.
            unsafe { libc::___errno() }
        } else if #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))] {
            // SAFETY: as above.
            unsafe { libc::__error() }
        } else if #[cfg(any(target_os = "openbsd", target_os = "netbsd"))] {
            // SAFETY: as above.
            unsafe { libc::__errno() }
        } else {
            compile_error!("errno location unknown for this platform")
        }
    }
}

/// The self-pipe and the dispositions it replaced.
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalPipe {
    /// Installs handlers for `signals`.
    ///
    /// # Errors
    /// `AlreadyExists` if another pipe is installed in the process; the
    /// error of pipe(2) or sigaction(2) otherwise.
    pub fn install(signals: &[Signal]) -> io::Result<SignalPipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe() writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe() succeeded: both fds are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in fds {
            crate::sys::set_nonblock_cloexec(fd)?;
        }
        if WRITE_FD.compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "another event loop already handles signals"));
        }
        let mut pipe = SignalPipe { read, write, previous: Vec::new() };
        for sig in signals.iter().map(|s| s.as_raw()) {
            // SAFETY: a zeroed sigaction is valid; we fill handler, mask and flags
            // before passing it to sigaction with a valid out-pointer.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                pipe.previous.push((sig, old));
            }
        }
        Ok(pipe)
    }

    /// The fd the loop watches.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Reads the pending signals.
    pub fn drain(&self, out: &mut Vec<Signal>) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a stack buffer of the given length from our pipe.
            let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            // Only installed signals are ever written, so every byte maps.
            out.extend(buf[..n as usize].iter().filter_map(|b| Signal::from_raw(libc::c_int::from(*b))));
        }
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: restoring a disposition sigaction gave us earlier.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        }
        let _ = WRITE_FD.compare_exchange(self.write.as_raw_fd(), -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}
