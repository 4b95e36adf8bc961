//! One client's stream: the choice of a server, the connect (and one
//! retry elsewhere), forwarding, the timeouts, the end and its log line.
//! A TLS client's stream starts once its handshake is done (the slot's
//! states are in handshake.rs).

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anypoll::connection::{ConnError, Connection};
use anypoll::sockops::Real;
use anypoll::stream::{Outcome, Phase, Stream};
use anypoll::transport::Transport;
use anypoll::{Ctx, FdState};

use crate::config::RelayConfig;
use crate::handshake::Slot;
use crate::tag::{Owner, TimerTag};
use crate::xprt::Xprt;
use crate::{Entry, Seen, Worker};

/// Which timeout ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    /// The server did not accept the connect in time.
    Connect,
    /// The client side was idle too long.
    Client,
    /// The server side was idle too long.
    Server,
    /// A TLS handshake of the client side was not done in time.
    ClientHandshake,
    /// A TLS handshake of the server side was not done in time.
    ServerHandshake,
}

impl Timeout {
    /// The stream's outcome: the side that timed out failed.
    fn outcome(self) -> Outcome {
        match self {
            Timeout::Connect => Outcome::ConnectFailed(ConnError::Timeout),
            Timeout::Client | Timeout::ClientHandshake => Outcome::FrontError(ConnError::Timeout),
            Timeout::Server | Timeout::ServerHandshake => Outcome::BackError(ConnError::Timeout),
        }
    }

    /// What the log line says.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Timeout::Connect => "connect timeout",
            Timeout::Client => "client timeout",
            Timeout::Server => "server timeout",
            Timeout::ClientHandshake => "client TLS handshake timeout",
            Timeout::ServerHandshake => "server TLS handshake timeout",
        }
    }
}

/// When the stream's timer must fire next, and for what: the connect
/// timeout while connecting, the idle timeouts after, and the handshake
/// timeout while a TLS handshake runs (whichever comes first).
fn next_deadline(e: &Entry, cfg: &RelayConfig) -> Option<(Instant, Timeout)> {
    let idle = match e.stream.phase() {
        Phase::Done => return None,
        Phase::Connect => (e.connect_started + cfg.timeout_connect, Timeout::Connect),
        Phase::Data => {
            let c = e.front_last + cfg.timeout_client;
            let s = e.back_last + cfg.timeout_server;
            if c <= s {
                (c, Timeout::Client)
            } else {
                (s, Timeout::Server)
            }
        }
    };
    let handshake = e.handshake_until.map(|t| {
        let side =
            if e.stream.front_xprt.is_handshaking() { Timeout::ClientHandshake } else { Timeout::ServerHandshake };
        (t, side)
    });
    Some(match handshake {
        Some(h) if h.0 < idle.0 => h,
        _ => idle,
    })
}

/// The stream in `slots[slot]`, if that slot holds one (not a
/// handshaking client).
fn entry_in(slots: &mut [Option<Slot>], slot: usize) -> Option<&mut Entry> {
    match slots.get_mut(slot) {
        Some(Some(Slot::Streaming(e))) => Some(e),
        _ => None,
    }
}

