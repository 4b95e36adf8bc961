//! Health checks take servers down and up; a server back up is used again;
//! with no server up clients are closed at once (and counted); a refused
//! connect is retried on another server; the stats endpoint serves the
//! counters on loopback.

mod relay_common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anypoll_relay::config::CheckKind;
use relay_common::*;

const FLIP: Duration = Duration::from_secs(5);

fn ids(addr: std::net::SocketAddr, n: usize) -> BTreeSet<u8> {
    (0..n).map(|_| ping_once(addr)).collect()
}

#[test]
fn http_check_takes_a_server_down_and_up() {
    let a = EchoServer::start(1, v4());
    let b = EchoServer::start(2, v4());
    let mut cfg = config(&[a.addr(), b.addr()]);
    cfg.check = CheckKind::Http("/health".into());
    cfg.check_interval = Duration::from_millis(100);
    cfg.rise = 2;
    cfg.fall = 2;
    let relay = Relay::start(cfg);
    assert_eq!(ids(relay.addr, 4), BTreeSet::from([1, 2]), "both servers take traffic");
    assert!(wait_until(FLIP, || relay.shared().servers[0].passed.load(Ordering::SeqCst) >= 2), "checks pass");
    assert!(relay.server_up(0) && relay.server_up(1));

    a.healthy.store(false, Ordering::SeqCst);
    assert!(wait_until(FLIP, || !relay.server_up(0)), "a 503 takes server 1 down");
    assert!(relay.server_up(1));
    assert!(relay.shared().servers[0].failed.load(Ordering::SeqCst) >= 2, "fall = 2 failed checks");
    let served_a = a.served.load(Ordering::SeqCst);
    assert_eq!(ids(relay.addr, 6), BTreeSet::from([2]), "a DOWN server gets no traffic");
    assert_eq!(a.served.load(Ordering::SeqCst), served_a);

    a.healthy.store(true, Ordering::SeqCst);
    assert!(wait_until(FLIP, || relay.server_up(0)), "a 200 brings server 1 back");
    assert_eq!(ids(relay.addr, 4), BTreeSet::from([1, 2]), "a server back up is used again");
    relay.stop();
}

#[test]
fn tcp_check_sees_a_stopped_server_and_its_restart() {
    let mut a = EchoServer::start(1, v4());
    let b = EchoServer::start(2, v4());
    let mut cfg = config(&[a.addr(), b.addr()]);
    cfg.check = CheckKind::Tcp;
    cfg.check_interval = Duration::from_millis(100);
    cfg.rise = 2;
    cfg.fall = 2;
    let relay = Relay::start(cfg);
    assert_eq!(ids(relay.addr, 4), BTreeSet::from([1, 2]));

    a.stop();
    assert!(wait_until(FLIP, || !relay.server_up(0)), "a refused connect takes server 1 down");
    assert_eq!(ids(relay.addr, 6), BTreeSet::from([2]), "only server 2 is used");
    let t = relay.totals_until(Duration::from_millis(1500), |t| t.accepted >= 10);
    assert_eq!(t.retries, 0, "a DOWN server is not even tried");

    a.restart();
    assert!(wait_until(FLIP, || relay.server_up(0)), "the restarted server comes back UP");
    assert_eq!(ids(relay.addr, 4), BTreeSet::from([1, 2]), "a server back up is used again");
    relay.stop();
}

#[test]
fn no_server_up_closes_clients_at_once_then_recovers() {
    let a = EchoServer::start(1, v4());
    a.healthy.store(false, Ordering::SeqCst);
    let mut cfg = config(&[a.addr()]);
    cfg.check = CheckKind::Http("/health".into());
    cfg.check_interval = Duration::from_millis(100);
    cfg.rise = 1;
    cfg.fall = 1;
    cfg.stats = Some(v4());
    let relay = Relay::start(cfg);
    let stats = relay.shared().stats_bound.lock().expect("lock").expect("stats bound");
    assert!(stats.ip().is_loopback(), "stats on loopback: {stats}");
    assert!(wait_until(FLIP, || !relay.server_up(0)), "the only server goes DOWN");

    for i in 0..3 {
        let mut c = connect(relay.addr);
        let t0 = Instant::now();
        let (how, got) = read_until_closed(&mut c, Duration::from_secs(3)).expect("closed");
        let took = t0.elapsed();
        assert!(got.is_empty(), "client {i} got {got:?}");
        assert!(took < Duration::from_millis(500), "client {i} closed at once ({how:?}), not after {took:?}");
    }
    assert_eq!(a.served.load(Ordering::SeqCst), 0);
    let page = fetch_stats(stats);
    assert_eq!(stat(&page, "no_server"), Some(3), "stats count the clients closed for no server:\n{page}");
    assert_eq!(stat(&page, "connections_total"), Some(3), "{page}");
    assert!(page.contains(&format!("server {} DOWN", a.addr())), "{page}");

    a.healthy.store(true, Ordering::SeqCst);
    assert!(wait_until(FLIP, || relay.server_up(0)), "the server comes back");
    assert_eq!(ping_once(relay.addr), 1, "and is used again");
    let page = fetch_stats(stats);
    assert!(page.contains(&format!("server {} UP", a.addr())), "{page}");
    let t = relay.stop();
    assert_eq!(t.no_server, 3);
}

#[test]
fn refused_connect_is_retried_on_another_server() {
    let dead = dead_port();
    let b = EchoServer::start(2, v4());
    let relay = Relay::start(config(&[dead, b.addr()]));
    for _ in 0..4 {
        assert_eq!(ping_once(relay.addr), 2, "served by the live server");
    }
    let t = relay.stop();
    assert_eq!(t.accepted, 4);
    assert!(t.retries >= 2, "round-robin hit the dead server and retried: {} retries", t.retries);
    assert_eq!(t.aborted, 0);
}

#[test]
fn stats_endpoint_serves_the_counters() {
    let a = EchoServer::start(1, v4());
    let mut cfg = config(&[a.addr()]);
    cfg.stats = Some(v4());
    let relay = Relay::start(cfg);
    let stats = relay.shared().stats_bound.lock().expect("lock").expect("stats bound");
    assert!(stats.ip().is_loopback() && stats.port() != 0, "{stats}");
    for _ in 0..3 {
        let mut c = connect(relay.addr);
        ping(&mut c).expect("ping");
        echo(&mut c, b"0123456789").expect("echo");
    }
    // Thread 0 publishes its own counters before rendering.
    let mut page = String::new();
    assert!(
        wait_until(Duration::from_secs(3), || {
            page = fetch_stats(stats);
            stat(&page, "connections_total") == Some(3) && stat(&page, "bytes_server_to_client") == Some(3 * 15)
        }),
        "counters in:\n{page}"
    );
    assert_eq!(stat(&page, "bytes_client_to_server"), Some(3 * 14), "{page}");
    for name in [
        "connections_active",
        "aborted",
        "no_server",
        "connect_retries",
        "syscalls",
        "syscalls_read",
        "eagain",
        "pipes_spare",
        "pipes_in_use",
    ] {
        assert!(stat(&page, name).is_some(), "{name} missing from:\n{page}");
    }
    assert!(stat(&page, "syscalls_accept").unwrap_or(0) >= 3, "{page}");
    assert!(page.contains(&format!("server {} UP checks_passed=0 checks_failed=0", a.addr())), "{page}");
    relay.stop();
}
