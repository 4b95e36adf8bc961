//! Exhaustion: the relay binary out of fds (EMFILE pauses accepting, logs
//! once, does not spin, and recovers), maxconn over two threads, memory
//! bounded by backpressure, and a timeout for every phase that had none
//! tested elsewhere.
//!
//! Everything is on loopback; every load is bounded in count and time.

#[path = "../../relay/tests/relay_common/mod.rs"]
mod relay_common;
mod relay_proc;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use relay_common::*;
use relay_proc::*;

const L: &str = "127.0.0.1:0";

/// Where a client that sent `ping` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ping {
    /// The echo came back.
    Served,
    /// Nothing yet: waiting in the listen queue.
    Waiting,
    /// Closed (EOF or reset) without an answer.
    Closed,
}

/// Looks (without blocking) whether the answer to `ping` arrived.
fn ping_state(c: &mut TcpStream) -> Ping {
    c.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 5];
    let r = match c.peek(&mut b) {
        Ok(0) => Ping::Closed,
        Ok(n) if n < 5 => Ping::Waiting,
        Ok(_) => {
            c.read_exact(&mut b).expect("read the echo");
            assert_eq!(&b[1..], b"ping", "echo");
            Ping::Served
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ping::Waiting,
        Err(_) => Ping::Closed,
    };
    c.set_nonblocking(false).expect("blocking");
    r
}

struct Client {
    s: TcpStream,
    state: Ping,
}

/// Classifies every client still waiting; returns (served, waiting, closed).
fn tally(clients: &mut [Client]) -> (usize, usize, usize) {
    for c in clients.iter_mut() {
        if c.state == Ping::Waiting {
            c.state = ping_state(&mut c.s);
        }
    }
    let n = |p| clients.iter().filter(|c| c.state == p).count();
    (n(Ping::Served), n(Ping::Waiting), n(Ping::Closed))
}

/// The relay run with at most `limit` fds, `--no-splice` (2 fds per
/// connection): more clients than fit, then some leave.
#[cfg(target_os = "linux")]
fn emfile(limit: u64) {
    let server = EchoServer::start(7, v4());
    let s = server.addr().to_string();
    // TCP checks every 100 ms: out of fds, a check cannot even make its
    // socket, which must not mark the server down.
    let args = ["relay", "--listen", L, "--server", &s, "--no-splice", "--check", "tcp", "--check-interval", "100ms"];
    let p = Proc::spawn_with(&args, |cmd| limit_fds(cmd, limit));
    let (addrs, _) = p.wait_listening();
    let addr = addrs[0];
    // The least of a few looks: a health check holds an fd now and then.
    let base = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(15));
            open_fds_below(p.pid(), limit).expect("/proc/PID/fd")
        })
        .min()
        .expect("samples");
    // Each connection takes 2 fds (client, server); the relay holds one
    // spare for the next server socket (counted in `base`), and the last
    // client may use it: ⌈free / 2⌉ connections.
    let room = (limit as usize - base).div_ceil(2);
    let extra = 5;
    println!("limit {limit}: {base} fds open at start, room for {room} connections; {extra} more clients");

    let mut clients = Vec::new();
    for _ in 0..room + extra {
        let mut s = connect(addr);
        s.write_all(b"ping").expect("ping");
        clients.push(Client { s, state: Ping::Waiting });
    }
    // Let the relay take what it can.
    let mut t = (0, 0, 0);
    wait_until(Duration::from_secs(5), || {
        t = tally(&mut clients);
        t.0 + t.2 >= room
    });
    assert!(p.wait_line("pausing accepts", Duration::from_secs(3)).is_some(), "EMFILE is logged: {}", p.log_text());
    // Until nothing changes for 600 ms (six check intervals), at most 5 s:
    // on a loaded machine the relay may still be taking the last client.
    // A health check that held an fd when the last client came frees it
    // within an interval; that client is then accepted, which ends the
    // episode, and the next EMFILE is a second one, logged once too.
    let mut t = tally(&mut clients);
    let settle = std::time::Instant::now();
    let mut still = std::time::Instant::now();
    while still.elapsed() < Duration::from_millis(600) && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        let now = tally(&mut clients);
        if now != t {
            t = now;
            still = std::time::Instant::now();
        }
    }
    let warned = p.count_lines("pausing accepts");
    println!("limit {limit}: served {}, waiting {}, closed {}; {warned} EMFILE warning(s)", t.0, t.1, t.2);
    assert!((1..=2).contains(&warned), "one warning per episode: {}", p.log_text());

    // Stuck: no spin, and the warning is not repeated.
    let lines = p.log.lock().expect("log").len();
    let c0 = cpu_ticks(p.pid()).expect("cpu ticks");
    std::thread::sleep(Duration::from_secs(1));
    let c1 = cpu_ticks(p.pid()).expect("cpu ticks");
    let t2 = tally(&mut clients);
    println!("limit {limit}: {} CPU ticks over 1 s while out of fds", c1 - c0);
    assert!(c1 - c0 <= 5, "the relay spins while out of fds: {} ticks in 1 s", c1 - c0);
    assert_eq!(p.log.lock().expect("log").len(), lines, "nothing logged while stuck: {}", p.log_text());
    assert_eq!(t2, t, "nothing changes while stuck");
    assert_eq!(t.2, 0, "no client is turned away for lack of fds; they wait: {}", p.log_text());
    // A health check may hold an fd at the moment the last client comes.
    assert!(t.0 >= room - 1 && t.0 <= room, "served {} with room for {room}", t.0);
    assert!(!p.log_text().contains("DOWN"), "out of fds, the server was marked down: {}", p.log_text());
    assert_eq!(t.1, room + extra - t.0);

    // Connections accepted before are unaffected.
    let served: Vec<usize> = (0..clients.len()).filter(|&i| clients[i].state == Ping::Served).collect();
    for &i in &served {
        echo(&mut clients[i].s, b"still here").expect("a connection from before the EMFILE works");
    }
    // All but two leave: the waiting ones are served, then a new one.
    for &i in &served[2..] {
        clients[i].s.shutdown(std::net::Shutdown::Both).expect("shutdown");
    }
    let ok = wait_until(Duration::from_secs(5), || tally(&mut clients).1 == 0);
    let t3 = tally(&mut clients);
    assert!(ok && t3.2 == 0, "every waiting client is served once fds free up: {t3:?}; {}", p.log_text());
    let mut fresh = connect(addr);
    assert_eq!(ping(&mut fresh).expect("a new client after the episode"), 7);
    echo(&mut fresh, b"new").expect("echo");
    for &i in &served[..2] {
        echo(&mut clients[i].s, b"still here").expect("a connection from before works after");
    }
    assert_eq!(p.count_lines("pausing accepts"), warned, "a warning after the episode ended: {}", p.log_text());
    println!("limit {limit}: log:\n{}", p.log_text());
}

