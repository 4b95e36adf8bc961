//! `anypoll relay` with TLS against bad input: plaintext sent to the TLS
//! port, garbage records, a client that stops in the middle of its
//! handshake, 200 slow-handshake clients while normal requests are
//! served, certificates that are wrong or expired. Each must end its
//! connection with one clear log line naming the client and the TLS error,
//! never panic, leak no fd (the count comes back to its baseline), and
//! lose nothing for the other connections (a download running meanwhile
//! arrives whole).
//!
//! Needs Debian's `curl` and `openssl` (ci/test.sh installs them), and
//! Linux (`/proc/PID/fd`); without feature `tls` this file has no tests.

#![cfg(all(feature = "tls", target_os = "linux"))]

#[path = "../../relay/tests/relay_common/mod.rs"]
mod relay_common;
mod relay_proc;
mod tls_peers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use relay_common::wait_until;
use relay_proc::Proc;
use tls_peers::*;

/// The first bytes of a TLS record that announces a 512-byte ClientHello:
/// a client that sends these and stops is in the middle of its handshake.
const HELLO_START: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// The stream-end line of the client at local port `port` (waiting at most
/// `limit` for it): exactly one, which must contain `what`.
fn end_line(p: &Proc, port: u16, what: &str, limit: Duration) -> String {
    let me = format!("client 127.0.0.1:{port} ↔ ");
    let lines = || -> Vec<String> { p.log_text().lines().filter(|l| l.contains(&me)).map(String::from).collect() };
    assert!(wait_until(limit, || !lines().is_empty()), "no end line for {me}\n{}", p.log_text());
    let l = lines();
    assert_eq!(l.len(), 1, "one end line for {me}: {l:?}");
    assert!(l[0].contains(what), "{me}: {:?} does not say {what:?}", l[0]);
    l[0].clone()
}

/// Connects, sends `bytes`, and reads until the relay closes (at most
/// `limit`); returns the local port and how long the relay took.
fn send_and_wait_close(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (u16, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let port = s.local_addr().expect("local addr").port();
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).expect("timeout");
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    // At most 1000 reads: an alert, then EOF (or a reset).
    for _ in 0..1000 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let took = t0.elapsed();
    assert!(took < limit, "client :{port}: the relay did not close within {limit:?}");
    (port, took)
}

/// A download of `name` through `base`, at a limited rate so that it spans
/// the bad input sent meanwhile; joined, it checks size and sha256.
fn background_fetch(base: String, ca: String, dir: &TempDir, name: &'static str) -> impl FnOnce() {
    let out = TempDir::new(&format!("bg-{name}"));
    let want = sha256(&dir.file(name));
    let t = std::thread::spawn(move || {
        need("curl");
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["--silent", "--show-error", "--fail", "--max-time", "60", "--limit-rate", "1M"]);
        cmd.args(["--cacert", &ca, "-o", &out.file(name), &format!("{base}/{name}")]);
        let (st, _, err) = run_bounded(&mut cmd, Duration::from_secs(70));
        assert!(st.success(), "the download meanwhile: {st}: {err}");
        assert_eq!(sha256(&out.file(name)), want, "the download meanwhile arrived whole");
    });
    move || t.join().expect("background download")
}

