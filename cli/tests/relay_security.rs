//! Security defaults: the stats endpoint binds loopback unless told
//! otherwise and ignores what its clients send; edge values of every
//! setting are a one-line error (exit 2) or work, never a panic; each
//! aborted transfer is logged with the client, the reason and the bytes
//! not delivered.
//!
//! Everything is on loopback; every wait is bounded.

#[path = "../../relay/tests/relay_common/mod.rs"]
mod relay_common;
mod relay_proc;

#[cfg(target_os = "linux")]
use std::io;
use std::io::{Read, Write};
use std::net::SocketAddr;
#[cfg(target_os = "linux")]
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use relay_common::*;
use relay_proc::*;

const L: &str = "127.0.0.1:0";

/// A port free on 127.0.0.1 a moment ago.
#[cfg(target_os = "linux")]
fn free_port() -> u16 {
    TcpListener::bind(v4()).and_then(|l| l.local_addr()).expect("bind").port()
}

/// How a connect to `addr` went: Ok, or the error kind.
#[cfg(target_os = "linux")]
fn try_connect(addr: SocketAddr) -> Result<(), io::ErrorKind> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop).map_err(|e| e.kind())
}

/// Runs the relay with `args` and checks where the stats listen: only
/// 127.0.0.1 when `loopback_only`, every address otherwise.
#[cfg(target_os = "linux")]
fn stats_bind(args: &[&str], port: u16, loopback_only: bool) {
    let p = Proc::spawn(args);
    let (_, stats) = p.wait_listening();
    let stats = stats.expect("the stats address is logged");
    assert_eq!(stats.port(), port, "{args:?}");
    let lo: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let other: SocketAddr = format!("127.0.0.2:{port}").parse().expect("addr");
    let page = fetch_stats(lo);
    assert!(stat(&page, "connections_total").is_some(), "stats on 127.0.0.1: {page}");
    if loopback_only {
        assert_eq!(stats, lo, "{args:?}: a port alone binds 127.0.0.1");
        assert_eq!(try_connect(other), Err(io::ErrorKind::ConnectionRefused), "{args:?}: reachable on {other}");
    } else {
        assert_eq!(try_connect(other), Ok(()), "{args:?}: an explicit 0.0.0.0 is reachable on {other}");
    }
    println!("{args:?}: stats on {stats}");
}

#[test]
#[cfg(target_os = "linux")] // all of 127/8 reaches lo
fn stats_on_a_bare_port_binds_loopback_only() {
    let server = EchoServer::start(1, v4());
    let s = server.addr().to_string();

    let port = free_port();
    stats_bind(&["relay", "--listen", L, "--server", &s, "--stats", &port.to_string()], port, true);

    let port = free_port();
    let cfg = TempFile::new("stats.toml", &format!("listen = [\"{L}\"]\nserver = [\"{s}\"]\nstats = \"{port}\"\n"));
    stats_bind(&["relay", "--config", cfg.path()], port, true);

    // The probe can tell: told otherwise, the relay listens on every address.
    let port = free_port();
    stats_bind(&["relay", "--listen", L, "--server", &s, "--stats", &format!("0.0.0.0:{port}")], port, false);
}

