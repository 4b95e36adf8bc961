//! The bounds, events, errors and counters of a [`BufConn`](super::BufConn).

use std::time::Duration;

/// Bounds and timeouts of a [`BufConn`](super::BufConn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes the input buffer holds at most; reading stops at this bound.
    pub input_capacity: usize,
    /// The high watermark: bytes the output queue holds at most. A write
    /// that does not fit is refused.
    pub output_high: usize,
    /// The low watermark: [`Events::DRAINED`] once the queue falls to it.
    pub output_low: usize,
    /// The connect must end within this.
    pub connect_timeout: Option<Duration>,
    /// No byte received for this long while input is wanted.
    pub read_timeout: Option<Duration>,
    /// No byte sent for this long while output waits.
    pub write_timeout: Option<Duration>,
    /// No byte in either direction for this long.
    pub idle_timeout: Option<Duration>,
    /// After a flush-then-close, how long the peer's input is read and
    /// dropped before the socket is closed anyway (a lingering close: a
    /// close with unread input would reset the connection and could lose
    /// the bytes just sent).
    pub linger: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            input_capacity: 16 * 1024,
            output_high: 64 * 1024,
            output_low: 0,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            linger: Duration::from_secs(2),
        }
    }
}

bitflags::bitflags! {
    /// What happened during one [`on_io`](super::BufConn::on_io) or
    /// [`on_timer`](super::BufConn::on_timer) call.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    #[must_use]
    pub struct Events: u16 {
        /// The connect succeeded.
        const CONNECTED = 1 << 0;
        /// New bytes are in the input buffer.
        const READABLE = 1 << 1;
        /// The output queue fell to the low watermark (once per crossing).
        const DRAINED = 1 << 2;
        /// The peer shut its side (told once); buffered input stays readable.
        const READ_EOF = 1 << 3;
        /// A read, write or idle timeout passed; [`BufConn::timed_out`](super::BufConn::timed_out)
        /// says which. The connection stays open: the owner decides.
        const TIMEOUT = 1 << 4;
        /// A hard error (the connect's included); [`BufConn::error`](super::BufConn::error) names it.
        const ERROR = 1 << 5;
        /// The connection is closed (error, connect timeout, or a
        /// flush-then-close that ended); the owner drops it.
        const CLOSED = 1 << 6;
        /// The input buffer is full: reading waits until the owner takes
        /// bytes. Still full after the owner's reads means a record longer
        /// than the buffer: the owner reads it in parts or disconnects.
        const INPUT_FULL = 1 << 7;
    }
}

/// Which timeout passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The connect did not end in time (the connection is closed with
    /// [`ConnError::Timeout`](crate::connection::ConnError::Timeout)).
    Connect,
    /// No input for `read_timeout`.
    Read,
    /// Output waited `write_timeout` without progress.
    Write,
    /// No byte either way for `idle_timeout`.
    Idle,
}

/// Why [`BufConn::write`](super::BufConn::write) refused bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The bytes do not fit under the high watermark: nothing was queued.
    /// `room` bytes would have fitted.
    Full {
        /// Free bytes in the queue.
        room: usize,
    },
    /// The write side is shut, or shutting, or the connection is closed
    /// (also when it failed during this write: then
    /// [`BufConn::is_closed`](super::BufConn::is_closed) is true and [`BufConn::error`](super::BufConn::error) says why).
    Closed,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Full { room } => write!(f, "output queue full ({room} bytes free)"),
            WriteError::Closed => f.write_str("write side closed"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Per-connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufCounters {
    /// Bytes received from the transport.
    pub bytes_in: u64,
    /// Bytes the transport took for sending.
    pub bytes_out: u64,
    /// Transport receive calls.
    pub rcv_calls: u64,
    /// Transport send calls.
    pub snd_calls: u64,
    /// Writes refused beyond the high watermark.
    pub refused: u64,
    /// Times reading stopped because the input buffer was full.
    pub input_stalls: u64,
    /// Bytes read from the peer and dropped during a lingering close.
    pub dropped_in: u64,
}
