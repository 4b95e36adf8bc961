//! Shared by the TLS tests: certificates made at run time (rcgen; none is
//! committed), and one TLS end driven by the real loop.

#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anypoll::buffer::Buffer;
use anypoll::connection::{ConnError, ConnFlags, Connection};
use anypoll::sockops::Real;
use anypoll::tls::{self, rustls, Tls};
use anypoll::transport::Transport;
use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent};

use crate::common;

/// The name the test certificates are for.
pub const NAME: &str = "anypoll.test";

/// A self-signed certificate and its key, PEM.
pub struct Cert {
    pub cert: String,
    pub key: String,
}

/// A self-signed certificate for `name`; `expired`: valid in 2000 only.
pub fn cert(name: &str, expired: bool) -> Cert {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("rcgen params");
    // A subject of its own, so another test certificate is another CA.
    let cn = format!("anypoll test {} {}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2000, 12, 31);
    }
    let key = rcgen::KeyPair::generate().expect("rcgen key");
    let cert = params.self_signed(&key).expect("rcgen self-signed");
    Cert { cert: cert.pem(), key: key.serialize_pem() }
}

/// A fresh temporary directory for this process and call.
pub fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d =
        std::env::temp_dir().join(format!("anypoll-tls-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Server and client configs through the file helpers: the server has
/// `server`, the client trusts `ca`.
pub fn configs(server: &Cert, ca: &Cert) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let d = temp_dir();
    let (c, k, a) = (d.join("cert.pem"), d.join("key.pem"), d.join("ca.pem"));
    std::fs::write(&c, &server.cert).unwrap();
    std::fs::write(&k, &server.key).unwrap();
    std::fs::write(&a, &ca.cert).unwrap();
    let s = tls::server_config(&c, &k).expect("server config");
    let cl = tls::client_config(&a).expect("client config");
    let _ = std::fs::remove_dir_all(&d);
    (s, cl)
}

/// What an end does once all its bytes are out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// `shut_write`: close_notify, then the socket's write side.
    Shut,
    /// Shut the socket's write side without close_notify: a FIN the peer
    /// must take as a truncation. (Closing instead would send a reset
    /// when bytes are still unread, such as TLS 1.3 session tickets.)
    FinWithoutNotify,
    /// Nothing.
    Stay,
}

/// One TLS end in the loop: sends `to_send` bytes of pattern `send_stream`,
/// checks what it receives against pattern `recv_stream`.
pub struct End {
    pub conn: Connection,
    pub tls: Tls,
    inb: Buffer,
    /// The owner's limit per rcv_buf call (small: records hold more).
    pub read_max: usize,
    pub recv_stream: usize,
    pub got: u64,
    pub bad_at: Option<u64>,
    send_stream: usize,
    pub to_send: u64,
    pub sent: u64,
    outb: Buffer,
    /// Start sending only once the peer's input ended (half-close).
    pub send_after_eof: bool,
    pub then: Then,
    pub then_done: bool,
    /// io callbacks received.
    pub calls: u64,
    /// rcv_buf calls that returned bytes while rcv_pending was true before.
    pub pending_deliveries: u64,
}

impl End {
    pub fn new(sock: OwnedFd, tls: Tls, send_stream: usize, recv_stream: usize, to_send: u64) -> End {
        End::over_conn(Connection::from_connected(sock), tls, send_stream, recv_stream, to_send)
    }

    /// An end over a connection of any state (a connect still pending).
    pub fn over_conn(conn: Connection, tls: Tls, send_stream: usize, recv_stream: usize, to_send: u64) -> End {
        End {
            conn,
            tls,
            inb: Buffer::with_capacity(16 * 1024),
            read_max: usize::MAX,
            recv_stream,
            got: 0,
            bad_at: None,
            send_stream,
            to_send,
            sent: 0,
            outb: Buffer::with_capacity(32 * 1024),
            send_after_eof: false,
            then: Then::Shut,
            then_done: false,
            calls: 0,
            pending_deliveries: 0,
        }
    }

    pub fn register<P: anypoll::backends::Poller>(&mut self, cx: &mut Ctx<P>, owner: usize) {
        self.conn.ctrl_init(cx, owner, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).expect("ctrl_init");
        assert!(self.tls.init(&mut self.conn));
    }

    pub fn error(&self) -> ConnError {
        self.conn.error()
    }

    /// Both directions over without error, nothing left to flush.
    pub fn finished_clean(&self) -> bool {
        let f = self.conn.flags;
        f.contains(ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH)
            && !f.contains(ConnFlags::ERROR)
            && !self.tls.snd_pending()
    }

    /// Over, one way or another.
    pub fn over(&self) -> bool {
        self.conn.is_closed() || self.conn.flags.contains(ConnFlags::ERROR) || self.finished_clean()
    }

