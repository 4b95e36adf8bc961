//! The select backend's fd limit (FD_SETSIZE) as a capacity: 2,000
//! concurrent clients through `anypoll relay --poller select`, more than
//! select can watch at once. The relay lowers its maxconn to what fits,
//! leaves the other clients queued in the kernel's backlog, and serves
//! them as connections close: every byte of every client comes back, none
//! is accepted and then dropped.
//!
//! Everything is on loopback (port 0); the run is bounded in time. Linux
//! only: it reads the relay's fds in `/proc`.

#![cfg(target_os = "linux")]

#[path = "../../relay/tests/relay_common/mod.rs"]
mod relay_common;
mod relay_proc;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use relay_common::*;
use relay_proc::*;

const CLIENTS: usize = 2000;
/// Bytes each client sends (a multiple of 8, for [`Gen`]).
const PAYLOAD: usize = 1024;
/// fds this test needs: its clients, the echo server's side of each, and
/// the relay (a child, which inherits the limit) beyond select's 1024.
const FDS_NEEDED: libc::rlim_t = 2 * CLIENTS as libc::rlim_t + 1024;

/// Raises RLIMIT_NOFILE's soft limit to `want` if the hard one allows it;
/// `Err` (the reason to skip) otherwise.
fn raise_nofile(want: libc::rlim_t) -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the rlimit we pass, a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    if lim.rlim_max < want {
        return Err(format!("RLIMIT_NOFILE hard limit {} is below the {want} fds this test needs", lim.rlim_max));
    }
    if lim.rlim_cur < want {
        lim.rlim_cur = want;
        // SAFETY: setrlimit reads the rlimit we pass, a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(format!("setrlimit: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// One client: what it sent, and what came back so far.
struct Client {
    s: TcpStream,
    sent: Vec<u8>,
    got: Vec<u8>,
    /// Closed by the relay before its whole echo came back.
    closed: bool,
}

impl Client {
    /// The server's id byte, then the echo.
    fn done(&self) -> bool {
        self.got.len() == 1 + self.sent.len()
    }

    /// Reads what is there without blocking.
    fn poll(&mut self) {
        let mut b = [0u8; 4096];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return self.closed = true,
                Ok(n) => self.got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.closed = true,
            }
        }
    }
}

/// The default settings (one thread, splice on: 4 fds counted per
/// connection).
#[test]
fn two_thousand_clients_on_select_all_get_every_byte() {
    through_select(&[]);
}

/// Two threads share the process's fd numbers (and the maxconn); without
/// splice a connection is counted as 2 fds, so the relay runs closer to
/// the limit.
#[test]
fn two_thousand_clients_on_select_over_two_threads_without_splice() {
    through_select(&["--threads", "2", "--no-splice"]);
}

/// 2,000 clients through `anypoll relay --poller select ARGS`.
fn through_select(extra: &[&str]) {
    if let Err(why) = raise_nofile(FDS_NEEDED) {
        println!("SKIPPED: {why}");
        return;
    }
    let server = EchoServer::start(9, v4());
    let s = server.addr().to_string();
    let mut args = vec!["relay", "--listen", "127.0.0.1:0", "--server", &s, "--poller", "select"];
    args.extend_from_slice(extra);
    let p = Proc::spawn_with(&args, |cmd| {
        cmd.env("RUST_LOG", format!("{ROUTINE_LOG},anypoll_relay=info"));
    });
    let (addrs, _) = p.wait_listening();
    let addr = addrs[0];

    // All of them at once: connected and their data sent before any echo
    // is read. Those the relay cannot take yet wait in the backlog.
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut s = connect(addr);
        let mut sent = vec![0u8; PAYLOAD];
        Gen::new(i as u64 + 1).fill(&mut sent);
        s.write_all(&sent).expect("send");
        s.set_nonblocking(true).expect("nonblocking");
        clients.push(Client { s, sent, got: Vec::new(), closed: false });
    }
    // No client leaves before the relay took all it would: it lags behind
    // the connects, and a client that left early would make room.
    let fds = || open_fds_below(p.pid(), u64::MAX).expect("/proc/PID/fd");
    let (mut last, mut stable) = (fds(), 0);
    let end = Instant::now() + Duration::from_secs(10);
    while stable < 6 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        let now = fds();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    println!("relay fds open with every client connected: {last}");
    // A client whose echo is complete leaves, freeing room for the next.
    let end = Instant::now() + Duration::from_secs(60);
    let mut left = CLIENTS;
    while left > 0 && Instant::now() < end {
        let before = left;
        for c in clients.iter_mut().filter(|c| !c.done() && !c.closed) {
            c.poll();
            if c.done() {
                let _ = c.s.shutdown(std::net::Shutdown::Both);
            }
        }
        left = clients.iter().filter(|c| !c.done() && !c.closed).count();
        if left == before {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let done = clients.iter().filter(|c| c.done()).count();
    let closed = clients.iter().filter(|c| c.closed && !c.done()).count();
    let dropped = p.count_lines("cannot register");
    println!("{extra:?}: {CLIENTS} clients: {done} served in full, {closed} closed early, {left} still waiting; {dropped} 'cannot register' warnings");
    assert_eq!(dropped, 0, "clients were accepted, then dropped: {}", tail(&p));
    assert_eq!(closed, 0, "clients closed before their echo: {}", tail(&p));
    assert_eq!(done, CLIENTS, "not every client was served within 60 s: {}", tail(&p));
    // Logged at start, before "listening on".
    assert_eq!(p.count_lines("lowered to"), 1, "the relay logs the maxconn select allows: {}", tail(&p));
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.got[0], server.id, "client {i}: the server's id byte");
        assert!(c.got[1..] == c.sent[..], "client {i}: the echo differs from what was sent");
    }
    // Waiting for room is one episode per stall, never one line per client.
    let pauses = p.count_lines("pausing accepts");
    assert!(pauses < 50, "{pauses} pause warnings for {CLIENTS} clients: {}", tail(&p));
    println!("log:\n{}", tail(&p));
}

/// The first lines of the relay's log (it may hold thousands).
fn tail(p: &Proc) -> String {
    p.log.lock().expect("log").iter().take(20).cloned().collect::<Vec<_>>().join("\n")
}