#[test]
#[cfg(target_os = "linux")]
fn out_of_fds_the_relay_pauses_logs_once_does_not_spin_and_recovers() {
    // Both parities of free fds: with an odd count, one accept takes the
    // last fd and the connect to the server finds none.
    emfile(40);
    emfile(41);
}

/// `--threads 2 --maxconn 2`: the count is shared, so the two threads
/// together never serve more than 2 clients, from the first burst (both
/// threads have room then) to the last client.
#[test]
fn maxconn_holds_over_two_threads() {
    let server = EchoServer::start(4, v4());
    let mut cfg = config(&[server.addr()]);
    cfg.threads = 2;
    cfg.maxconn = 2;
    let relay = Relay::start(cfg);
    let n = 12;
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut s = connect(relay.addr);
        s.write_all(b"ping").expect("ping");
        clients.push(Client { s, state: Ping::Waiting });
    }
    let mut rounds = 0;
    while !clients.is_empty() {
        rounds += 1;
        assert!(rounds <= n, "stuck: {} clients never served", clients.len());
        let want = clients.len().min(2);
        assert!(wait_until(Duration::from_secs(3), || tally(&mut clients).0 >= want), "no progress");
        // Give a third one every chance to be served beyond maxconn.
        std::thread::sleep(Duration::from_millis(150));
        let (served, _, closed) = tally(&mut clients);
        assert_eq!(closed, 0);
        assert!(served <= 2, "{served} clients served at once with maxconn 2 over 2 threads (round {rounds})");
        assert!(relay.shared().active.load(std::sync::atomic::Ordering::SeqCst) <= 2);
        // The live ones leave.
        for c in clients.iter_mut().filter(|c| c.state == Ping::Served) {
            let _ = c.s.shutdown(std::net::Shutdown::Both);
        }
        clients.retain(|c| c.state != Ping::Served);
    }
    let t = relay.stop();
    assert_eq!(t.accepted, n as u64, "every client was served in the end");
    assert_eq!(server.served.load(std::sync::atomic::Ordering::SeqCst), n);
}

// ----- memory: backpressure, not buffering -----

const CONNS: usize = 50;
const BUFSIZE: usize = 64 * 1024;

/// Which side pushes and which one never reads.
#[derive(Debug, Clone, Copy)]
enum Push {
    /// Clients push; the server never reads.
    Up,
    /// The server pushes; clients never read.
    Down,
}

