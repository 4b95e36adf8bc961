//! The blocking far end of a socket, in a thread: [`Peer`], how it ends
//! ([`PeerEnd`]), and [`Served`] for one accepted connection.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::Duration;

use super::fds::set_blocking;

/// How a [`Peer`] ends its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEnd {
    /// `shutdown(SHUT_WR)`, then read to the end, then close.
    Shutdown,
    /// close() right after sending (after `read_first`, if asked).
    Close,
    /// Stay open: read to the end (until our side shuts or closes), then close.
    Open,
    /// `SO_LINGER {1, 0}` and close(): a RST.
    Reset,
}

/// The far end of a socket, in a thread, with blocking I/O: optionally
/// reads `read_first` bytes, then sends `send` (after `delay`, in `pace`
/// chunks if asked), ends as told, and returns every byte it read (until
/// EOF or an error).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The bytes to send.
    pub send: Vec<u8>,
    /// Read this many bytes before sending.
    pub read_first: usize,
    /// Sleep this long before sending.
    pub delay: Duration,
    /// Sleep this long before reading anything (a slow reader).
    pub read_delay: Duration,
    /// Send in chunks of this size with this pause after each.
    pub pace: Option<(usize, Duration)>,
    /// How to end.
    pub end: PeerEnd,
}

/// A [`Peer`] serving one connection of a listener.
#[derive(Debug)]
pub struct Served {
    /// The peer's thread; it returns the bytes it read.
    pub handle: JoinHandle<Vec<u8>>,
    /// Gets a message once the connection is accepted.
    pub accepted: std::sync::mpsc::Receiver<()>,
}

impl Peer {
    /// A peer that sends `send`, then ends with `end`, reading everything.
    pub fn new(send: Vec<u8>, end: PeerEnd) -> Peer {
        Peer { send, read_first: 0, delay: Duration::ZERO, read_delay: Duration::ZERO, pace: None, end }
    }

    /// Runs it on `fd` (made blocking) in this thread.
    pub fn run(self, fd: OwnedFd) -> Vec<u8> {
        set_blocking(fd.as_raw_fd());
        let mut f = std::fs::File::from(fd);
        let mut got = Vec::new();
        std::thread::sleep(self.read_delay);
        if self.read_first > 0 {
            got.resize(self.read_first, 0);
            let mut at = 0;
            while at < got.len() {
                match f.read(&mut got[at..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => at += n,
                }
            }
            got.truncate(at);
        }
        std::thread::sleep(self.delay);
        let sent = match self.pace {
            None => f.write_all(&self.send),
            Some((chunk, pause)) => self.send.chunks(chunk.max(1)).try_for_each(|c| {
                f.write_all(c)?;
                std::thread::sleep(pause);
                Ok(())
            }),
        };
        match self.end {
            PeerEnd::Reset => {
                let _ = crate::net::set_linger_zero(f.as_raw_fd());
                return got;
            }
            PeerEnd::Shutdown => {
                // SAFETY: shutdown with integer arguments on our own fd.
                unsafe { libc::shutdown(f.as_raw_fd(), libc::SHUT_WR) };
            }
            PeerEnd::Close => return got,
            PeerEnd::Open => {}
        }
        if sent.is_ok() {
            let mut rest = Vec::new();
            let _ = f.read_to_end(&mut rest);
            got.extend_from_slice(&rest);
        }
        got
    }

    /// Runs it on `fd` in a thread.
    pub fn spawn(self, fd: impl Into<OwnedFd>) -> JoinHandle<Vec<u8>> {
        let fd = fd.into();
        std::thread::spawn(move || self.run(fd))
    }

    /// Accepts one connection from `l` in a thread and runs on it.
    pub fn serve(self, l: std::net::TcpListener) -> Served {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let _ = tx.send(());
            self.run(s.into())
        });
        Served { handle, accepted: rx }
    }
}
