//! With TLS on the listeners, the server connection is made only once the
//! client's handshake is done: a client stalled in its handshake (or one
//! whose handshake fails) never costs a server connection, and the bytes a
//! client sends in the same flight as its `Finished` still reach the
//! server. A plain listener still connects at accept.
//!
//! The TLS tests need the relay's `tls` feature and rcgen (Linux): built
//! without them, they are reported as ignored, with the reason. The tests
//! run one at a time (a lock): the stall test counts this process's fds.

mod relay_common;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use relay_common::*;

/// One test at a time in this binary.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backend that counts the connections it accepts and holds each one
/// until its peer closes it.
fn counting_backend() -> (Backend, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let b = Backend::spawn(v4(), move |mut s| {
        c.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    (b, count)
}

#[test]
fn plain_front_connects_at_accept() {
    let _g = serial();
    let (backend, count) = counting_backend();
    let relay = Relay::start(config(&[backend.addr]));
    // A client that sends nothing: its server connection is made anyway.
    let _c = connect(relay.addr);
    assert!(
        wait_until(Duration::from_secs(5), || count.load(Ordering::SeqCst) == 1),
        "a plain client's server connection was not made at accept ({} seen)",
        count.load(Ordering::SeqCst)
    );
}

#[cfg(not(all(feature = "tls", target_os = "linux")))]
#[test]
#[ignore = "needs the relay's `tls` feature and rcgen (Linux): cargo test -p anypoll-relay --features tls"]
fn tls_front_connects_after_the_handshake() {}

#[cfg(all(feature = "tls", target_os = "linux"))]
mod tls {
    use super::*;

    use std::io::{self, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Instant;

    use anypoll::tls::rustls;
    use anypoll_relay::tls_settings::{TlsBack, TlsFront};

    /// The name the test certificate is for.
    const NAME: &str = "localhost";

    /// A self-signed certificate for [`NAME`], in files (the relay reads
    /// files), and the client's and a TLS server's configs for it.
    struct Pki {
        cert: TempFile,
        key: TempFile,
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
    }

    impl Pki {
        fn new(tag: &str) -> Pki {
            let ck = rcgen::generate_simple_self_signed(vec![NAME.to_owned()]).expect("rcgen");
            let (cert, key) = (ck.cert.pem(), ck.key_pair.serialize_pem());
            Pki {
                client: anypoll::tls::client_config_pem(cert.as_bytes(), "ca").expect("client config"),
                server: anypoll::tls::server_config_pem(cert.as_bytes(), key.as_bytes(), "cert", "key")
                    .expect("server config"),
                cert: TempFile::new(&format!("{tag}-cert.pem"), &cert),
                key: TempFile::new(&format!("{tag}-key.pem"), &key),
            }
        }

        fn front(&self) -> TlsFront {
            TlsFront { cert: self.cert.path().into(), key: self.key.path().into() }
        }
    }

    /// This process's open fds.
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
    }

    /// What this process's open fds are (for a failure message).
    fn fd_list() -> Vec<std::path::PathBuf> {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).collect()
    }

    /// A client's whole first flight: its ClientHello.
    fn client_hello(pki: &Pki) -> Vec<u8> {
        let name = rustls::pki_types::ServerName::try_from(NAME).expect("name");
        let mut c = rustls::ClientConnection::new(pki.client.clone(), name).expect("client");
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).expect("write_tls to a Vec");
        }
        out
    }

    /// Asks `addr` over TLS for `len` bytes; the request is given to
    /// rustls before the handshake, so it goes out in the same write as
    /// the client's `Finished`. Returns the reply, read to the end.
    fn tls_get(addr: SocketAddr, pki: &Pki, len: usize) -> io::Result<Vec<u8>> {
        let mut sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = rustls::pki_types::ServerName::try_from(NAME).expect("name");
        let mut conn = rustls::ClientConnection::new(pki.client.clone(), name).map_err(io::Error::other)?;
        conn.writer().write_all(format!("{len}\n").as_bytes())?;
        for _ in 0..50 {
            if !conn.is_handshaking() {
                break;
            }
            conn.complete_io(&mut sock)?;
        }
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut got = Vec::new();
        tls.read_to_end(&mut got)?;
        // A clean end: without it the relay sees a truncation.
        tls.conn.send_close_notify();
        tls.flush()?;
        Ok(got)
    }

    /// What the replying backends send for a request of `len` bytes.
    fn reply(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        Gen::new(len as u64).fill(&mut data);
        data
    }

    /// Serves one request on `s`: a decimal length and a newline, answered
    /// with [`reply`] of that length. Returns false on a bad request.
    fn serve(s: &mut impl ReadWrite) -> bool {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 32 && !line.ends_with(b"\n") {
            if !matches!(s.read(&mut byte), Ok(1)) {
                return false;
            }
            line.push(byte[0]);
        }
        let Some(len) = std::str::from_utf8(&line).ok().and_then(|l| l.trim().parse::<usize>().ok()) else {
            return false;
        };
        s.write_all(&reply(len)).and_then(|()| s.flush()).is_ok()
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    /// A plain backend serving one request per connection, then closing;
    /// it notes when it accepted each connection.
    fn plain_replier() -> (Backend, Arc<Mutex<Vec<Instant>>>) {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let a = accepted.clone();
        let b = Backend::spawn(v4(), move |mut s| {
            a.lock().expect("lock").push(Instant::now());
            if serve(&mut s) {
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut rest = [0u8; 256];
                while matches!(s.read(&mut rest), Ok(n) if n > 0) {}
            }
        });
        (b, accepted)
    }

    /// A TLS backend (with `pki`'s certificate) serving one request per
    /// connection, then sending `close_notify`.
    fn tls_replier(pki: &Pki) -> Backend {
        let cfg = pki.server.clone();
        Backend::spawn(v4(), move |s| {
            let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else { return };
            let mut tls = rustls::StreamOwned::new(conn, s);
            if serve(&mut tls) {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let mut rest = [0u8; 256];
                while matches!(tls.read(&mut rest), Ok(n) if n > 0) {}
            }
        })
    }

    #[test]
    fn stalled_handshakes_hold_no_server_connection() {
        let _g = serial();
        const CLIENTS: usize = 50;
        const HANDSHAKE: Duration = Duration::from_secs(2);
        let pki = Pki::new("tlsd-stall");
        let (backend, count) = counting_backend();
        let mut cfg = config(&[backend.addr]);
        cfg.tls = Some(pki.front());
        cfg.timeout_handshake = HANDSHAKE;
        let relay = Relay::start(cfg);
        // The relay threads make their spare fd as they start: let them.
        std::thread::sleep(Duration::from_millis(300));
        let (baseline, before) = (open_fds(), fd_list());
        let hello = client_hello(&pki);
        let half = &hello[..hello.len() / 2];
        // Half send half a ClientHello, half send nothing; all stall.
        let start = Instant::now();
        let mut clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|i| {
                let mut c = connect(relay.addr);
                if i % 2 == 0 {
                    c.write_all(half).expect("half a ClientHello");
                }
                c
            })
            .collect();
        let t = relay.totals_until(HANDSHAKE, |t| t.accepted >= CLIENTS as u64);
        assert_eq!(t.accepted, CLIENTS as u64, "the relay did not accept every client in time");
        let during = count.load(Ordering::SeqCst);
        assert_eq!(during, 0, "{during} server connections held by {CLIENTS} clients stalled in their handshakes");
        for (i, c) in clients.iter_mut().enumerate() {
            if let Err(e) = read_until_closed(c, HANDSHAKE * 3) {
                panic!("stalled client {i}: {e}");
            }
        }
        let took = start.elapsed();
        assert!(took >= HANDSHAKE.mul_f64(0.95), "the stalled clients were closed after {took:?}, before the timeout");
        let t = relay.totals_until(Duration::from_secs(3), |t| t.aborted >= CLIENTS as u64 && t.active == 0);
        assert_eq!((t.aborted, t.active), (CLIENTS as u64, 0), "aborted and live connections after the timeout");
        drop(clients);
        let mut now = 0;
        let back = wait_until(Duration::from_secs(3), || {
            now = open_fds();
            now <= baseline
        });
        assert!(
            back,
            "{now} fds open after the timeout, {baseline} before the clients: {:?}, was {before:?}",
            fd_list()
        );
        let after = count.load(Ordering::SeqCst);
        assert_eq!(after, 0, "{after} server connections made for clients that never finished a handshake");
    }

    #[test]
    fn failed_handshakes_never_reach_a_server() {
        let _g = serial();
        const CLIENTS: usize = 10;
        let pki = Pki::new("tlsd-fail");
        let (backend, count) = counting_backend();
        let mut cfg = config(&[backend.addr]);
        cfg.tls = Some(pki.front());
        let relay = Relay::start(cfg);
        let start = Instant::now();
        for i in 0..CLIENTS {
            // Plaintext to a TLS port: the handshake fails at once.
            let mut c = connect(relay.addr);
            c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
            if let Err(e) = read_until_closed(&mut c, Duration::from_secs(5)) {
                panic!("client {i}, plaintext to TLS: {e}");
            }
        }
        // Well before the 10 s handshake timeout: closed for the failure.
        assert!(start.elapsed() < Duration::from_secs(8), "failed handshakes took {:?}", start.elapsed());
        let t = relay.totals_until(Duration::from_secs(3), |t| t.aborted >= CLIENTS as u64);
        assert_eq!(t.aborted, CLIENTS as u64, "failed handshakes counted as aborted");
        assert_eq!(t.no_server, 0);
        let made = count.load(Ordering::SeqCst);
        assert_eq!(made, 0, "{made} server connections made for failed handshakes");
    }

    #[test]
    fn request_in_the_handshake_flight_is_forwarded() {
        let _g = serial();
        const LEN: usize = 1 << 20;
        let pki = Pki::new("tlsd-flight");
        let (backend, accepted) = plain_replier();
        let mut cfg = config(&[backend.addr]);
        cfg.tls = Some(pki.front());
        let relay = Relay::start(cfg);
        let start = Instant::now();
        let got = tls_get(relay.addr, &pki, LEN).expect("TLS request through the relay");
        let took = start.elapsed();
        assert!(got.len() == LEN && got == reply(LEN), "reply: {} bytes, {LEN} expected, or not the same", got.len());
        let at = accepted.lock().expect("lock").clone();
        assert_eq!(at.len(), 1, "server connections for one client");
        eprintln!("server connected {:?} after the client's connect; reply done in {took:?}", at[0] - start);
        let t = relay.stop();
        assert_eq!((t.aborted, t.bytes_down), (0, LEN as u64), "aborted, bytes down");
    }

    #[test]
    fn tls_on_both_sides() {
        let _g = serial();
        const LEN: usize = 256 * 1024;
        let pki = Pki::new("tlsd-both");
        let backend = tls_replier(&pki);
        let mut cfg = config(&[backend.addr]);
        cfg.tls = Some(pki.front());
        cfg.server_tls = Some(TlsBack { ca: pki.cert.path().into(), name: Some(NAME.to_owned()) });
        let relay = Relay::start(cfg);
        for i in 0..3 {
            let got = tls_get(relay.addr, &pki, LEN).unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert!(
                got.len() == LEN && got == reply(LEN),
                "request {i}: {} bytes, {LEN} expected, or not the same",
                got.len()
            );
        }
        let t = relay.stop();
        assert_eq!((t.aborted, t.bytes_down), (0, 3 * LEN as u64), "aborted, bytes down");
    }
}
