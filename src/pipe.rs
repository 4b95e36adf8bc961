//! Pipes for splice, and their pool.
//!
//! Splicing socket → pipe → socket moves pages instead of copying bytes.
//! A [`Pipe`] knows how many bytes it holds (`data`), since the kernel does
//! not say; a pipe that still holds data is never returned to the pool.
//! Pipes are taken only while a channel forwards enough to be worth it and
//! returned as soon as they are empty.
//!
//! splice exists on Linux and Android only. Elsewhere the pool still works
//! (the tests use it) but the transport never asks for a pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One pipe used for splicing.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pub data: usize,
    /// What the pipe can hold, as the kernel reports it.
    pub capacity: usize,
}

/// The capacity a new pipe asks for: 256 KiB, four times the kernel's
/// default. A bulk transfer then takes about 15 splices per MiB instead of
/// about 42 (the relay benchmark, 1 MiB responses): each splice moves up to
/// the pipe's capacity. It costs no memory while the pipe is empty (pages
/// are held only while bytes are in flight, and a pipe goes back to the
/// pool as soon as it is empty). Where the kernel refuses (an unprivileged
/// user past `/proc/sys/fs/pipe-user-pages-soft`), the pipe keeps the size
/// it was given, and its real capacity is used.
pub const PIPE_SIZE: usize = 256 * 1024;

/// The kernel's default pipe capacity.
const DEFAULT_CAPACITY: usize = 64 * 1024;

impl Pipe {
    /// A new non-blocking, close-on-exec pipe.
    /// On Linux and Android (where splice exists) it is one `pipe2` call;
    /// elsewhere `pipe` and the flags set after.
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: `fds` has room for the two fds pipe2() writes.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        // SAFETY: `fds` has room for the two fds pipe() writes.
        let r = unsafe { libc::pipe(fds.as_mut_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the call succeeded; both fds are new and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if cfg!(not(any(target_os = "linux", target_os = "android"))) {
            crate::sys::set_nonblock_cloexec(fds[0])?;
            crate::sys::set_nonblock_cloexec(fds[1])?;
        }
        Ok(Pipe { read, write, data: 0, capacity: resize(fds[1]) })
    }
    /// The end splice reads from.
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
    /// The end splice writes to.
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }
}

/// Asks for [`PIPE_SIZE`]; returns the capacity the pipe has.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn resize(fd: RawFd) -> usize {
    // SAFETY: fcntl on a pipe fd we own; a refusal leaves the size as it was.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
    // SAFETY: as above; F_GETPIPE_SZ only reads.
    match unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) } {
        n if n > 0 => n as usize,
        _ => DEFAULT_CAPACITY,
    }
}

/// Without splice the size does not matter; pipes keep their default.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn resize(_fd: RawFd) -> usize {
    DEFAULT_CAPACITY
}

/// A pool of empty pipes.
#[derive(Debug, Default)]
pub struct PipePool {
    free: Vec<Pipe>,
    keep: usize,
    out: usize,
}

impl PipePool {
    /// A pool that keeps at most `keep` spare pipes.
    pub fn new(keep: usize) -> PipePool {
        PipePool { free: Vec::new(), keep, out: 0 }
    }
    /// An empty pipe.
    pub fn get(&mut self) -> io::Result<Pipe> {
        let p = match self.free.pop() {
            Some(p) => p,
            None => Pipe::new()?,
        };
        self.out += 1;
        Ok(p)
    }
    /// Gives a pipe back; one that still holds data is closed instead, since
    /// its bytes belong to a connection that is gone.
    pub fn put(&mut self, pipe: Pipe) {
        self.out = self.out.saturating_sub(1);
        if pipe.data == 0 && self.free.len() < self.keep {
            self.free.push(pipe);
        }
    }
    /// Pipes currently handed out.
    pub fn in_use(&self) -> usize {
        self.out
    }
    /// Spare pipes kept for reuse (two fds each).
    pub fn spare(&self) -> usize {
        self.free.len()
    }
}
