//! The poll flags the fault tests inject with `Ctx::inject_event`, and
//! what each one claims.

use anypoll::backends::Ready;

/// A poll flag a fault test reports for an fd, as if the poller had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollFlag {
    /// ERR: the socket failed (hard).
    Err,
    /// HUP: the peer hung up both ways (hard).
    Hup,
    /// RDHUP with IN: the peer shut its side (hard).
    Rdhup,
    /// A spurious readable report (harmless).
    Readable,
    /// A spurious writable report (harmless).
    Writable,
}

impl PollFlag {
    /// The readiness reported.
    pub fn ready(self) -> Ready {
        match self {
            PollFlag::Err => Ready::ERROR,
            PollFlag::Hup => Ready::HUP,
            PollFlag::Rdhup => Ready::READABLE | Ready::READ_CLOSED,
            PollFlag::Readable => Ready::READABLE,
            PollFlag::Writable => Ready::WRITABLE,
        }
    }

    /// Whether it claims the peer hung up or failed: bytes may then be cut
    /// short (never corrupted), so a case with one checks less.
    pub fn hard(self) -> bool {
        matches!(self, PollFlag::Err | PollFlag::Hup | PollFlag::Rdhup)
    }
}