#[test]
fn plaintext_garbage_and_a_stalled_handshake() {
    let pki = Pki::new("bad");
    let dir = TempDir::new("bad-files");
    make_file(&dir.0.join("odd"), 2, 3 * 1024 * 1024 + 7);
    let backend = file_server(dir.0.clone());
    let (p, addr, base) = relay(&pki, Tls::Clients, &backend.addr.to_string(), &["--timeout-handshake", "1s"]);
    let done = background_fetch(format!("https://{addr}"), pki.file("ca.pem"), &dir, "odd");
    let quick = Duration::from_secs(5);

    // Plaintext HTTP to the TLS port: refused at once.
    let (port, _) = send_and_wait_close(addr, b"GET /odd HTTP/1.1\r\nHost: localhost\r\n\r\n", quick);
    println!("{}", end_line(&p, port, "client side: TLS handshake failed", quick));

    // Garbage records, each refused at once.
    let garbage: [(&str, Vec<u8>); 4] = [
        ("random bytes", (0..600u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
        ("application data before the handshake", vec![0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5]),
        ("an oversized record", [&[0x16, 0x03, 0x03, 0xff, 0xff][..], &[0u8; 64]].concat()),
        ("a ClientHello of garbage", [&[0x16, 0x03, 0x01, 0x00, 0x20][..], &[0x01; 32]].concat()),
    ];
    for (what, bytes) in &garbage {
        let (port, took) = send_and_wait_close(addr, bytes, quick);
        let line = end_line(&p, port, "client side: ", quick);
        assert!(line.contains("TLS") || line.contains("tls"), "{what}: {line}");
        println!("{what}: closed in {took:?}: {line}");
    }

    // A client that stops in the middle of its handshake: closed at the
    // handshake timeout (1 s), not before, not much later.
    let (port, took) = send_and_wait_close(addr, HELLO_START, Duration::from_secs(6));
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the handshake timeout");
    println!("stalled: closed in {took:?}: {}", end_line(&p, port, "client side: timed out", quick));
    let timeout_line = format!("client 127.0.0.1:{port}: client TLS handshake timeout");
    assert!(p.log_text().contains(&timeout_line), "{timeout_line}\n{}", p.log_text());

    done();
    fds_back(&p, base, Duration::from_secs(10));
    assert!(!p.log_text().contains("panic"), "{}", p.log_text());
}

#[test]
fn two_hundred_slow_handshakes_while_requests_are_served() {
    const SLOW: usize = 200;
    let pki = Pki::new("slow");
    let dir = TempDir::new("slow-files");
    make_file(&dir.0.join("small"), 1, 1000);
    let backend = file_server(dir.0.clone());
    let (p, addr, base) = relay(&pki, Tls::Clients, &backend.addr.to_string(), &["--timeout-handshake", "3s"]);
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&HELLO_START[..3]).expect("first bytes");
        slow.push(s);
    }
    // Requests are served meanwhile, while the slow clients trickle bytes.
    let out = TempDir::new("slow-out");
    let want = sha256(&dir.file("small"));
    for i in 0..10 {
        for s in slow.iter_mut() {
            let _ = s.write_all(&HELLO_START[3 + i % 2..4 + i % 2]);
        }
        let url = format!("https://{addr}/small");
        let (st, err) = curl(Some(&pki.file("ca.pem")), &[url], &[out.file("small")], Duration::from_secs(10));
        assert!(st.success(), "request {i} among {SLOW} slow handshakes: {st}: {err}");
        assert_eq!(sha256(&out.file("small")), want, "request {i}");
    }
    let served = t0.elapsed();
    assert!(served < Duration::from_secs(3), "10 requests took {served:?}: the slow handshakes held them up");
    // Every slow client is closed at its handshake timeout.
    let mut buf = [0u8; 64];
    for s in slow.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut closed = false;
        for _ in 0..100 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
            }
        }
        assert!(closed, "a slow client was not closed");
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(12), "the slow clients were closed after {took:?}");
    // The log is read by another thread: its lines may come a little
    // after the closes the clients saw.
    wait_until(Duration::from_secs(5), || p.count_lines("client TLS handshake timeout") >= SLOW);
    assert_eq!(p.count_lines("client TLS handshake timeout"), SLOW, "one timeout line per slow client");
    drop(slow);
    fds_back(&p, base, Duration::from_secs(10));
    println!("{SLOW} slow handshakes: 10 requests served in {served:?}, all slow clients closed in {took:?}");
}

#[test]
fn wrong_and_expired_certificates() {
    let pki = Pki::new("certs");
    let dir = TempDir::new("certs-files");
    make_file(&dir.0.join("small"), 1, 1000);
    let out = TempDir::new("certs-out");
    let quick = Duration::from_secs(10);

    // A client that does not trust the relay's certificate: it refuses
    // with an alert, which the relay names.
    let backend = file_server(dir.0.clone());
    let (p, addr, base) = relay(&pki, Tls::Clients, &backend.addr.to_string(), &[]);
    let url = format!("https://{addr}/small");
    let (st, err) = curl(Some(&pki.file("other-ca.pem")), std::slice::from_ref(&url), &[out.file("x")], quick);
    assert!(!st.success(), "curl trusted a certificate of another CA: {err}");
    assert!(wait_until(quick, || p.log_text().contains("client side: the peer sent TLS alert")), "{}", p.log_text());
    // The relay still serves a client that trusts it.
    let (st, err) = curl(Some(&pki.file("ca.pem")), &[url], &[out.file("small")], quick);
    assert!(st.success(), "after the refusal: {err}");
    fds_back(&p, base, quick);
    drop(p);

    // A server whose certificate expired, and one for another name: the
    // relay refuses each, the client's connection is closed, the line
    // names the server side and why.
    for (cert, key, why) in
        [("expired.pem", "srv.key", "expired"), ("wrong.pem", "wrong.key", "not valid for the server name")]
    {
        let srv = SServer::start(&dir.0, &pki.file(cert), &pki.file(key));
        let (p, addr, base) = relay(&pki, Tls::Servers, &format!("localhost:{}", srv.addr.port()), &[]);
        let mut s = TcpStream::connect(addr).expect("connect");
        let port = s.local_addr().expect("addr").port();
        s.set_read_timeout(Some(quick)).expect("timeout");
        s.write_all(b"GET /small HTTP/1.0\r\n\r\n").expect("request");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty(), "{cert}: bytes came through a refused server: {got:?}");
        let line = end_line(&p, port, &format!("server side: TLS certificate refused: {why}"), quick);
        println!("{cert}: {line}");
        drop(s);
        fds_back(&p, base, quick);
    }
}
