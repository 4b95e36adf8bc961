//! Each timeout fires, not before its time and not much after: connect,
//! client (and activity keeps a connection alive), server.
//!
//! Bounds: at least the timeout (less 5 % for timer rounding), at most
//! 3 × the timeout + 1 s (a noisy machine).

mod relay_common;

use std::io::Write;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use relay_common::*;

const T: Duration = Duration::from_millis(600);

fn assert_fired(what: &str, took: Duration) {
    assert!(took >= T.mul_f64(0.95), "{what} fired early: after {took:?}, timeout {T:?}");
    assert!(took <= T * 3 + Duration::from_secs(1), "{what} fired late: after {took:?}, timeout {T:?}");
    println!("{what}: closed after {took:?} (timeout {T:?})");
}

/// A server whose SYNs are never answered, on loopback: a listener with
/// backlog 0 whose accept queue is filled and never drained. Linux drops
/// a SYN when the accept queue is full (the connect stays in SYN_SENT and
/// retransmits), so a connect to it hangs until its timeout. Returns the
/// address and the sockets that fill the queue (keep them alive).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn black_hole() -> (std::net::TcpListener, SocketAddr, Vec<std::net::TcpStream>) {
    let l = anypoll::listener::bind(v4(), 0, false).expect("listener with backlog 0");
    let addr = l.local_addr().expect("addr");
    let mut fill = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fill.push(s),
            Err(_) => return (l, addr, fill),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled ({} connects went through)", fill.len());
}

#[test]
#[cfg(any(target_os = "linux", target_os = "android"))]
fn connect_timeout() {
    let (_l, hole, _fill) = black_hole();
    let mut cfg = config(&[hole]);
    cfg.timeout_connect = T;
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    let t0 = Instant::now();
    let (how, got) = read_until_closed(&mut c, T * 3 + Duration::from_secs(2)).expect("closed by the connect timeout");
    assert!(got.is_empty());
    assert_fired(&format!("connect timeout ({how:?})"), t0.elapsed());
    let t = relay.totals_until(Duration::from_secs(2), |t| t.aborted >= 1);
    assert_eq!(t.aborted, 1, "counted as aborted");
    assert_eq!(relay.shared().active.load(std::sync::atomic::Ordering::SeqCst), 0);
    relay.stop();
}

#[test]
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn connect_timeout() {
    println!("skip: the loopback black hole (a full backlog-0 accept queue drops SYNs) is Linux behaviour");
}

#[test]
fn client_timeout() {
    let server = EchoServer::start(1, v4());
    let mut cfg = config(&[server.addr()]);
    cfg.timeout_client = T;
    cfg.timeout_server = Duration::from_secs(30);
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    ping(&mut c).expect("ping");
    // Both sides silent now: the client side times out first.
    let t0 = Instant::now();
    let (how, got) = read_until_closed(&mut c, T * 3 + Duration::from_secs(2)).expect("closed by the client timeout");
    assert!(got.is_empty());
    assert_fired(&format!("client timeout ({how:?})"), t0.elapsed());
    relay.stop();
}

#[test]
fn activity_keeps_a_connection_open() {
    let server = EchoServer::start(1, v4());
    let mut cfg = config(&[server.addr()]);
    cfg.timeout_client = T;
    cfg.timeout_server = T;
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    ping(&mut c).expect("ping");
    // Traffic every T/3 for 3 × T: never idle long enough to time out.
    let end = Instant::now() + T * 3;
    let mut n = 0;
    while Instant::now() < end {
        std::thread::sleep(T / 3);
        echo(&mut c, b"still alive").unwrap_or_else(|e| panic!("closed while active (echo {n}): {e}"));
        n += 1;
    }
    let t0 = Instant::now();
    read_until_closed(&mut c, T * 3 + Duration::from_secs(2)).expect("closed once idle");
    assert_fired("idle after activity", t0.elapsed());
    relay.stop();
}

#[test]
fn server_timeout() {
    // Reads what it gets, never answers.
    let server = Backend::spawn(v4(), |mut s| {
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let mut cfg = config(&[server.addr]);
    cfg.timeout_server = T;
    cfg.timeout_client = Duration::from_secs(30);
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("request");
    let t0 = Instant::now();
    // The client waits for an answer (its own timeout is 30 s): the
    // server side times out.
    let (how, got) = read_until_closed(&mut c, T * 3 + Duration::from_secs(2)).expect("closed by the server timeout");
    assert!(got.is_empty());
    assert_fired(&format!("server timeout ({how:?})"), t0.elapsed());
    let t = relay.totals_until(Duration::from_secs(2), |t| t.aborted >= 1);
    assert_eq!(t.aborted, 1);
    relay.stop();
}