impl Worker {
    pub(crate) fn pick_server(&mut self, exclude: Option<usize>) -> Option<usize> {
        let n = self.shared.servers.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            if Some(i) != exclude && self.shared.servers[i].up.load(Ordering::Relaxed) {
                self.rr = i + 1;
                return Some(i);
            }
        }
        None
    }

    /// Takes in an accepted client, whose connection slot under `maxconn`
    /// is reserved (and released here if it goes no further), with the fd
    /// `spare` held for its server socket. A plain client's stream starts
    /// at once; a TLS client's handshake runs first (handshake.rs).
    pub(crate) fn open(&mut self, cx: &mut Ctx, sock: OwnedFd, peer: SocketAddr, spare: Option<UnixDatagram>) {
        let front_xprt = match self.shared.tls.front() {
            Ok(x) => x,
            Err(e) => {
                self.release_slot();
                log::warn!("client {peer}: closed at once: {e}");
                drop(sock);
                return;
            }
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.streams.push(None);
            self.streams.len() - 1
        });
        let mut front = Connection::from_connected(sock);
        if let Err(e) = front.ctrl_init(cx, Owner::Front(slot).encode(), FdState::RECV_ACTIVE) {
            log::warn!("client {peer}: cannot register: {e}");
            front.force_close(cx);
            self.free.push(slot);
            self.release_slot();
            return;
        }
        if front_xprt.hides_readiness() {
            self.begin_handshake(cx, slot, front, front_xprt, peer, spare);
        } else {
            self.start_stream(cx, slot, front, front_xprt, peer, spare);
        }
    }

    /// Starts the stream of the client in `slot` (registered; a TLS one
    /// handshaken): picks a server, connects to it with the fd number of
    /// `spare`, and processes the stream at once if the client's transport
    /// may hold bytes already (plaintext that came with the handshake).
    pub(crate) fn start_stream(
        &mut self,
        cx: &mut Ctx,
        slot: usize,
        mut front: Connection,
        front_xprt: Xprt,
        peer: SocketAddr,
        spare: Option<UnixDatagram>,
    ) {
        let Some(server) = self.pick_server(None) else {
            self.stats.no_server += 1;
            log::warn!("client {peer}: closed at once, no server is up");
            front.force_close(cx);
            self.free_slot(cx, slot);
            return;
        };
        // Its fd number goes to the server socket.
        drop(spare);
        let (back, back_xprt) = match self.connect_back(cx, slot, server) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("client {peer}: connect to server {}: {e}", self.shared.servers[server].addr);
                front.force_close(cx);
                self.free_slot(cx, slot);
                return;
            }
        };
        let now = Instant::now();
        let handshakes = front_xprt.is_handshaking() || back_xprt.hides_readiness();
        // A TLS client's transport may hold plaintext of its handshake's
        // last flight already: not to wait for an event that is not coming.
        let may_hold = front_xprt.hides_readiness();
        let stream = Stream::with_transports(front, front_xprt, back, back_xprt, self.shared.cfg.splice);
        let mut e = Entry {
            stream,
            server,
            tried: 1,
            peer,
            timer: None,
            front_last: now,
            back_last: now,
            connect_started: now,
            handshake_until: handshakes.then(|| now + self.shared.cfg.timeout_handshake),
            seen: Seen::default(),
        };
        if let Some((deadline, _)) = next_deadline(&e, &self.shared.cfg) {
            e.timer = Some(cx.add_timer_at(deadline, TimerTag::Stream(slot).encode()));
        }
        self.streams[slot] = Some(Slot::Streaming(e));
        if may_hold {
            self.stream_io(cx, slot);
        }
    }

    /// Connects to `server` for the stream in `slot`: the connection
    /// (registered) and its transport, not initialised yet (the stream
    /// does it). The socket and connect syscalls go through the counted seam.
    pub(crate) fn connect_back(&mut self, cx: &mut Ctx, slot: usize, server: usize) -> io::Result<(Connection, Xprt)> {
        let xprt = self.shared.tls.back(&self.shared.cfg.server_name(server))?;
        let mut back = Connection::connect_with(&mut Real, cx, self.shared.servers[server].addr)?;
        if let Err(e) = back.ctrl_init(cx, Owner::Back(slot).encode(), FdState::SEND_ACTIVE) {
            back.force_close(cx);
            return Err(e);
        }
        Ok((back, xprt))
    }

    pub(crate) fn stream_io(&mut self, cx: &mut Ctx, slot: usize) {
        let Some(e) = entry_in(&mut self.streams, slot) else { return };
        let connecting = e.stream.phase() == Phase::Connect;
        let outcome = e.stream.process(&mut Real, cx, &mut self.pools);
        let seen = Seen::of(&e.stream);
        let now = cx.now();
        if seen.from_client != e.seen.from_client || seen.to_client != e.seen.to_client {
            e.front_last = now;
        }
        if seen.from_server != e.seen.from_server || seen.to_server != e.seen.to_server {
            e.back_last = now;
        }
        self.stats.bytes_up += seen.to_server - e.seen.to_server;
        self.stats.bytes_down += seen.to_client - e.seen.to_client;
        e.seen = seen;
        let handshaken = e.handshake_until.is_some()
            && !e.stream.front_xprt.is_handshaking()
            && !e.stream.back_xprt.is_handshaking();
        if handshaken {
            e.handshake_until = None;
        }
        if (connecting && e.stream.phase() == Phase::Data) || handshaken {
            // Connected, or every handshake done: the timer was armed for a
            // deadline that no longer applies; the next one may be sooner.
            if let Some(t) = e.timer.take() {
                cx.cancel_timer(t);
            }
            if let Some((deadline, _)) = next_deadline(e, &self.shared.cfg) {
                e.timer = Some(cx.add_timer_at(deadline, TimerTag::Stream(slot).encode()));
            }
        }
        match outcome {
            Outcome::Running => {}
            Outcome::ConnectFailed(err) if e.stream.req.bytes_out == 0 && e.tried < 2 => {
                let (failed, peer) = (e.server, e.peer);
                match self.pick_server(Some(failed)) {
                    Some(next) => {
                        log::info!(
                            "client {}: server {} {err}; retrying on {}",
                            peer,
                            self.shared.servers[failed].addr,
                            self.shared.servers[next].addr
                        );
                        self.stats.retries += 1;
                        self.retry(cx, slot, next);
                    }
                    None => self.finish(cx, slot),
                }
            }
            _ => self.finish(cx, slot),
        }
    }

    pub(crate) fn retry(&mut self, cx: &mut Ctx, slot: usize, server: usize) {
        match self.connect_back(cx, slot, server) {
            Ok((back, xprt)) => {
                let Some(e) = self.entry(slot) else { return };
                e.stream.replace_back_with(cx, back, xprt);
                e.server = server;
                e.tried += 1;
                e.connect_started = Instant::now();
            }
            Err(err) => {
                log::warn!("server {}: {err}", self.shared.servers[server].addr);
                self.finish(cx, slot);
            }
        }
    }

    pub(crate) fn finish(&mut self, cx: &mut Ctx, slot: usize) {
        let mut e = match self.streams[slot].take() {
            Some(Slot::Streaming(e)) => e,
            other => {
                self.streams[slot] = other;
                return;
            }
        };
        let outcome = e.stream.outcome();
        let lost = e.stream.req.pending() + e.stream.res.pending();
        let server = self.shared.servers[e.server].addr;
        match outcome {
            Outcome::Finished | Outcome::Running => {
                log::debug!(
                    "client {} ↔ server {server}: done, {} B up, {} B down",
                    e.peer,
                    e.seen.to_server,
                    e.seen.to_client
                )
            }
            Outcome::ConnectFailed(err) => {
                self.stats.aborted += 1;
                log::warn!("client {}: connect to server {server} failed: {err}; {lost} B not delivered", e.peer);
            }
            // Bytes dropped are a warning (seen at the default level); an
            // abort that lost nothing (a client gone between requests) is
            // information.
            Outcome::FrontError(err) => {
                self.stats.aborted += 1;
                let level = if lost > 0 { log::Level::Warn } else { log::Level::Info };
                log::log!(level, "client {} ↔ server {server}: client side: {err}; {lost} B not delivered", e.peer);
            }
            Outcome::BackError(err) => {
                self.stats.aborted += 1;
                let level = if lost > 0 { log::Level::Warn } else { log::Level::Info };
                log::log!(level, "client {} ↔ server {server}: server side: {err}; {lost} B not delivered", e.peer);
            }
        }
        if let Some(t) = e.timer.take() {
            cx.cancel_timer(t);
        }
        e.stream.close(cx, &mut self.pools);
        self.free_slot(cx, slot);
    }

    /// Frees `slot`, whose connections are closed, and its place under
    /// `maxconn`; stops the loop if it was the last one of a stop.
    pub(crate) fn free_slot(&mut self, cx: &mut Ctx, slot: usize) {
        self.free.push(slot);
        self.release_slot();
        self.maybe_resume(cx);
        if self.stopping && self.live() == 0 {
            cx.stop();
        }
    }

    /// The stream in `slot`, if it is one (not a handshaking client).
    pub(crate) fn entry(&mut self, slot: usize) -> Option<&mut Entry> {
        entry_in(&mut self.streams, slot)
    }

    pub(crate) fn live(&self) -> usize {
        self.streams.len() - self.free.len()
    }

    pub(crate) fn stream_timer(&mut self, cx: &mut Ctx, slot: usize) {
        let Some(e) = entry_in(&mut self.streams, slot) else { return };
        e.timer = None;
        let now = Instant::now();
        let Some((deadline, cause)) = next_deadline(e, &self.shared.cfg) else { return };
        if deadline <= now {
            e.stream.abort(cause.outcome());
            log::info!("client {}: {}", e.peer, cause.what());
            self.finish(cx, slot);
        } else {
            e.timer = Some(cx.add_timer_at(deadline, TimerTag::Stream(slot).encode()));
        }
    }
}
