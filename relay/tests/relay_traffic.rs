//! The relay carries traffic: round-robin, IPv4 and IPv6, two threads,
//! every poller, half-close both ways, 64 MiB both ways with a checksum
//! (with and without splice), and maxconn.

mod relay_common;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use anypoll::backends::registry::{self, Probe};
use anypoll::stream::SpliceMode;
use relay_common::*;

#[test]
fn round_robin_over_three_servers() {
    let servers: Vec<EchoServer> = (1..=3).map(|id| EchoServer::start(id, v4())).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(EchoServer::addr).collect();
    let relay = Relay::start(config(&addrs));
    let ids: Vec<u8> = (0..9).map(|_| ping_once(relay.addr)).collect();
    assert_eq!(ids, [1, 2, 3, 1, 2, 3, 1, 2, 3], "one thread walks the servers in order");
    for s in &servers {
        assert_eq!(s.served.load(Ordering::SeqCst), 3, "server {} got its share", s.id);
    }
    let t = relay.stop();
    assert_eq!(t.accepted, 9);
    assert_eq!(t.bytes_up, 9 * 4);
    assert_eq!(t.bytes_down, 9 * 5);
    assert_eq!((t.aborted, t.no_server, t.retries), (0, 0, 0));
}

#[test]
fn ipv4_and_ipv6_listeners_and_servers() {
    if let Err(why) = ipv6_available() {
        println!("skip: no IPv6 loopback here: {why}");
        return;
    }
    let s4 = EchoServer::start(4, v4());
    let s6 = EchoServer::start(6, v6());
    let mut cfg = config(&[s4.addr(), s6.addr()]);
    cfg.listen = vec![v4(), v6()];
    let relay = Relay::start(cfg);
    let listen = relay.addrs();
    assert!(listen[0].is_ipv4() && listen[1].is_ipv6(), "bound {listen:?}");
    let mut seen = BTreeSet::new();
    for l in &listen {
        for _ in 0..4 {
            seen.insert((l.is_ipv6(), ping_once(*l)));
        }
    }
    // Round-robin alternates, so every (client family, server family) pair
    // occurs: v4→v4, v4→v6, v6→v4, v6→v6.
    assert_eq!(seen, BTreeSet::from([(false, 4), (false, 6), (true, 4), (true, 6)]));
    assert_eq!(s4.served.load(Ordering::SeqCst) + s6.served.load(Ordering::SeqCst), 8);
    relay.stop();
}

#[test]
fn two_threads_with_reuseport_carry_traffic() {
    let server = EchoServer::start(1, v4());
    let mut cfg = config(&[server.addr()]);
    cfg.threads = 2;
    let relay = Relay::start(cfg);
    let shared = relay.shared().clone();
    let addr = relay.addr;
    std::thread::scope(|sc| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(move || {
                    for _ in 0..10 {
                        let mut s = connect(addr);
                        assert_eq!(ping(&mut s).expect("ping"), 1);
                        echo(&mut s, b"more").expect("echo");
                        echo(&mut s, b"again").expect("echo");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("client");
        }
    });
    let t = relay.stop();
    assert_eq!(t.accepted, 40);
    assert_eq!(t.bytes_up, 40 * (4 + 4 + 5));
    assert_eq!(t.aborted, 0);
    let per_thread: Vec<u64> = shared.stats.lock().expect("stats").iter().map(|w| w.accepted).collect();
    // The kernel spreads connections over the two SO_REUSEPORT listeners by
    // a hash of the 4-tuple: all 40 on one thread has odds 2^-39.
    assert!(per_thread.len() == 2 && per_thread.iter().all(|&n| n > 0), "accepts per thread: {per_thread:?}");
}

#[test]
fn every_poller_relays() {
    let server = EchoServer::start(1, v4());
    let mut tried = 0;
    for b in registry::backends() {
        match b.test() {
            Probe::Ok(_) => {}
            other => {
                println!("skip: poller {} here: {other:?}", b.name);
                continue;
            }
        }
        let mut cfg = config(&[server.addr()]);
        cfg.poller = Some(b.name.to_string());
        let relay = Relay::start(cfg);
        for _ in 0..3 {
            let mut s = connect(relay.addr);
            assert_eq!(ping(&mut s).unwrap_or_else(|e| panic!("{}: {e}", b.name)), 1);
            echo(&mut s, b"plain echo").unwrap_or_else(|e| panic!("{}: {e}", b.name));
        }
        let t = relay.stop();
        assert_eq!((t.accepted, t.aborted), (3, 0), "poller {}", b.name);
        println!("ok: poller {}", b.name);
        tried += 1;
    }
    assert!(tried > 0, "no poller works here");
}

// ----- half-close -----

/// The client half-closes first; the server still answers after its EOF.
fn client_half_closes_first(splice: SpliceMode) {
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>();
    let tx = Mutex::new(tx);
    let server = Backend::spawn(v4(), move |mut s| {
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got).map(|_| got);
        let ok = r.is_ok();
        let _ = tx.lock().expect("tx").send(r);
        if ok {
            // The client's EOF arrived; the way back is still open.
            std::thread::sleep(Duration::from_millis(100));
            let _ = s.write_all(b"reply after ");
            std::thread::sleep(Duration::from_millis(100));
            let _ = s.write_all(b"your EOF");
        }
    });
    let mut cfg = config(&[server.addr]);
    cfg.splice = splice;
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    c.write_all(b"hello").expect("send");
    c.shutdown(Shutdown::Write).expect("half-close");
    let seen = rx.recv_timeout(Duration::from_secs(5)).expect("the server saw EOF").expect("server read");
    assert_eq!(seen, b"hello", "{splice:?}: the server got the data, then EOF");
    let (how, reply) = read_until_closed(&mut c, Duration::from_secs(5)).expect("reply then close");
    assert_eq!(reply, b"reply after your EOF", "{splice:?}: data flows back after the client's half-close");
    assert_eq!(how, Closed::Eof, "{splice:?}");
    assert!(wait_until(Duration::from_secs(3), || relay.shared().active.load(Ordering::SeqCst) == 0));
    let t = relay.stop();
    assert_eq!(t.aborted, 0, "{splice:?}: a clean end");
}