    fn refill(&mut self) {
        while !self.outb.is_full() && self.sent + (self.outb.len() as u64) < self.to_send {
            let off = self.sent + self.outb.len() as u64;
            let (first, _) = self.outb.free_slices();
            let n = first.len().min((self.to_send - off) as usize);
            common::fill(self.send_stream, off, &mut first[..n]);
            self.outb.commit(n);
        }
    }

    /// One io callback: one receive (the transport keeps the fd READY
    /// while `rcv_pending`, so the loop calls again for the rest), then sends.
    pub fn step<P: anypoll::backends::Poller>(&mut self, cx: &mut Ctx<P>) {
        self.calls += 1;
        if self.conn.is_closed() {
            return;
        }
        let fd = self.conn.fd();
        if !self.conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) {
            let pending = self.tls.rcv_pending();
            let n = self.tls.rcv_buf(&mut Real, cx, &mut self.conn, &mut self.inb, self.read_max);
            if pending && n > 0 {
                self.pending_deliveries += 1;
            }
            let (a, b) = self.inb.data_slices();
            for part in [a, b] {
                if self.bad_at.is_none() {
                    self.bad_at = common::check(self.recv_stream, self.got, part);
                }
                self.got += part.len() as u64;
            }
            let len = self.inb.len();
            self.inb.consume(len);
            self.conn.flags.remove(ConnFlags::WAIT_ROOM);
        }
        let may_send = !self.send_after_eof || self.conn.flags.contains(ConnFlags::SOCK_RD_SH);
        for _ in 0..1024 {
            if may_send {
                self.refill();
            }
            let before = self.outb.len();
            let n = self.tls.snd_buf(&mut Real, cx, &mut self.conn, &mut self.outb, usize::MAX, Default::default());
            self.sent += n as u64;
            if n == 0 || self.outb.len() == before {
                break;
            }
        }
        let all_out = self.sent == self.to_send && self.outb.is_empty() && !self.tls.is_handshaking();
        if may_send && all_out && !self.tls.snd_pending() && !self.then_done {
            self.then_done = true;
            match self.then {
                Then::Shut => self.tls.shut_write(&mut Real, cx, &mut self.conn),
                Then::FinWithoutNotify => {
                    // SAFETY: shutdown with integer arguments on our open socket.
                    let r = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                    assert_eq!(r, 0, "fd {fd}: shutdown: {}", std::io::Error::last_os_error());
                }
                Then::Stay => {}
            }
        }
        if self.conn.flags.intersects(ConnFlags::ERROR) {
            return;
        }
        let wants = self.tls.snd_pending() || !self.outb.is_empty() || (may_send && self.sent < self.to_send);
        if wants && !self.conn.flags.contains(ConnFlags::SOCK_WR_SH) {
            cx.want_send(fd);
        } else {
            cx.stop_send(fd);
        }
    }
}

/// Ends in one loop, by owner number.
pub struct Pair {
    pub ends: Vec<End>,
}

impl<P: anypoll::backends::Poller> Handler<P> for Pair {
    fn io(&mut self, cx: &mut Ctx<P>, ev: IoEvent) {
        if let Some(e) = self.ends.get_mut(ev.owner) {
            e.step(cx);
        }
    }
}

/// Runs `el` until `done` or `limit`; returns the iterations. Panics on
/// the time limit, naming `what`.
pub fn run_until(el: &mut EventLoop, h: &mut Pair, limit: Duration, what: &str, done: impl Fn(&Pair) -> bool) -> u64 {
    let start = Instant::now();
    let mut iterations = 0;
    while !done(h) {
        assert!(start.elapsed() < limit, "{what}: not done after {limit:?}; ends: {}", describe(h));
        el.run_once(h, Some(Duration::from_millis(20))).expect("run_once");
        iterations += 1;
    }
    iterations
}

/// The ends' state, for failure messages.
pub fn describe(h: &Pair) -> String {
    h.ends
        .iter()
        .map(|e| {
            format!(
                "[flags {:?} err {:?} hs {} sent {}/{} got {} rcv_pending {} snd_pending {}]",
                e.conn.flags,
                e.error(),
                e.tls.is_handshaking(),
                e.sent,
                e.to_send,
                e.got,
                e.tls.rcv_pending(),
                e.tls.snd_pending()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A connected loopback TCP pair as non-blocking fds: (client, server).
pub fn tcp_fds() -> (OwnedFd, OwnedFd) {
    let (c, s) = common::tcp_pair();
    for t in [&c, &s] {
        t.set_nonblocking(true).unwrap();
        t.set_nodelay(true).unwrap();
    }
    (c.into(), s.into())
}
