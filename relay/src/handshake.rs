//! A connection slot's states, and the first one of a TLS client: its
//! handshake, run before any server is chosen (as HAProxy does with `ssl`
//! on a bind: the stream and its server connection are made only once the
//! client's handshake is done).
//!
//! ```text
//!                 accept: a slot under maxconn, the spare fd taken
//!                                  │
//!             plain front ┌────────┴────────┐ TLS front
//!                         │                 ▼
//!                         │           Handshaking ──── fails, EOF, ────▶ closed: one
//!                         │                 │         --timeout-handshake  end line, no
//!                         │                 │         or the grace         server connection
//!                         │                 │ done: pick a server,
//!                         │                 │ drop the spare, connect
//!                         ▼                 ▼
//!   Streaming: a Stream<Xprt, Xprt> (connect, the server's TLS handshake
//!   with --server-tls, data; streams.rs) ──────────────────────────────▶ closed
//! ```
//!
//! * Both states live in the same slot of `Worker::streams`, with the same
//!   owner tags (`Owner::Front`) and timer tag ([`TimerTag::Stream`]):
//!   the dispatch ([`Worker::slot_io`], [`Worker::slot_timer`]) looks at
//!   the state. The slot counts under `maxconn` from the accept to the
//!   close, in either state.
//! * **Handshaking** holds the client's connection (registered, recv
//!   wanted; send wanted while rustls has bytes for the client), its TLS
//!   transport, the deadline and its timer. [`Xprt::handshake`] drives the
//!   handshake without taking plaintext: a request sent in the same flight
//!   as the client's `Finished` stays in rustls (`rcv_pending`), and the
//!   stream, processed at once after the transition, reads it first.
//! * **The spare fd** taken at the accept (see [`Worker::accept`]) is held
//!   by the handshaking client and dropped just before its server socket
//!   is made, as a plain client's is at once. So every client, in either
//!   state, has its server's fd reserved: out of fds, the listener pauses
//!   instead of a handshaken client finding EMFILE; and on select the
//!   server socket gets the spare's number or a lower one, below the
//!   limit, however many clients handshake meanwhile (a spare per thread
//!   only would not say so: the numbers other clients took meanwhile may
//!   leave none below it). It costs what the server socket cost before:
//!   two fds per handshaking client, the fd budget of `maxconn` unchanged;
//!   what a stalled client no longer holds is a connection to a server.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use anypoll::connection::{ConnError, ConnFlags, Connection};
use anypoll::sockops::Real;
use anypoll::stream::Outcome;
use anypoll::timer::TimerId;
use anypoll::transport::Transport;
use anypoll::Ctx;

use crate::streams::Timeout;
use crate::tag::TimerTag;
use crate::xprt::Xprt;
use crate::{Entry, Worker};

/// What a connection slot holds.
// Most slots stream; a handshaking one wastes the difference for a while.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Slot {
    /// A TLS client's handshake runs; no server is chosen yet.
    Handshaking(Handshake),
    /// A stream (connecting, or forwarding).
    Streaming(Entry),
}

/// A TLS client before its stream.
pub(crate) struct Handshake {
    pub(crate) front: Connection,
    pub(crate) xprt: Xprt,
    pub(crate) peer: SocketAddr,
    /// When the handshake must be done (`--timeout-handshake`).
    pub(crate) until: Instant,
    pub(crate) timer: Option<TimerId>,
    /// The fd held for the server socket (see the module docs).
    pub(crate) spare: Option<UnixDatagram>,
}

impl Worker {
    /// An event on an fd of `slot`, to the handler of its state.
    pub(crate) fn slot_io(&mut self, cx: &mut Ctx, slot: usize) {
        match self.streams.get(slot) {
            Some(Some(Slot::Handshaking(_))) => self.handshake_io(cx, slot),
            Some(Some(Slot::Streaming(_))) => self.stream_io(cx, slot),
            _ => {}
        }
    }

    /// The timer of `slot`, to the handler of its state.
    pub(crate) fn slot_timer(&mut self, cx: &mut Ctx, slot: usize) {
        let Some(Some(Slot::Handshaking(h))) = self.streams.get_mut(slot) else {
            return self.stream_timer(cx, slot);
        };
        h.timer = None;
        if h.until <= Instant::now() {
            // The cause, then the end line: as a stream's timeout logs.
            log::info!("client {}: {}", h.peer, Timeout::ClientHandshake.what());
            self.end_handshake(cx, slot, ConnError::Timeout);
        } else {
            h.timer = Some(cx.add_timer_at(h.until, TimerTag::Stream(slot).encode()));
        }
    }

    /// Starts the handshake of an accepted TLS client whose connection is
    /// registered in `slot`.
    pub(crate) fn begin_handshake(
        &mut self,
        cx: &mut Ctx,
        slot: usize,
        mut front: Connection,
        mut xprt: Xprt,
        peer: SocketAddr,
        spare: Option<UnixDatagram>,
    ) {
        xprt.init(&mut front);
        let until = Instant::now() + self.shared.cfg.timeout_handshake;
        let timer = Some(cx.add_timer_at(until, TimerTag::Stream(slot).encode()));
        self.streams[slot] = Some(Slot::Handshaking(Handshake { front, xprt, peer, until, timer, spare }));
    }

    /// Drives the handshake in `slot`; once it is done, the stream starts.
    fn handshake_io(&mut self, cx: &mut Ctx, slot: usize) {
        let Some(Some(Slot::Handshaking(h))) = self.streams.get_mut(slot) else { return };
        let running = h.xprt.handshake(&mut Real, cx, &mut h.front);
        if h.front.flags.contains(ConnFlags::ERROR) {
            let err = h.front.error();
            return self.end_handshake(cx, slot, err);
        }
        if running {
            let fd = h.front.fd();
            if h.xprt.snd_pending() {
                cx.want_send(fd);
            } else {
                cx.stop_send(fd);
            }
            return;
        }
        let Some(Slot::Handshaking(mut h)) = self.streams[slot].take() else { return };
        if let Some(t) = h.timer.take() {
            cx.cancel_timer(t);
        }
        self.start_stream(cx, slot, h.front, h.xprt, h.peer, h.spare);
    }

    /// Ends whatever `slot` holds for `err` on the client side (the
    /// grace period is over): a stream is aborted, a handshake closed.
    pub(crate) fn abort_slot(&mut self, cx: &mut Ctx, slot: usize, err: ConnError) {
        match self.streams.get_mut(slot) {
            Some(Some(Slot::Streaming(e))) => {
                e.stream.abort(Outcome::FrontError(err));
                self.finish(cx, slot);
            }
            Some(Some(Slot::Handshaking(_))) => self.end_handshake(cx, slot, err),
            _ => {}
        }
    }

    /// Closes the client in `slot`, still handshaking, for `err`, with
    /// one end line of the form of a stream's (streams.rs), the server
    /// named as none: no server connection was made for this client.
    pub(crate) fn end_handshake(&mut self, cx: &mut Ctx, slot: usize, err: ConnError) {
        let Some(Slot::Handshaking(mut h)) = self.streams[slot].take() else { return };
        log::info!("client {} ↔ no server yet: client side: {err}; no server connection made", h.peer);
        self.stats.aborted += 1;
        if let Some(t) = h.timer.take() {
            cx.cancel_timer(t);
        }
        h.xprt.close(&mut h.front);
        h.front.force_close(cx);
        self.free_slot(cx, slot);
    }
}

impl Slot {
    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        match self {
            Slot::Handshaking(h) => h.peer,
            Slot::Streaming(e) => e.peer,
        }
    }
}