/// The server half-closes first; the client still sends after its EOF.
fn server_half_closes_first(splice: SpliceMode) {
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>();
    let tx = Mutex::new(tx);
    let server = Backend::spawn(v4(), move |mut s| {
        let _ = s.write_all(b"banner");
        let _ = s.shutdown(Shutdown::Write);
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got).map(|_| got);
        let _ = tx.lock().expect("tx").send(r);
    });
    let mut cfg = config(&[server.addr]);
    cfg.splice = splice;
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    let mut banner = Vec::new();
    c.read_to_end(&mut banner).expect("read to the server's EOF");
    assert_eq!(banner, b"banner", "{splice:?}");
    // The client got EOF; its way to the server is still open.
    std::thread::sleep(Duration::from_millis(100));
    c.write_all(b"late ").expect("send after EOF");
    std::thread::sleep(Duration::from_millis(100));
    c.write_all(b"data").expect("send after EOF");
    c.shutdown(Shutdown::Write).expect("half-close");
    let seen = rx.recv_timeout(Duration::from_secs(5)).expect("the server saw EOF").expect("server read");
    assert_eq!(seen, b"late data", "{splice:?}: data flows on after the server's half-close");
    assert!(wait_until(Duration::from_secs(3), || relay.shared().active.load(Ordering::SeqCst) == 0));
    let t = relay.stop();
    assert_eq!(t.aborted, 0, "{splice:?}: a clean end");
}

#[test]
fn half_close_client_first() {
    client_half_closes_first(SpliceMode::Never);
    client_half_closes_first(SpliceMode::Always);
}

#[test]
fn half_close_server_first() {
    server_half_closes_first(SpliceMode::Never);
    server_half_closes_first(SpliceMode::Always);
}

// ----- 64 MiB -----

const BIG: u64 = 64 << 20;
const SEED_UP: u64 = 0x1234_5678_9abc_def1;
const SEED_DOWN: u64 = 0x0fed_cba9_8765_4321;

