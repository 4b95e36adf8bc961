//! The TLS transport over real loopback sockets and the real loop, on
//! every backend and strategy built here: handshake and data both ways,
//! large transfers, half-close with close_notify, truncation, refused
//! certificates, plaintext and garbage sent to a TLS server, a client
//! that stalls in the middle of its handshake, a handshake driven alone.

// rcgen (the test certificates) is a dev-dependency on Linux only.
#![cfg(target_os = "linux")]

mod common;
mod tlsend;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anypoll::connection::{CertProblem, ConnError, ConnFlags};
use anypoll::tls::{rustls, Tls};
use anypoll::transport::Transport;
use anypoll::{Ctx, EventLoop, Handler, IoEvent, TimerId};
use tlsend::{cert, configs, run_until, tcp_fds, End, Pair, Then, NAME};

const LIMIT: Duration = Duration::from_secs(60);

/// A client end (owner 1) and a server end (owner 0) over loopback TCP.
fn pair(el: &mut EventLoop, server_cert: &tlsend::Cert, ca: &tlsend::Cert, name: &str, up: u64, down: u64) -> Pair {
    let (scfg, ccfg) = configs(server_cert, ca);
    let (c, s) = tcp_fds();
    let mut server = End::new(s, Tls::server(scfg).unwrap(), 2, 1, down);
    let mut client = End::new(c, Tls::client(ccfg, name).unwrap(), 1, 2, up);
    server.register(el.cx(), 0);
    client.register(el.cx(), 1);
    Pair { ends: vec![server, client] }
}

/// Client → server `up` bytes, then close_notify; the server sends its
/// `down` bytes only after it saw that close_notify (half-close), then its
/// own. Both must end clean, with every byte, in order.
fn transfer(combo: common::Combo, up: u64, down: u64, read_max: usize, limit: Duration) -> String {
    let c = cert(NAME, false);
    let mut el = combo.new_loop();
    let mut h = pair(&mut el, &c, &c, NAME, up, down);
    h.ends[0].send_after_eof = true;
    h.ends[0].read_max = read_max;
    h.ends[1].read_max = read_max;
    let start = Instant::now();
    let iters = run_until(&mut el, &mut h, limit, &combo.label(), |h| h.ends.iter().all(End::over));
    let (s, cl) = (&h.ends[0], &h.ends[1]);
    assert!(s.finished_clean() && cl.finished_clean(), "not clean: {}", tlsend::describe(&h));
    assert_eq!((s.got, s.bad_at), (up, None), "server received");
    assert_eq!((cl.got, cl.bad_at), (down, None), "client received");
    assert_eq!(s.error(), ConnError::None);
    format!(
        "{up}+{down} bytes in {:?}, {iters} iterations, {} deliveries from rcv_pending",
        start.elapsed(),
        s.pending_deliveries + cl.pending_deliveries
    )
}

#[test]
fn tls_echo_both_ways_with_half_close() {
    let combos = common::combos("tls_echo");
    common::run_matrix("tls_echo", &combos, |c| transfer(c, 5000, 7000, usize::MAX, LIMIT));
}

/// The owner takes at most 500 bytes per call while records carry up to
/// 16 KiB: the rest must come from rustls's buffer (`rcv_pending`) with no
/// new readiness from the socket. The peer sends nothing more until it
/// has everything, so waiting on the fd instead stalls the test.
#[test]
fn tls_buffered_plaintext_is_drained_before_waiting() {
    let combos = common::combos("tls_drain");
    common::run_matrix("tls_drain", &combos, |c| {
        let detail = transfer(c, 64 * 1024, 48 * 1024, 500, Duration::from_secs(10));
        assert!(!detail.ends_with(" 0 deliveries from rcv_pending"), "rcv_pending was never used: {detail}");
        detail
    });
}

#[test]
fn tls_large_transfer_both_ways() {
    let combos = common::combos("tls_large");
    common::run_matrix("tls_large", &combos, |c| transfer(c, 16 << 20, 16 << 20, usize::MAX, LIMIT));
}

