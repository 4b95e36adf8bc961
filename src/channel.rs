//! Channels: one direction of a stream, with its buffer or pipe and its
//! forwarding budget.
//!
//! `to_forward` is how many more bytes may be forwarded without anyone
//! looking at them ([`INFINITE`] for a plain TCP relay). Splice is used
//! only while the budget is at least [`SPLICE_MIN`] and never moves more
//! than the budget, since spliced bytes cannot be inspected or taken back.

use crate::buffer::Buffer;
use crate::pipe::Pipe;

/// An unlimited forwarding budget.
pub const INFINITE: u64 = u64::MAX;

/// The smallest budget worth a splice: below it, a copy is cheaper than
/// the pipe round trip.
pub const SPLICE_MIN: u64 = 4096;

/// One direction of a stream.
#[derive(Debug, Default)]
pub struct Channel {
    /// The buffer, held only while data is in it.
    pub buf: Option<Buffer>,
    /// The splice pipe, held only while data is in it.
    pub pipe: Option<Pipe>,
    /// Bytes that may still be forwarded ([`INFINITE`]: no limit).
    pub to_forward: u64,
    /// Bytes received from the producer.
    pub bytes_in: u64,
    /// Bytes sent to the consumer.
    pub bytes_out: u64,
    /// The producer will send nothing more (read side shut).
    pub eof: bool,
    /// The write side of the consumer has been shut.
    pub shut_sent: bool,
    /// A receive filled the whole buffer: this direction streams bulk data,
    /// so `SpliceMode::Auto` may splice it. Small exchanges (a 1 KiB
    /// request and its reply) never set it and stay on recv/send, where
    /// they cost one syscall each instead of a splice in, a splice out and
    /// an EAGAIN splice.
    pub streaming: bool,
}

impl Channel {
    /// A channel with a forwarding budget.
    pub fn new(to_forward: u64) -> Channel {
        Channel { to_forward, ..Channel::default() }
    }

    /// Bytes waiting in the buffer and the pipe.
    pub fn pending(&self) -> usize {
        self.buf.as_ref().map_or(0, Buffer::len) + self.pipe.as_ref().map_or(0, |p| p.data)
    }

    /// How many bytes a receive may take now: the budget, capped by `cap`.
    pub fn budget(&self, cap: usize) -> usize {
        if self.to_forward == INFINITE {
            cap
        } else {
            cap.min(usize::try_from(self.to_forward).unwrap_or(usize::MAX))
        }
    }

    /// Whether splicing is allowed by the budget.
    pub fn splice_allowed(&self) -> bool {
        self.to_forward >= SPLICE_MIN
    }

    /// Records `n` bytes received and spends them from the budget.
    pub fn received(&mut self, n: usize) {
        self.bytes_in += n as u64;
        if self.to_forward != INFINITE {
            self.to_forward -= (n as u64).min(self.to_forward);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_spent_and_caps_receives() {
        let mut c = Channel::new(10_000);
        assert!(c.splice_allowed());
        assert_eq!(c.budget(16_384), 10_000);
        c.received(7_000);
        assert_eq!(c.to_forward, 3_000);
        assert!(!c.splice_allowed());
        assert_eq!(c.budget(16_384), 3_000);
        let mut inf = Channel::new(INFINITE);
        inf.received(1 << 40);
        assert_eq!(inf.to_forward, INFINITE);
    }
}