/// 64 MiB each way at once; the checksums on both ends must agree.
fn transfer_64mib(splice: SpliceMode) {
    type Sums = ((u64, u64), (u64, u64));
    let (tx, rx) = mpsc::channel::<io::Result<Sums>>();
    let tx = Mutex::new(tx);
    let server = Backend::spawn(v4(), move |s| {
        let r = exchange(&s, SEED_DOWN, BIG);
        let _ = tx.lock().expect("tx").send(r);
    });
    let mut cfg = config(&[server.addr]);
    cfg.splice = splice;
    let relay = Relay::start(cfg);
    let c = connect(relay.addr);
    let (c_sent, c_got) = exchange(&c, SEED_UP, BIG).expect("client transfer");
    let (s_sent, s_got) = rx.recv_timeout(Duration::from_secs(20)).expect("server done").expect("server transfer");
    assert_eq!(c_sent.0, BIG);
    assert_eq!(s_sent.0, BIG);
    assert_eq!(s_got, c_sent, "{splice:?}: client → server bytes and checksum");
    assert_eq!(c_got, s_sent, "{splice:?}: server → client bytes and checksum");
    drop(c);
    assert!(wait_until(Duration::from_secs(3), || relay.shared().active.load(Ordering::SeqCst) == 0));
    let t = relay.stop();
    assert_eq!((t.bytes_up, t.bytes_down), (BIG, BIG), "{splice:?}");
    assert_eq!(t.aborted, 0, "{splice:?}");
    // The pool counters the stats page shows (ci/soak.sh counts the fds
    // of spare pipes with them): nothing in use once the stream is over.
    assert_eq!(t.pipes_in_use, 0, "{splice:?}: pipes still in use after the stream");
    match splice {
        SpliceMode::Never => {
            assert_eq!(t.counters.splices, 0, "splice never: no splice call");
            assert_eq!(t.pipes_spare, 0, "splice never: no pipe");
        }
        _ if SpliceMode::PLATFORM_HAS_SPLICE => {
            assert!(t.counters.splices > 0, "{splice:?}: splice was used ({:?})", t.counters);
            let spare = t.pipes_spare;
            assert!(
                (1..=2).contains(&spare),
                "{splice:?}: the pipes (one per direction) went back to the pool: {spare}"
            );
        }
        _ => println!("note: no splice on this platform; {splice:?} used buffers"),
    }
    println!("{splice:?}: splices {} fallbacks {}", t.counters.splices, t.counters.splice_fallbacks);
}

#[test]
fn transfer_64mib_without_splice() {
    transfer_64mib(SpliceMode::Never);
}

#[test]
fn transfer_64mib_with_splice() {
    transfer_64mib(SpliceMode::Always);
}

// ----- maxconn -----

#[test]
fn maxconn_holds_the_third_client_until_one_leaves() {
    let server = EchoServer::start(1, v4());
    let mut cfg = config(&[server.addr()]);
    cfg.maxconn = 2;
    let relay = Relay::start(cfg);
    let mut c1 = connect(relay.addr);
    let mut c2 = connect(relay.addr);
    assert_eq!(ping(&mut c1).expect("c1"), 1);
    assert_eq!(ping(&mut c2).expect("c2"), 1);
    // The kernel completes the third handshake (backlog), but the relay
    // does not accept it: nothing is relayed.
    let mut c3 = connect(relay.addr);
    c3.write_all(b"ping").expect("c3 send");
    c3.set_read_timeout(Some(Duration::from_millis(700))).expect("timeout");
    let mut r = [0u8; 5];
    match c3.read(&mut r) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        other => panic!("the third client was served beyond maxconn: {other:?}"),
    }
    assert_eq!(server.served.load(Ordering::SeqCst), 2, "only two reached the server");
    assert_eq!(relay.shared().active.load(Ordering::SeqCst), 2);
    // The first two still work.
    echo(&mut c2, b"still here").expect("c2 again");
    // One leaves: the third is accepted and served.
    drop(c1);
    c3.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    c3.read_exact(&mut r).expect("the third client is served once one left");
    assert_eq!(&r, b"\x01ping");
    assert_eq!(server.served.load(Ordering::SeqCst), 3);
    assert!(relay.shared().active.load(Ordering::SeqCst) <= 2);
    // And maxconn still holds: a fourth waits while c2 and c3 live.
    let mut c4 = connect(relay.addr);
    c4.write_all(b"ping").expect("c4 send");
    c4.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    assert!(c4.read(&mut r).is_err(), "the fourth client was served beyond maxconn");
    drop(c2);
    c4.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    c4.read_exact(&mut r).expect("the fourth client is served once c2 left");
    assert_eq!(server.served.load(Ordering::SeqCst), 4);
    drop((c3, c4));
    let t = relay.stop();
    assert_eq!(t.accepted, 4);
}
