//! Exhaustion: the relay binary out of fds (EMFILE pauses accepting, logs
//! once, does not spin, and recovers), maxconn over two threads, memory
//! bounded by backpressure, and a timeout for every phase that had none
//! tested elsewhere.
//!
//! Everything is on loopback; every load is bounded in count and time.

mod relay_common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use relay_common::*;

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
    std::thread::sleep(Duration::from_millis(300));
    let t = tally(&mut clients);
    println!("limit {limit}: served {}, waiting {}, closed {}", t.0, t.1, t.2);

    // Stuck: no spin, and the warning is not repeated.
    let lines = p.log.lock().expect("log").len();
    let c0 = cpu_ticks(p.pid()).expect("cpu ticks");
    std::thread::sleep(Duration::from_secs(1));
    let c1 = cpu_ticks(p.pid()).expect("cpu ticks");
    let t2 = tally(&mut clients);
    println!("limit {limit}: {} CPU ticks over 1 s while out of fds", c1 - c0);
    assert!(c1 - c0 <= 5, "the relay spins while out of fds: {} ticks in 1 s", c1 - c0);
    assert_eq!(p.count_lines("pausing accepts"), 1, "one warning per episode: {}", p.log_text());
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
    assert_eq!(p.count_lines("pausing accepts"), 1, "{}", p.log_text());
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