/// The client side over a non-blocking connect still in progress when the
/// handshake starts: its first flight waits for the connect (ENOTCONN or
/// EINPROGRESS count as EAGAIN), then both ways complete.
#[test]
fn tls_client_over_a_pending_connect() {
    let combos = common::combos("tls_connect");
    common::run_matrix("tls_connect", &combos, |c| {
        let k = cert(NAME, false);
        let (scfg, ccfg) = configs(&k, &k);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = anypoll::connection::Connection::connect(listener.local_addr().unwrap()).unwrap();
        let pending = conn.flags.contains(ConnFlags::WAIT_L4_CONN);
        let mut el = c.new_loop();
        let mut client = End::over_conn(conn, Tls::client(ccfg, NAME).unwrap(), 1, 2, 30_000);
        client.register(el.cx(), 1);
        assert!(client.tls.snd_pending(), "the ClientHello is queued at once");
        let (s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut server = End::new(s.into(), Tls::server(scfg).unwrap(), 2, 1, 20_000);
        server.register(el.cx(), 0);
        let mut h = Pair { ends: vec![server, client] };
        run_until(&mut el, &mut h, LIMIT, &c.label(), |h| h.ends.iter().all(End::over));
        assert!(h.ends.iter().all(End::finished_clean), "{}", tlsend::describe(&h));
        assert_eq!((h.ends[0].got, h.ends[0].bad_at), (30_000, None));
        assert_eq!((h.ends[1].got, h.ends[1].bad_at), (20_000, None));
        assert!(h.ends[1].conn.flags.contains(ConnFlags::L4_CONN));
        format!("connect pending at the start: {pending}; 30000+20000 bytes")
    });
}

/// Runs a pair until one end has an error and the other is over or has
/// one; returns (server error, client error).
fn failing_pair(
    combo: common::Combo,
    server_cert: &tlsend::Cert,
    ca: &tlsend::Cert,
    name: &str,
) -> (ConnError, ConnError) {
    let mut el = combo.new_loop();
    let mut h = pair(&mut el, server_cert, ca, name, 100, 100);
    run_until(&mut el, &mut h, LIMIT, &combo.label(), |h| {
        h.ends.iter().all(|e| e.over() || e.conn.flags.contains(ConnFlags::SOCK_RD_SH))
            && h.ends.iter().any(|e| e.error() != ConnError::None)
    });
    assert_eq!(h.ends[0].got, 0, "the server received data from a refused client");
    (h.ends[0].error(), h.ends[1].error())
}

#[test]
fn tls_refused_certificates() {
    let combos = common::combos("tls_refused");
    common::run_matrix("tls_refused", &combos, |c| {
        let good = cert(NAME, false);
        let other = cert(NAME, false);
        let expired = cert(NAME, true);
        let cases = [
            ("unknown CA", &good, &other, NAME, CertProblem::UnknownIssuer),
            ("wrong name", &good, &good, "other.test", CertProblem::WrongName),
            ("expired", &expired, &expired, NAME, CertProblem::Expired),
        ];
        for (what, sc, ca, name, why) in cases {
            let (s, cl) = failing_pair(c, sc, ca, name);
            assert_eq!(cl, ConnError::TlsBadCert(why), "{what}: client");
            // The client tells the server with an alert.
            assert!(matches!(s, ConnError::TlsAlert(_)), "{what}: server got {s:?}");
        }
        "unknown CA, wrong name, expired: refused by the client, alert at the server".into()
    });
}

/// A server end alone, with a raw TCP peer in the test thread.
fn lone_server(el: &mut EventLoop) -> (Pair, TcpStream) {
    let c = cert(NAME, false);
    let (scfg, _) = configs(&c, &c);
    let (peer, s) = tcp_fds();
    let mut server = End::new(s, Tls::server(scfg).unwrap(), 2, 1, 0);
    server.then = Then::Stay;
    server.register(el.cx(), 0);
    let peer = TcpStream::from(peer);
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (Pair { ends: vec![server] }, peer)
}

/// Feeds `bytes` to a TLS server; it must fail its handshake with `want`,
/// without panicking, and the peer must see the socket end.
fn bad_input(combo: common::Combo, bytes: &[u8], want: ConnError) -> String {
    let mut el = combo.new_loop();
    let (mut h, mut peer) = lone_server(&mut el);
    peer.write_all(bytes).unwrap();
    run_until(&mut el, &mut h, LIMIT, &combo.label(), |h| h.ends[0].over());
    assert_eq!(h.ends[0].error(), want, "{}", tlsend::describe(&h));
    h.ends[0].conn.force_close(el.cx());
    let mut reply = Vec::new();
    let _ = peer.read_to_end(&mut reply);
    format!("{want:?}, {} bytes of alert back", reply.len())
}

#[test]
fn tls_plaintext_to_a_tls_server_fails_the_handshake() {
    let combos = common::combos("tls_plaintext");
    common::run_matrix("tls_plaintext", &combos, |c| {
        bad_input(c, b"GET / HTTP/1.1\r\nHost: anypoll.test\r\n\r\n", ConnError::TlsHandshake)
    });
}

#[test]
fn tls_garbage_records_fail_cleanly() {
    let combos = common::combos("tls_garbage");
    common::run_matrix("tls_garbage", &combos, |c| {
        // A well-framed application-data record of noise where the
        // ClientHello should be.
        let mut rec = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        rec.extend((0..0x40u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let first = bad_input(c, &rec, ConnError::TlsHandshake);
        // A handshake record of noise.
        let mut hs = vec![0x16, 0x03, 0x01, 0x00, 0x20];
        hs.extend([0xA5u8; 0x20]);
        let second = bad_input(c, &hs, ConnError::TlsHandshake);
        format!("appdata noise: {first}; handshake noise: {second}")
    });
}

/// After a good handshake and some data, noise on the client's socket
/// where a record should be: the server says TlsProtocol.
#[test]
fn tls_garbage_after_the_handshake_is_a_protocol_error() {
    let combos = common::combos("tls_garbage_data");
    common::run_matrix("tls_garbage_data", &combos, |c| {
        let k = cert(NAME, false);
        let mut el = c.new_loop();
        let mut h = pair(&mut el, &k, &k, NAME, 1000, 0);
        h.ends[1].then = Then::Stay;
        h.ends[0].then = Then::Stay;
        run_until(&mut el, &mut h, LIMIT, &c.label(), |h| h.ends[0].got == 1000);
        let mut rec = vec![0x17, 0x03, 0x03, 0x00, 0x30];
        rec.extend([0x5Au8; 0x30]);
        let fd = h.ends[1].conn.fd();
        // SAFETY: `rec` is valid for reads of its length; fd is the client's open socket.
        let n = unsafe { libc::send(fd, rec.as_ptr().cast(), rec.len(), libc::MSG_NOSIGNAL) };
        assert_eq!(n, rec.len() as isize);
        run_until(&mut el, &mut h, LIMIT, &c.label(), |h| h.ends[0].over());
        assert_eq!(h.ends[0].error(), ConnError::TlsProtocol, "{}", tlsend::describe(&h));
        "noise after 1000 bytes: TlsProtocol".into()
    });
}

/// The log lines of this test binary that speak of a truncation, kept by
/// a logger installed once.
static TRUNCATIONS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Keep;

impl log::Log for Keep {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let line = r.args().to_string();
        if line.contains("truncation") {
            TRUNCATIONS.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

/// A client that shuts its socket without close_notify after its data:
/// the server gets every byte, then TlsTruncated, not a clean close, and
/// one log line says so with the fd.
#[test]
fn tls_eof_without_close_notify_is_a_truncation() {
    static KEEP: Keep = Keep;
    if log::set_logger(&KEEP).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let combos = common::combos("tls_truncation");
    common::run_matrix("tls_truncation", &combos, |c| {
        let before = TRUNCATIONS.lock().unwrap().len();
        let k = cert(NAME, false);
        let mut el = c.new_loop();
        let mut h = pair(&mut el, &k, &k, NAME, 40_000, 0);
        h.ends[1].then = Then::FinWithoutNotify;
        h.ends[0].then = Then::Stay;
        run_until(&mut el, &mut h, LIMIT, &c.label(), |h| h.ends[0].over());
        let s = &h.ends[0];
        assert_eq!((s.got, s.bad_at), (40_000, None), "the bytes before the truncation");
        assert_eq!(s.error(), ConnError::TlsTruncated, "{}", tlsend::describe(&h));
        // Once more after the error: no second line.
        let fd = h.ends[0].conn.fd();
        for _ in 0..3 {
            el.run_once(&mut h, Some(Duration::from_millis(5))).unwrap();
        }
        let e = &mut h.ends[0];
        let mut spare = anypoll::buffer::Buffer::with_capacity(64);
        assert_eq!(e.tls.rcv_buf(&mut anypoll::sockops::Real, el.cx(), &mut e.conn, &mut spare, 64), 0);
        let lines = TRUNCATIONS.lock().unwrap()[before..].to_vec();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(&format!("fd {fd}:")), "{lines:?}");
        format!("40000 bytes, then TlsTruncated; logged: {}", lines[0])
    });
}

/// The first part of a real ClientHello, then silence.
fn half_client_hello() -> Vec<u8> {
    let k = cert(NAME, false);
    let (_, ccfg) = configs(&k, &k);
    let mut c = rustls::ClientConnection::new(ccfg, NAME.try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut hello).unwrap();
    }
    hello.truncate(hello.len() / 2);
    hello
}

/// The owner's handshake timeout, as an owner would write it.
struct Timed {
    pair: Pair,
    timer: Option<TimerId>,
    fired_while_handshaking: bool,
}

impl Handler for Timed {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        self.pair.io(cx, ev);
    }
    fn timer(&mut self, cx: &mut Ctx, _id: TimerId, _data: u64) {
        let e = &mut self.pair.ends[0];
        self.fired_while_handshaking = e.tls.is_handshaking();
        if e.tls.is_handshaking() {
            e.conn.set_error(ConnError::Timeout);
            e.conn.force_close(cx);
        }
        self.timer = None;
    }
}

#[test]
fn tls_stalled_handshake_stays_pending_until_the_owner_times_out() {
    let combos = common::combos("tls_stall");
    let hello = half_client_hello();
    common::run_matrix("tls_stall", &combos, |c| {
        let mut el = c.new_loop();
        let (pair, mut peer) = lone_server(&mut el);
        peer.write_all(&hello).unwrap();
        let timer = Some(el.cx().add_timer(Duration::from_millis(300), 7));
        let mut h = Timed { pair, timer, fired_while_handshaking: false };
        let start = Instant::now();
        let mut iters = 0u64;
        // Half-way through: still handshaking, no error, nothing to send.
        while start.elapsed() < Duration::from_millis(150) {
            el.run_once(&mut h, Some(Duration::from_millis(20))).unwrap();
            iters += 1;
        }
        let e = &h.pair.ends[0];
        assert!(e.tls.is_handshaking() && e.error() == ConnError::None, "{}", tlsend::describe(&h.pair));
        assert!(!e.tls.snd_pending() && !e.tls.rcv_pending());
        while h.timer.is_some() {
            assert!(start.elapsed() < LIMIT, "the owner's timer did not fire");
            el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
            iters += 1;
        }
        assert!(h.fired_while_handshaking);
        assert!(h.pair.ends[0].conn.is_closed());
        let calls = h.pair.ends[0].calls;
        assert!(calls < 20, "{calls} io calls for one half ClientHello: a spin");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("the peer sees the close");
        assert!(rest.is_empty(), "the server answered half a ClientHello");
        let _ = peer.as_raw_fd();
        format!("pending for 300 ms in {iters} iterations, {calls} io calls, closed by the owner's timer")
    });
}

#[test]
fn tls_config_errors_name_the_file() {
    let d = tlsend::temp_dir();
    let missing = d.join("missing.pem");
    let e = anypoll::tls::server_config(&missing, &missing).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "not a pem file\n").unwrap();
    let e = anypoll::tls::client_config(&junk).unwrap_err();
    assert!(e.to_string().contains("junk.pem") && e.to_string().contains("no PEM certificate"), "{e}");
    let k = cert(NAME, false);
    let certf = d.join("cert.pem");
    std::fs::write(&certf, &k.cert).unwrap();
    let e = anypoll::tls::server_config(&certf, &certf).unwrap_err();
    assert!(e.to_string().contains("cert.pem") && e.to_string().contains("private key"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
    let _: Option<OwnedFd> = None;
}

/// A server end driven by [`Tls::handshake`] alone, as an owner that has
/// nowhere to put plaintext yet (the relay, before its server connect).
struct Alone {
    conn: anypoll::connection::Connection,
    tls: Tls,
    running: bool,
    calls: u64,
}

impl Handler for Alone {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        self.calls += 1;
        self.running = self.tls.handshake(&mut anypoll::sockops::Real, cx, &mut self.conn);
        let fd = self.conn.fd();
        if self.tls.snd_pending() {
            cx.want_send(fd);
        } else {
            cx.stop_send(fd);
        }
    }
}

#[test]
fn tls_handshake_alone_keeps_the_first_flight_plaintext() {
    const REQUEST: &[u8] = b"a request in the same flight as Finished";
    let combos = common::combos("tls_handshake_alone");
    common::run_matrix("tls_handshake_alone", &combos, |combo| {
        let k = cert(NAME, false);
        let (scfg, ccfg) = configs(&k, &k);
        let mut el = combo.new_loop();
        let (peer, s) = tcp_fds();
        let mut conn = anypoll::connection::Connection::from_connected(s);
        conn.ctrl_init(el.cx(), 0, anypoll::FdState::RECV_ACTIVE).unwrap();
        let mut tls = Tls::server(scfg).unwrap();
        tls.init(&mut conn);
        let mut h = Alone { conn, tls, running: true, calls: 0 };
        // The client gives its request to rustls before the handshake:
        // it goes out in the same write as the client's Finished.
        let client = std::thread::spawn(move || {
            let mut sock = TcpStream::from(peer);
            sock.set_nonblocking(false).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut c = rustls::ClientConnection::new(ccfg, NAME.try_into().unwrap()).unwrap();
            c.writer().write_all(REQUEST).unwrap();
            for _ in 0..50 {
                if !c.is_handshaking() {
                    break;
                }
                c.complete_io(&mut sock).unwrap();
            }
            while c.wants_write() {
                c.write_tls(&mut sock).unwrap();
            }
            // Held open until the server closes.
            let _ = sock.read_to_end(&mut Vec::new());
        });
        let start = Instant::now();
        while h.running {
            assert!(start.elapsed() < LIMIT, "{}: handshake not done", combo.label());
            el.run_once(&mut h, Some(Duration::from_millis(20))).unwrap();
        }
        assert_eq!(h.conn.error(), ConnError::None, "{}", combo.label());
        assert!(!h.tls.is_handshaking());
        // The client's Finished and its request came in one write: the
        // request is in rustls now, not taken by handshake(), and the fd
        // is left recv-READY for it.
        assert!(h.tls.rcv_pending(), "{}: the first flight's plaintext is not held", combo.label());
        let ready = el.cx().state(h.conn.fd()).is_some_and(|st| st.contains(anypoll::FdState::RECV_READY));
        assert!(ready, "{}: plaintext held but the fd is not recv-READY", combo.label());
        let mut got = anypoll::buffer::Buffer::with_capacity(256);
        h.tls.rcv_buf(&mut anypoll::sockops::Real, el.cx(), &mut h.conn, &mut got, usize::MAX);
        let mut bytes = vec![0u8; got.len()];
        got.read_into(&mut bytes);
        assert_eq!(bytes, REQUEST, "{}: the first flight's plaintext", combo.label());
        h.conn.force_close(el.cx());
        client.join().unwrap();
        format!("handshake in {} io calls, then {} bytes held for rcv_buf", h.calls, REQUEST.len())
    });
}