/// Writes junk to `s` until it takes no more for 200 ms, it fails, or
/// `max` bytes went; returns the bytes written.
#[cfg(target_os = "linux")]
fn junk(s: &mut TcpStream, max: usize) -> usize {
    s.set_nonblocking(true).expect("nonblocking");
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    let (mut sent, mut last) = (0, Instant::now());
    while sent < max && last.elapsed() < Duration::from_millis(200) {
        match s.write(&chunk) {
            Ok(n) => {
                sent += n;
                last = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break,
        }
    }
    sent
}

/// The stats endpoint writes its page and closes: it reads nothing, holds
/// no fd for a client that never sends or never reads, grows no memory
/// for clients sending megabytes of junk, and a slow reader does not hold
/// up thread 0, which also relays.
#[test]
#[cfg(target_os = "linux")]
fn stats_endpoint_ignores_what_clients_send_and_holds_nothing() {
    let server = EchoServer::start(2, v4());
    let s = server.addr().to_string();
    let p = Proc::spawn(&["relay", "--listen", L, "--server", &s, "--stats", "0"]);
    let (addrs, stats) = p.wait_listening();
    let stats = stats.expect("stats");
    fetch_stats(stats);
    std::thread::sleep(Duration::from_millis(100));
    let fds0 = open_fds_below(p.pid(), u64::MAX).expect("fds");
    let rss0 = rss_kib(p.pid()).expect("rss");

    // Never send, never read: the relay has closed its side already.
    let idle: Vec<TcpStream> = (0..20).map(|_| connect(stats)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let fds = open_fds_below(p.pid(), u64::MAX).expect("fds");
    assert_eq!(fds, fds0, "the relay holds fds for stats clients that never send or read");
    // Meanwhile thread 0 relays at once.
    let t0 = Instant::now();
    assert_eq!(ping_once(addrs[0]), 2);
    assert!(t0.elapsed() < Duration::from_secs(1), "relaying waited {:?} behind stats clients", t0.elapsed());
    for mut c in idle {
        let (_, page) = read_until_closed(&mut c, Duration::from_secs(2)).expect("page then close");
        assert!(String::from_utf8_lossy(&page).contains("connections_total"));
    }

    // Junk: up to 4 MiB each from 16 clients.
    let mut total = 0;
    for _ in 0..16 {
        let mut c = connect(stats);
        total += junk(&mut c, 4 << 20);
    }
    std::thread::sleep(Duration::from_millis(200));
    let rss = rss_kib(p.pid()).expect("rss");
    // The relay reads none of it: it closes after the page, so the kernel
    // resets each junk sender after its first socket buffer or so.
    println!("stats junk: {total} bytes taken by the kernel before the resets; RSS {rss0} KiB → {rss} KiB; fds {fds0} → {fds}");
    assert!(rss <= rss0 + 1024, "RSS grew from {rss0} to {rss} KiB on stats junk");
    assert_eq!(open_fds_below(p.pid(), u64::MAX).expect("fds"), fds0);
    let page = fetch_stats(stats);
    assert!(stat(&page, "connections_total").is_some(), "{page}");
    assert_eq!(ping_once(addrs[0]), 2);
    assert!(!p.log_text().contains("panicked"), "{}", p.log_text());
}

// ----- edge values: an error (exit 2) or a working relay, never a panic -----

/// Runs the relay with `extra` settings; it must either refuse them with
/// exit status 2 and one line naming `name`, or relay a ping, survive a
/// client that stays on, and stop on SIGTERM with status 0.
fn edge(extra: &[&str], name: &str, works: bool) {
    let server = EchoServer::start(3, v4());
    let s = server.addr().to_string();
    let mut args = vec!["relay", "--listen", L, "--server", &s];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    if !works {
        let (st, err) = p.finish(Duration::from_secs(10));
        assert_eq!(st.code(), Some(2), "{extra:?}: status; stderr {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: one line: {err:?}");
        assert!(err.contains(name), "{extra:?}: {err:?} does not name {name}");
        println!("{extra:?} → {}", err.trim());
        return;
    }
    let (addrs, _) = p.wait_listening();
    let mut c = connect(addrs[0]);
    assert_eq!(ping(&mut c).unwrap_or_else(|e| panic!("{extra:?}: {e}; {}", p.log_text())), 3);
    echo(&mut c, b"edge").expect("echo");
    std::thread::sleep(Duration::from_millis(100));
    p.signal(libc::SIGTERM);
    // The client still lives: the grace timer is armed; closing ends it.
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    let (st, err) = p.finish(Duration::from_secs(5));
    assert!(!err.contains("panicked"), "{extra:?}: {err}");
    assert!(st.success(), "{extra:?}: status {st:?}: {err}");
    println!("{extra:?} → works");
}

#[test]
fn edge_values_are_errors_or_work() {
    const MAX: &str = "18446744073709551615"; // u64::MAX, as ms
    let bad: &[(&[&str], &str)] = &[
        (&["--bufsize", "0"], "--bufsize"),
        (&["--bufsize", "1023"], "--bufsize"),
        (&["--bufsize", MAX], "--bufsize"),
        (&["--threads", "0"], "--threads"),
        (&["--threads", "257"], "--threads"),
        (&["--maxconn", "0"], "--maxconn"),
        (&["--check-interval", "0"], "--check-interval"),
        (&["--timeout-connect", "0"], "--timeout-connect"),
        (&["--timeout-client", "99999999999999999999"], "--timeout-client"),
        (&["--grace=-1"], "--grace"),
        (&["--fall", "0"], "--fall"),
        (&["--rise", "4294967296"], "--rise"),
        (&["--stats", "65536"], "--stats"),
        (&["--listen", "127.0.0.1:65536"], "--listen"),
    ];
    for (extra, name) in bad {
        edge(extra, name, false);
    }
    let good: &[&[&str]] = &[
        &["--bufsize", "1024"],
        &["--bufsize", "67108864"],
        &["--maxconn", MAX],
        &["--threads", "16"],
        &["--timeout-connect", MAX],
        &["--timeout-client", MAX, "--timeout-server", MAX],
        &["--timeout-client", "99999999999999h"],
        &["--grace", MAX],
        &["--grace", "0"],
        &["--check", "tcp", "--check-interval", MAX],
        &["--check", "tcp", "--check-interval", "1", "--rise", "4294967295", "--fall", "4294967295"],
        &["--check", "http:/", "--check-interval", "1ms"],
    ];
    for extra in good {
        edge(extra, "", true);
    }
}

#[test]
fn edge_values_in_the_config_file() {
    let cases: &[(&str, bool)] = &[
        ("timeout_client = 9223372036854775807", true),
        ("grace = 9223372036854775807", true),
        ("timeout_client = -1", false),
        ("maxconn = -1", false),
        ("bufsize = 1e9", false),
        ("threads = 0", false),
        ("check_interval = \"0\"", false),
        ("stats = 8404", false),
    ];
    let server = EchoServer::start(3, v4());
    for (line, works) in cases {
        let f = TempFile::new("edge.toml", &format!("listen = [\"{L}\"]\nserver = [\"{}\"]\n{line}\n", server.addr()));
        let p = Proc::spawn(&["relay", "--config", f.path()]);
        if !works {
            let (st, err) = p.finish(Duration::from_secs(10));
            assert_eq!(st.code(), Some(2), "{line}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{line}: {err:?}");
            println!("{line} → {}", err.trim());
            continue;
        }
        let (addrs, _) = p.wait_listening();
        assert_eq!(ping_once(addrs[0]), 3);
        p.signal(libc::SIGTERM);
        let (st, err) = p.finish(Duration::from_secs(5));
        assert!(st.success() && !err.contains("panicked"), "{line}: {st:?} {err}");
        println!("{line} → works");
    }
}

/// A config "file" that never ends (/dev/zero) is refused, not read into
/// memory without end.
#[test]
#[cfg(target_os = "linux")]
fn an_endless_config_file_is_refused() {
    let p = Proc::spawn(&["relay", "--config", "/dev/zero"]);
    let (st, err) = p.finish(Duration::from_secs(10));
    assert_eq!(st.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    assert!(err.contains("/dev/zero"), "{err}");
    println!("--config /dev/zero → {}", err.trim());
}

// ----- no silent loss: each aborted transfer is logged -----

/// The bytes a "… B not delivered" line counts.
fn not_delivered(line: &str) -> u64 {
    let head = line.rsplit_once(" B not delivered").expect("B not delivered").0;
    head.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// Waits for the log line about `peer` that ends its transfer.
fn abort_line(p: &Proc, peer: SocketAddr) -> String {
    let needle = format!("client {peer} ");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let found =
            p.log.lock().expect("log").iter().find(|l| l.contains(&needle) && l.contains("not delivered")).cloned();
        if let Some(l) = found {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no log line names the aborted client {peer}: {}", p.log_text())
}

/// A client resets while the server floods it, with the relay's buffers
/// full: the relay logs the client, "client side", the reason and the
/// bytes it could not deliver.
#[test]
fn a_client_reset_mid_transfer_is_logged_with_its_reason() {
    let server = Backend::spawn(v4(), |mut s| {
        let chunk = vec![0x33u8; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
    });
    let s = server.addr.to_string();
    for splice in ["never", "always"] {
        // The default log level: a loss is a warning.
        let p = Proc::spawn(&["relay", "--listen", L, "--server", &s, "--splice", splice]);
        let (addrs, _) = p.wait_listening();
        let mut c = connect(addrs[0]);
        let mut buf = vec![0u8; 64 * 1024];
        c.read_exact(&mut buf).expect("the flood starts");
        // Stop reading: every buffer on the way fills up.
        std::thread::sleep(Duration::from_millis(300));
        let peer = c.local_addr().expect("addr");
        reset(c);
        let line = abort_line(&p, peer);
        println!("splice {splice}: {line}");
        assert!(line.contains("client side"), "{line}");
        assert!(line.contains("connection reset by peer") || line.contains("broken pipe"), "reason: {line}");
        assert!(not_delivered(&line) > 0, "the relay held bytes for the client: {line}");
    }
}

/// A server resets while a client pushes to it, with the relay's buffers
/// full: the relay logs the client, "server side", the reason and the
/// bytes not delivered; the client is told by a close.
#[test]
fn a_server_reset_mid_transfer_is_logged_with_its_reason() {
    let server = Backend::spawn(v4(), |mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        let _ = s.read_exact(&mut buf);
        // Stop reading while the client pushes, then reset.
        std::thread::sleep(Duration::from_millis(300));
        reset(s);
    });
    let s = server.addr.to_string();
    for splice in ["never", "always"] {
        // The default log level: a loss is a warning.
        let p = Proc::spawn(&["relay", "--listen", L, "--server", &s, "--splice", splice]);
        let (addrs, _) = p.wait_listening();
        let c = connect(addrs[0]);
        let peer = c.local_addr().expect("addr");
        let mut w = c.try_clone().expect("clone");
        let pusher = std::thread::spawn(move || {
            let chunk = vec![0x44u8; 64 * 1024];
            let mut sent = 0u64;
            while w.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
            sent
        });
        let line = abort_line(&p, peer);
        println!("splice {splice}: {line}");
        assert!(line.contains("server side"), "{line}");
        assert!(line.contains("connection reset by peer") || line.contains("broken pipe"), "reason: {line}");
        assert!(not_delivered(&line) > 0, "the relay held bytes for the server: {line}");
        // The client's writes end (the relay closed it).
        let mut c = c;
        let _ = read_until_closed(&mut c, Duration::from_secs(5)).expect("the client is closed");
        drop(c);
        let sent = pusher.join().expect("pusher");
        assert!(sent >= 64 * 1024, "{sent}");
    }
}

/// A huge check interval with many servers: the first checks are spread
/// over the interval (interval / n × i), which must not overflow.
#[test]
fn a_huge_check_interval_over_many_servers_works() {
    let server = EchoServer::start(9, v4());
    let list = vec![format!("\"{}\"", server.addr()); 1100].join(", ");
    let f = TempFile::new("many.toml", &format!("listen = [\"{L}\"]\nserver = [{list}]\ncheck = \"tcp\"\n"));
    let p = Proc::spawn(&["relay", "--config", f.path(), "--check-interval", "18446744073709551615"]);
    let (addrs, _) = p.wait_listening();
    assert_eq!(ping_once(addrs[0]), 9);
    p.signal(libc::SIGTERM);
    let (st, err) = p.finish(Duration::from_secs(5));
    assert!(st.success() && !err.contains("panicked"), "{st:?}: {err}");
}
