//! The owner the `BufConn` tests drive (`tests/bufconn.rs` over RawSock
//! and the hiding transport, `tests/bufconn_tls.rs` over TLS): a handler
//! that keeps every event set, a server connection accepted from a
//! loopback listener, and a loop driven one bounded step at a time.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anypoll::bufconn::{BufConn, Config, Events, WriteError};
use anypoll::transport::{RawSock, Transport};
use anypoll::{Ctx, EventLoop, Handler, IoEvent, TimerId};

use super::Combo;

/// The default limit of a [`spin`].
pub const T: Duration = Duration::from_secs(5);

/// Holds the connection and every non-empty event set it returned.
pub struct H<X: Transport = RawSock> {
    pub bc: BufConn<X>,
    pub events: Vec<Events>,
}

impl<X: Transport> H<X> {
    /// A handler for `bc`, no event seen yet.
    pub fn new(bc: BufConn<X>) -> H<X> {
        H { bc, events: Vec::new() }
    }

    /// The event sets that contain all of `e`.
    pub fn count(&self, e: Events) -> usize {
        self.events.iter().filter(|x| x.contains(e)).count()
    }
}

impl<X: Transport> Handler for H<X> {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        let e = self.bc.on_io(cx);
        if !e.is_empty() {
            self.events.push(e);
        }
    }
    fn timer(&mut self, cx: &mut Ctx, id: TimerId, _data: u64) {
        let e = self.bc.on_timer(cx, id);
        if !e.is_empty() {
            self.events.push(e);
        }
    }
}

/// A BufConn over RawSock on the server side of a loopback pair, and the
/// peer (blocking).
pub fn accepted(el: &mut EventLoop, cfg: Config) -> (H, TcpStream) {
    accepted_over(el, cfg, RawSock)
}

/// A BufConn over `xprt` on the server side of a loopback pair (accepted
/// from a listener), and the peer (blocking).
pub fn accepted_over<X: Transport>(el: &mut EventLoop, cfg: Config, xprt: X) -> (H<X>, TcpStream) {
    let (peer, s) = super::tcp_pair();
    s.set_nonblocking(true).unwrap();
    let bc = BufConn::accepted(el.cx(), s.into(), 1, xprt, cfg).expect("register");
    (H::new(bc), peer)
}

/// Runs the loop until `done` holds; fails past `limit`.
pub fn spin<X: Transport>(
    el: &mut EventLoop,
    h: &mut H<X>,
    limit: Duration,
    mut done: impl FnMut(&mut EventLoop, &mut H<X>) -> bool,
) {
    let start = Instant::now();
    while !done(el, h) {
        assert!(start.elapsed() < limit, "not done after {limit:?}; events {:?}", h.events);
        el.run_once(h, Some(Duration::from_millis(10))).expect("run_once");
    }
}

/// Runs `f` on every backend and strategy ([`super::combos`]).
pub fn matrix(name: &str, f: impl Fn(Combo) -> String) {
    super::run_matrix(name, &super::combos(name), f);
}

/// Fills the output queue of a BufConn whose peer does not read; returns
/// the bytes queued (pattern `i % 253` of each 1000-byte block).
pub fn fill<X: Transport>(el: &mut EventLoop, h: &mut H<X>) -> usize {
    let mut queued = 0;
    let chunk: Vec<u8> = (0..1000).map(|i| (i % 253) as u8).collect();
    for _ in 0..100_000 {
        match h.bc.write(el.cx(), &chunk) {
            Ok(()) => queued += chunk.len(),
            Err(WriteError::Full { room }) => {
                assert!(room < chunk.len(), "refused with room for it: {room}");
                assert!(h.bc.output_len() <= h.bc.config().output_high, "queue above the high watermark");
                return queued;
            }
            Err(e) => panic!("write: {e}"),
        }
        el.run_once(h, Some(Duration::ZERO)).unwrap();
    }
    panic!("never refused: {queued} bytes queued");
}