/// Writes 64 KiB chunks to every socket until none takes more for
/// 500 ms (at most 6 s); returns the bytes written.
fn push_until_stalled(socks: &mut [TcpStream]) -> u64 {
    let chunk = vec![0x5au8; 64 * 1024];
    for s in socks.iter() {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let start = std::time::Instant::now();
    let mut last_progress = start;
    let mut total = 0u64;
    while last_progress.elapsed() < Duration::from_millis(500) {
        assert!(start.elapsed() < Duration::from_secs(6), "never stalled: {total} bytes pushed, no backpressure");
        for s in socks.iter_mut() {
            loop {
                match s.write(&chunk) {
                    Ok(n) => {
                        total += n as u64;
                        last_progress = std::time::Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("push: {e}"),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    total
}

/// Reads and splices the relay made so far, from its stats page.
fn relay_reads(stats: std::net::SocketAddr) -> u64 {
    let page = fetch_stats(stats);
    stat(&page, "syscalls_read").expect("syscalls_read") + stat(&page, "syscalls_splice").expect("syscalls_splice")
}

/// CONNS connections, one side pushing as fast as it can, the other never
/// reading. The relay's RSS must stay under
/// `rss at start + CONNS × 2 × bufsize + 4 MiB`: at most one buffer per
/// direction per connection (a pipe instead when splicing, which is kernel
/// memory, not RSS), plus slack for the allocator and per-connection
/// state. And it must stop reading (no read or splice calls while stalled)
/// and sleep (no CPU).
fn bounded_memory(push: Push, splice: &str) {
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hold = release.clone();
    // Connections the server side pushes into (Push::Down), or holds unread.
    let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
    let tx = std::sync::Mutex::new(tx);
    let server = Backend::spawn(v4(), move |s| {
        let _ = tx.lock().expect("tx").send(s);
        while !hold.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let s = server.addr.to_string();
    let bufsize = BUFSIZE.to_string();
    let p = Proc::spawn(&[
        "relay",
        "--listen",
        L,
        "--server",
        &s,
        "--bufsize",
        &bufsize,
        "--splice",
        splice,
        "--stats",
        "0",
    ]);
    let (addrs, stats) = p.wait_listening();
    let stats = stats.expect("stats address");
    let mut clients: Vec<TcpStream> = (0..CONNS).map(|_| connect(addrs[0])).collect();
    let mut servers: Vec<TcpStream> = (0..CONNS)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("the relay connects to the server"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = rss_kib(p.pid()).expect("VmRSS");

    let pushed = match push {
        Push::Up => push_until_stalled(&mut clients),
        Push::Down => push_until_stalled(&mut servers),
    };
    // The writers stalled; on a loaded machine the relay may still be
    // reading what was already in its sockets. Stalled means its count of
    // reads stops moving (for 300 ms, within 5 s); a relay that keeps
    // reading never gets there and fails here.
    let mut reads0 = relay_reads(stats);
    let settle = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = relay_reads(stats);
        if now == reads0 {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(5),
            "the relay kept reading for 5 s after its consumer stalled ({push:?}, splice {splice})"
        );
        reads0 = now;
    }
    let cpu0 = cpu_ticks(p.pid()).expect("cpu");
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_ticks(p.pid()).expect("cpu") - cpu0;
    let reads = relay_reads(stats) - reads0;
    let rss = rss_kib(p.pid()).expect("VmRSS");
    let bound = rss0 + (CONNS * 2 * BUFSIZE / 1024) as u64 + 4096;
    println!(
        "{push:?} splice={splice}: pushed {} MiB in all ({} KiB per connection); RSS {rss0} KiB → {rss} KiB \
         (bound {bound} KiB); {reads} reads/splices and {cpu} CPU ticks over 1 s stalled",
        pushed >> 20,
        pushed / 1024 / CONNS as u64
    );
    assert!(rss <= bound, "RSS {rss} KiB over the bound {bound} KiB ({push:?}, splice {splice})");
    assert_eq!(reads, 0, "the relay keeps reading while its consumer is stalled ({push:?}, splice {splice})");
    assert!(cpu <= 5, "{cpu} CPU ticks in 1 s while stalled");
    assert!(!p.log_text().contains("not delivered"), "{}", p.log_text());
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(clients);
    drop(servers);
}

#[test]
fn memory_is_bounded_by_backpressure_without_splice() {
    bounded_memory(Push::Up, "never");
    bounded_memory(Push::Down, "never");
}

#[test]
#[cfg(target_os = "linux")]
fn memory_is_bounded_by_backpressure_with_splice() {
    bounded_memory(Push::Up, "always");
    bounded_memory(Push::Down, "always");
}

// ----- a timeout for every phase -----
//
// Connect, client idle and server idle: relay/tests/relay_timeouts.rs. The
// grace period: cli/tests/relay_cli.rs. Stats clients: cli/tests/relay_security.rs.
// Here: half-closed connections, a stalled transfer, health checks.

const T: Duration = Duration::from_millis(600);

fn assert_fired(what: &str, took: Duration) {
    assert!(took >= T.mul_f64(0.95), "{what} fired early: after {took:?}, timeout {T:?}");
    assert!(took <= T * 3 + Duration::from_secs(1), "{what} fired late: after {took:?}, timeout {T:?}");
    println!("{what}: closed after {took:?} (timeout {T:?})");
}

/// The client sends, then half-closes and goes silent; the server, silent
/// too, keeps its side open: the idle timeouts still close both.
#[test]
fn a_half_closed_client_with_a_silent_server_times_out() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hold = done.clone();
    let server = Backend::spawn(v4(), move |mut s| {
        let _ = std::io::copy(&mut s, &mut std::io::sink());
        // EOF seen; hold the socket open, silent, until the test ends.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !hold.load(std::sync::atomic::Ordering::SeqCst) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(s);
    });
    let mut cfg = config(&[server.addr]);
    cfg.timeout_client = T;
    cfg.timeout_server = T;
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    c.write_all(b"request").expect("send");
    c.shutdown(std::net::Shutdown::Write).expect("half-close");
    let t0 = std::time::Instant::now();
    let (_, got) = read_until_closed(&mut c, T * 3 + Duration::from_secs(2)).expect("closed by a timeout");
    assert!(got.is_empty());
    assert_fired("half-closed client, silent server", t0.elapsed());
    let t = relay.totals_until(Duration::from_secs(2), |t| t.aborted >= 1);
    assert_eq!(t.aborted, 1, "counted as aborted");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The server answers, then half-closes and goes silent; the client got
/// the EOF but keeps its side open and says nothing: the idle timeouts
/// close the server side too (seen by the server).
#[test]
fn a_half_closed_server_with_a_silent_client_times_out() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = Backend::spawn(v4(), move |mut s| {
        let _ = s.write_all(b"hello");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let t0 = std::time::Instant::now();
        // Returns when the relay closes its side (EOF or reset).
        let _ = s.read(&mut [0u8; 1]);
        let _ = tx.lock().expect("tx").send(t0.elapsed());
    });
    let mut cfg = config(&[server.addr]);
    cfg.timeout_client = T;
    cfg.timeout_server = T;
    let relay = Relay::start(cfg);
    let mut c = connect(relay.addr);
    let mut got = [0u8; 5];
    c.read_exact(&mut got).expect("hello");
    let took = rx.recv_timeout(T * 3 + Duration::from_secs(2)).expect("the relay closes the server side");
    assert_fired("half-closed server, silent client", took);
    drop(c);
}

/// A transfer stalled by a client that stops reading (every buffer full):
/// nothing moves, so the client timeout ends it and the loss is counted.
#[test]
fn a_stalled_transfer_times_out() {
    let server = Backend::spawn(v4(), |mut s| {
        let chunk = vec![0x11u8; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
    });
    let mut cfg = config(&[server.addr]);
    cfg.timeout_client = T;
    cfg.timeout_server = Duration::from_secs(30);
    let relay = Relay::start(cfg);
    let t0 = std::time::Instant::now();
    let c = connect(relay.addr);
    let active = || relay.shared().active.load(std::sync::atomic::Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(2), || active() == 1), "the stream starts");
    assert!(
        wait_until(T * 3 + Duration::from_secs(2), || active() == 0),
        "the stalled transfer is still open after {:?}",
        t0.elapsed()
    );
    // Stalled at once: the last byte moved right after the connect.
    assert_fired("stalled transfer", t0.elapsed());
    let t = relay.totals_until(Duration::from_secs(2), |t| t.aborted >= 1);
    assert_eq!(t.aborted, 1, "counted as aborted");
    drop(c);
}

/// An HTTP check to a server that accepts and never answers times out;
/// the server goes down, and no check connection is left open.
#[test]
fn a_health_check_that_gets_no_answer_times_out() {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let count = open.clone();
    let server = Backend::spawn(v4(), move |mut s| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Read the request and everything after, answer nothing.
        let _ = std::io::copy(&mut s, &mut std::io::sink());
        count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    });
    let mut cfg = config(&[server.addr]);
    cfg.check = anypoll_relay::config::CheckKind::Http("/health".into());
    cfg.check_interval = Duration::from_millis(300);
    cfg.fall = 2;
    let relay = Relay::start(cfg);
    let t0 = std::time::Instant::now();
    assert!(wait_until(Duration::from_secs(4), || !relay.server_up(0)), "the silent server is still up");
    println!("silent server down after {:?} (interval 300 ms, check timeout 300 ms, fall 2)", t0.elapsed());
    assert!(t0.elapsed() >= Duration::from_millis(500), "down after {:?}: before two timeouts", t0.elapsed());
    let failed = relay.shared().servers[0].failed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(failed >= 2, "{failed} checks failed");
    // Each timed-out check was closed: at most the current one is open.
    std::thread::sleep(Duration::from_millis(100));
    let n = open.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n <= 1, "{n} check connections left open");
}
