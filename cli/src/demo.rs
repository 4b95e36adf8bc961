//! `anypoll demo`: the relay on real traffic, on every available backend,
//! with nothing outside the process.
//!
//! The demo starts three backend servers in threads of its own (an echo
//! server that also answers `GET /health`), then, for each available poller
//! and each splice setting (`auto`, `never`), a relay in front of them with
//! HTTP health checks every 100 ms (rise 2, fall 2). Each row runs:
//!
//! 1. **ping-pong**: `--clients` connections, each doing request/response
//!    round trips (16–1024 bytes, a new deterministic payload each time) for
//!    `--ping-seconds`; every reply's checksum is compared with the request's.
//!    The relay's syscall counters are read just before and just after, so
//!    "syscalls/req" covers this part only.
//! 2. **bulk**: two connections that each send `--bulk-mib / 2` MiB of a
//!    deterministic stream through the relay to the echo server and read it
//!    back at the same time; the checksum and the byte count of what came
//!    back must match what went out. "MiB/s" is bytes each way over the time
//!    of this part.
//! 3. **health** (on the first row of each backend, splice `auto`): one
//!    server is killed (its listener closed, so connects are refused). The
//!    relay must mark it DOWN within 5 s, new connections must still go
//!    through the other two, then the server is restarted on the same port
//!    and the relay must mark it UP within 5 s and send it traffic again. On
//!    the `never` rows the column says `n/a`: the checks go through the same
//!    poller code whatever the splice setting.
//!
//! "checks" counts the checks of the row that passed: the ping-pong
//! checksums, the bulk checksums, the two health transitions (when
//! exercised), and a clean relay (no aborted stream, a clean stop). A row
//! with a failed check prints `FAIL` and the reason; the demo then exits
//! with status 1. Progress goes to stderr, the table to stdout.
//!
//! The checksum is FNV-1a taken over 64-bit little-endian words (the tail
//! zero-padded, the length mixed in last): any change to one word always
//! changes it, and it is fast enough not to slow the clients down.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anypoll_backends::registry;

use anypoll::stream::SpliceMode;
use anypoll_relay::config::{CheckKind, RelayConfig};
use anypoll_relay::{self as relay, RelayHandle, WorkerStats};

/// Options of `anypoll demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// A short run (CI): 0.25 s of ping-pong and 4 MiB of bulk per row.
    #[arg(long)]
    pub quick: bool,
    /// Seconds of ping-pong per row [default: 1, or 0.25 with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub ping_seconds: Option<f64>,
    /// Ping-pong clients, one connection each.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// MiB sent each way per row in the bulk part, over two connections [default: 32, or 4 with --quick].
    #[arg(long, value_name = "MIB")]
    pub bulk_mib: Option<u64>,
}

impl DemoArgs {
    fn ping_time(&self) -> Duration {
        let s = self.ping_seconds.unwrap_or(if self.quick { 0.25 } else { 1.0 });
        Duration::from_secs_f64(s.clamp(0.01, 30.0))
    }

    fn bulk_bytes(&self) -> u64 {
        let mib = self.bulk_mib.unwrap_or(if self.quick { 4 } else { 32 }).clamp(1, 4096);
        mib << 20
    }
}

/// Longest wait for any socket operation of a client or a server.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the relay to mark a server DOWN or UP.
const CONVERGE: Duration = Duration::from_secs(5);
/// Ping-pong payloads are 16 to this many bytes.
const MAX_MSG: usize = 1024;
/// Bulk connections per row.
const BULK_CONNS: u64 = 2;
/// Servers behind the relay.
const SERVERS: usize = 3;
/// The server the health-check part kills.
const VICTIM: usize = 1;
/// Connections that check the traffic while the victim is down, then up.
const PROBES: u64 = 6;

// ----- checksum and payloads -----

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

/// FNV-1a over 64-bit little-endian words; fed in any slicing, it gives
/// the same value for the same bytes.
#[derive(Debug, Clone, Copy)]
struct Checksum {
    h: u64,
    tail: [u8; 8],
    tail_len: usize,
    len: u64,
}

impl Checksum {
    fn new() -> Checksum {
        Checksum { h: FNV_OFFSET, tail: [0; 8], tail_len: 0, len: 0 }
    }

    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(FNV_PRIME);
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail_len > 0 {
            let n = (8 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
            self.tail_len += n;
            data = &data[n..];
            if self.tail_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    fn finish(&self) -> u64 {
        let mut c = *self;
        if c.tail_len > 0 {
            c.tail[c.tail_len..].fill(0);
            c.mix(u64::from_le_bytes(c.tail));
        }
        c.mix(c.len);
        c.h
    }
}

fn checksum(data: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(data);
    c.finish()
}

/// A deterministic byte stream (splitmix64), different for each seed.
#[derive(Debug, Clone)]
struct Pattern {
    state: u64,
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        Pattern { state: seed.wrapping_mul(0x2545_f491_4f6c_dd1d) }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next_word().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

// ----- the backend servers -----

/// An echo server in threads: one accepting, one per connection. A
/// connection whose first byte is `G` is taken as an HTTP health check and
/// answered `200 OK`. Dropping it (or [`Server::kill`]) closes the listener,
/// so connects are refused; live connections finish on their own.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` (port 0 for any) and serves. `served` counts the
    /// data (non-check) connections.
    fn start(addr: SocketAddr, served: Arc<AtomicU64>) -> io::Result<Server> {
        // std sets SO_REUSEADDR on Unix, so a restart on the same port works
        // despite the connections left in TIME_WAIT.
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::Builder::new().name(format!("demo-server-{}", addr.port())).spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                match conn {
                    Ok(sock) => {
                        let served = served.clone();
                        let spawned =
                            std::thread::Builder::new().name("demo-conn".into()).spawn(move || serve(sock, &served));
                        if spawned.is_err() {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    // EMFILE and the like: do not spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;
        Ok(Server { addr, stop, acceptor: Some(acceptor) })
    }

    /// Closes the listener: from now on, connects are refused.
    fn kill(&mut self) {
        if let Some(t) = self.acceptor.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocked accept so the thread sees the flag.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(mut sock: TcpStream, served: &AtomicU64) {
    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
    let _ = sock.set_write_timeout(Some(IO_TIMEOUT));
    let _ = sock.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = match sock.read(&mut buf) {
        Ok(n) if n > 0 => n,
        _ => return,
    };
    if buf[0] == b'G' {
        // A health check: read the whole request so that closing does not
        // reset, answer, then wait for the checker to close.
        let mut req = buf[..n].to_vec();
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => req.extend_from_slice(&buf[..k]),
            }
        }
        let _ = sock.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = sock.shutdown(Shutdown::Write);
        while matches!(sock.read(&mut buf), Ok(k) if k > 0) {}
        return;
    }
    served.fetch_add(1, Ordering::Relaxed);
    loop {
        if sock.write_all(&buf[..n]).is_err() {
            return;
        }
        n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// The servers, with a counter of data connections each.
struct Farm {
    addrs: Vec<SocketAddr>,
    servers: Vec<Option<Server>>,
    served: Vec<Arc<AtomicU64>>,
}

impl Farm {
    fn start(n: usize) -> io::Result<Farm> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut farm = Farm { addrs: Vec::new(), servers: Vec::new(), served: Vec::new() };
        for _ in 0..n {
            let served = Arc::new(AtomicU64::new(0));
            let s = Server::start(any, served.clone())?;
            farm.addrs.push(s.addr);
            farm.servers.push(Some(s));
            farm.served.push(served);
        }
        Ok(farm)
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.servers[i].take() {
            s.kill();
        }
    }

    fn restart(&mut self, i: usize) -> io::Result<()> {
        if self.servers[i].is_none() {
            self.servers[i] = Some(Server::start(self.addrs[i], self.served[i].clone())?);
        }
        Ok(())
    }
}

// ----- clients -----

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect to the relay: {e}"))?;
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Closes our side and expects the relay to close its side with nothing
/// more to read: the half-close went through both ways.
fn finish_client(mut s: TcpStream) -> Result<(), String> {
    s.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    let mut extra = [0u8; 64];
    match s.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{n} unexpected byte(s) after the last reply")),
        Err(e) => Err(format!("waiting for the relay to close: {e}")),
    }
}

/// Round trips until `deadline` or `max` of them; returns how many, each
/// one's reply checked.
fn ping_client(relay: SocketAddr, seed: u64, deadline: Instant, max: u64) -> Result<u64, String> {
    let mut s = connect(relay)?;
    let mut pat = Pattern::new(seed);
    let mut msg = vec![0u8; MAX_MSG];
    let mut reply = vec![0u8; MAX_MSG];
    let mut n = 0u64;
    while n < max && (n == 0 || Instant::now() < deadline) {
        let len = 16 + (pat.next_word() % (MAX_MSG as u64 - 15)) as usize;
        pat.fill(&mut msg[..len]);
        // Never `G`: that would be a health check to the server.
        msg[0] = b'P';
        let want = checksum(&msg[..len]);
        s.write_all(&msg[..len]).map_err(|e| format!("request {n}: sending: {e}"))?;
        s.read_exact(&mut reply[..len]).map_err(|e| format!("request {n}: reading the reply: {e}"))?;
        if checksum(&reply[..len]) != want {
            return Err(format!("request {n}: reply checksum mismatch ({len} bytes)"));
        }
        n += 1;
    }
    finish_client(s)?;
    Ok(n)
}

/// Sends `bytes` of a deterministic stream and reads the echo at the same
/// time; both checksums and the count must match.
fn bulk_client(relay: SocketAddr, seed: u64, bytes: u64) -> Result<(), String> {
    let mut s = connect(relay)?;
    let mut w = s.try_clone().map_err(|e| format!("clone: {e}"))?;
    let writer = std::thread::Builder::new()
        .name("demo-bulk-writer".into())
        .spawn(move || -> Result<u64, String> {
            let mut pat = Pattern::new(seed);
            let mut buf = vec![0u8; 64 * 1024];
            let mut sum = Checksum::new();
            let mut left = bytes;
            let mut first = true;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                pat.fill(&mut buf[..n]);
                if first {
                    buf[0] = b'B';
                    first = false;
                }
                sum.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(|e| format!("sending: {e}"))?;
                left -= n as u64;
            }
            w.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
            Ok(sum.finish())
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sum = Checksum::new();
    let mut got = 0u64;
    let read = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                sum.update(&buf[..n]);
                got += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(format!("reading after {got} bytes: {e}")),
        }
    };
    if read.is_err() {
        // Unblock the writer if it is stuck.
        let _ = s.shutdown(Shutdown::Both);
    }
    let sent = writer.join().map_err(|_| "the writer panicked".to_string())??;
    read?;
    if got != bytes {
        return Err(format!("{got} bytes came back of {bytes}"));
    }
    if sum.finish() != sent {
        return Err(format!("checksum mismatch over {bytes} bytes"));
    }
    Ok(())
}

// ----- one row -----

/// One backend × splice setting.
#[derive(Debug, Default)]
struct Row {
    backend: &'static str,
    splice: &'static str,
    requests: u64,
    req_per_s: f64,
    mib_per_s: f64,
    syscalls_per_req: f64,
    eagain: u64,
    splice_fallbacks: u64,
    /// Time to DOWN and to UP again, when exercised.
    health: Option<(Option<Duration>, Option<Duration>)>,
    checks: u32,
    passed: u32,
    failures: Vec<String>,
}

impl Row {
    fn check(&mut self, what: &str, r: Result<(), String>) -> bool {
        self.checks += 1;
        match r {
            Ok(()) => {
                self.passed += 1;
                true
            }
            Err(e) => {
                self.failures.push(format!("{what}: {e}"));
                false
            }
        }
    }
}

/// Progress lines, timed from the start of the demo.
struct Progress {
    start: Instant,
}

impl Progress {
    fn say(&self, what: &str) {
        // One write per line, so lines from the relay's log do not cut it.
        let line = format!("[{:6.2}s] {what}\n", self.start.elapsed().as_secs_f64());
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// Fresh totals: a request to the stats endpoint makes the relay publish
/// its counters right before it answers.
fn snapshot(h: &RelayHandle) -> Result<WorkerStats, String> {
    let addr = (*h.shared.stats_bound.lock().map_err(|_| "stats lock")?).ok_or("the relay has no stats address")?;
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("stats: {e}"))?;
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let mut page = String::new();
    s.read_to_string(&mut page).map_err(|e| format!("stats: {e}"))?;
    Ok(h.shared.totals())
}

fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Settings of one row.
struct Plan {
    ping: Duration,
    clients: usize,
    bulk: u64,
    health: bool,
}

fn relay_config(farm: &Farm, backend: &str, splice: SpliceMode) -> RelayConfig {
    RelayConfig {
        listen: vec![([127, 0, 0, 1], 0).into()],
        servers: farm.addrs.clone(),
        poller: Some(backend.to_string()),
        splice,
        timeout_connect: Duration::from_secs(2),
        timeout_client: IO_TIMEOUT,
        timeout_server: IO_TIMEOUT,
        threads: 1,
        check: CheckKind::Http("/health".into()),
        check_interval: Duration::from_millis(100),
        rise: 2,
        fall: 2,
        stats: Some(([127, 0, 0, 1], 0).into()),
        grace: Duration::from_secs(2),
        ..RelayConfig::default()
    }
}

fn run_row(
    farm: &mut Farm,
    backend: &'static str,
    splice: SpliceMode,
    plan: &Plan,
    seed: u64,
    progress: &Progress,
) -> Row {
    let splice_name = match splice {
        SpliceMode::Auto => "auto",
        SpliceMode::Always => "always",
        SpliceMode::Never => "never",
    };
    let mut row = Row { backend, splice: splice_name, ..Row::default() };
    let tag = format!("{backend}/splice={splice_name}");
    let handle = match relay::start(relay_config(farm, backend, splice), false) {
        Ok(h) => h,
        Err(e) => {
            row.check("relay start", Err(e.to_string()));
            return row;
        }
    };
    let shared = handle.shared.clone();
    let relay_addr = shared.bound.lock().map(|b| b[0]).unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
    progress.say(&format!("{tag}: relay on {relay_addr} → {} servers", farm.addrs.len()));

    // 1. ping-pong
    let before = snapshot(&handle);
    let start = Instant::now();
    let deadline = start + plan.ping;
    let clients: Vec<_> = (0..plan.clients.max(1) as u64)
        .map(|i| std::thread::spawn(move || ping_client(relay_addr, seed ^ (i << 32), deadline, u64::MAX)))
        .collect();
    let mut result = Ok(());
    for c in clients {
        match c.join().unwrap_or_else(|_| Err("a client panicked".into())) {
            Ok(n) => row.requests += n,
            Err(e) => result = result.and(Err(e)),
        }
    }
    let elapsed = start.elapsed();
    let after = snapshot(&handle);
    row.req_per_s = row.requests as f64 / elapsed.as_secs_f64().max(1e-9);
    if let (Ok(b), Ok(a)) = (&before, &after) {
        let d = a.counters.since(&b.counters);
        row.syscalls_per_req = d.syscalls() as f64 / row.requests.max(1) as f64;
    }
    let ok = row.check("ping-pong", result);
    progress.say(&format!(
        "{tag}: ping-pong: {} clients, {} round trips in {:.2}s: {}",
        plan.clients,
        row.requests,
        elapsed.as_secs_f64(),
        if ok { "every reply's checksum OK" } else { "FAILED" }
    ));

    // 2. bulk
    let per_conn = (plan.bulk / BULK_CONNS).max(8);
    let start = Instant::now();
    let clients: Vec<_> = (0..BULK_CONNS)
        .map(|i| std::thread::spawn(move || bulk_client(relay_addr, seed ^ 0xb01c ^ (i << 40), per_conn)))
        .collect();
    let mut result = Ok(());
    for c in clients {
        result = result.and(c.join().unwrap_or_else(|_| Err("a client panicked".into())));
    }
    let elapsed = start.elapsed();
    row.mib_per_s = (per_conn * BULK_CONNS) as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9);
    let ok = row.check("bulk", result);
    progress.say(&format!(
        "{tag}: bulk: {BULK_CONNS} × {} each way in {:.2}s: {}",
        size(per_conn),
        elapsed.as_secs_f64(),
        if ok { "checksums and byte counts OK" } else { "FAILED" }
    ));

    // 3. health checks: kill one server, see it go DOWN and come back UP
    if plan.health {
        let victim = farm.addrs[VICTIM];
        let served = farm.served[VICTIM].clone();
        farm.kill(VICTIM);
        let down = wait_until(CONVERGE, || !shared.servers[VICTIM].up.load(Ordering::Relaxed));
        let mut through = Ok(());
        if down.is_some() {
            for i in 0..PROBES {
                through = through.and(ping_client(relay_addr, seed ^ 0xdead ^ i, Instant::now(), 1).map(|_| ()));
            }
        }
        let ok = row.check(
            "health DOWN",
            match down {
                Some(_) => through.map_err(|e| format!("traffic while {victim} is down: {e}")),
                None => Err(format!("{victim} killed but not marked DOWN within {CONVERGE:?}")),
            },
        );
        progress.say(&format!(
            "{tag}: health: killed server {victim}: {}",
            match down {
                Some(d) if ok => format!(
                    "marked DOWN after {} ms; {PROBES}/{PROBES} new connections OK through the others",
                    d.as_millis()
                ),
                Some(d) => format!("marked DOWN after {} ms, but the traffic check FAILED", d.as_millis()),
                None => format!("NOT marked DOWN within {CONVERGE:?}"),
            }
        ));
        let up = match farm.restart(VICTIM) {
            Ok(()) => wait_until(CONVERGE, || shared.servers[VICTIM].up.load(Ordering::Relaxed))
                .ok_or(format!("{victim} restarted but not marked UP within {CONVERGE:?}")),
            Err(e) => Err(format!("restarting {victim}: {e}")),
        };
        let mut up_result = up.clone().map(|_| ());
        if up_result.is_ok() {
            let before = served.load(Ordering::Relaxed);
            for i in 0..PROBES {
                up_result = up_result.and(ping_client(relay_addr, seed ^ 0xa11e ^ i, Instant::now(), 1).map(|_| ()));
            }
            if up_result.is_ok() && served.load(Ordering::Relaxed) == before {
                up_result = Err(format!("{victim} is UP but got none of {PROBES} new connections"));
            }
        }
        let ok = row.check("health UP", up_result);
        progress.say(&format!(
            "{tag}: health: restarted server {victim}: {}",
            match up {
                Ok(d) if ok => format!("marked UP after {} ms and takes connections again", d.as_millis()),
                Ok(d) => format!("marked UP after {} ms, but the traffic check FAILED", d.as_millis()),
                Err(_) => "NOT marked UP".to_string(),
            }
        ));
        row.health = Some((down, up.ok()));
    }

    // 4. stop; the relay must have aborted nothing and stop cleanly
    let last = snapshot(&handle);
    handle.stop();
    let joined = handle.join();
    let totals = shared.totals();
    row.eagain = totals.counters.eagain;
    row.splice_fallbacks = totals.counters.splice_fallbacks;
    let clean = match (joined, before.and(after).and(last)) {
        (Err(e), _) => Err(format!("the relay stopped with an error: {e}")),
        (_, Err(e)) => Err(e),
        _ if totals.aborted > 0 => Err(format!("{} stream(s) aborted", totals.aborted)),
        _ if totals.no_server > 0 => Err(format!("{} client(s) found no server up", totals.no_server)),
        _ => Ok(()),
    };
    row.check("relay", clean);
    row
}

/// `32 MiB`, `256 KiB`, `100 B`.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn fmt_health(h: &Option<(Option<Duration>, Option<Duration>)>) -> String {
    let ms = |d: &Option<Duration>| d.map(|d| format!("{}ms", d.as_millis())).unwrap_or_else(|| "never".into());
    match h {
        None => "n/a".to_string(),
        Some((down, up)) => format!("DOWN {} UP {}", ms(down), ms(up)),
    }
}

/// Runs the demo; with `--poller` (or `ANYPOLL_POLLER`), on that backend only.
pub fn run(args: &DemoArgs, poller: Option<&str>) -> ExitCode {
    let progress = Progress { start: Instant::now() };
    let env = std::env::var(registry::ENV).ok().filter(|v| !v.is_empty());
    let named = poller.map(|n| (n.to_string(), registry::Source::Flag)).or(env.map(|n| (n, registry::Source::Env)));
    let chosen: Vec<&'static str> = match named {
        Some((name, source)) => match registry::create(&name, source) {
            Ok(_) => registry::backends().iter().filter(|b| b.name == name).map(|b| b.name).collect(),
            Err(e) => {
                eprintln!("anypoll: {e}");
                return ExitCode::from(2);
            }
        },
        None => registry::available().iter().map(|b| b.name).collect(),
    };
    let plan = Plan { ping: args.ping_time(), clients: args.clients.max(1), bulk: args.bulk_bytes(), health: false };
    let splices: &[SpliceMode] =
        if SpliceMode::PLATFORM_HAS_SPLICE { &[SpliceMode::Auto, SpliceMode::Never] } else { &[SpliceMode::Never] };
    println!(
        "anypoll demo: relay → {SERVERS} in-process echo servers, per backend × splice: {:.2} s of ping-pong ({} clients), \
         {} MiB each way of bulk, every byte checksummed; health checks every 100 ms (kill one server, see it go DOWN and UP)",
        plan.ping.as_secs_f64(),
        plan.clients,
        plan.bulk >> 20
    );
    let mut farm = match Farm::start(SERVERS) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("anypoll demo: cannot start the servers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<String> = farm.addrs.iter().map(|a| a.to_string()).collect();
    progress.say(&format!("servers on {}; backends: {}", names.join(", "), chosen.join(", ")));
    let mut rows = Vec::new();
    for (b, backend) in chosen.iter().enumerate() {
        for (s, &splice) in splices.iter().enumerate() {
            let plan = Plan { health: s == 0, ..plan };
            let seed = ((b as u64) << 8 | s as u64).wrapping_mul(0x9e37_79b9) ^ 0x5eed;
            rows.push(run_row(&mut farm, backend, splice, &plan, seed, &progress));
        }
    }
    // At least 8 wide, as always; wider for a model's name (`kqueue-model`).
    let width = rows.iter().map(|r| r.backend.len()).max().unwrap_or(0).max(8);
    println!(
        "{:<width$} {:<6} {:>9} {:>8} {:>13} {:>8} {:>16} {:<22} {:>6}  result",
        "backend", "splice", "req/s", "MiB/s", "syscalls/req", "EAGAINs", "splice fallbacks", "health check", "checks"
    );
    let mut failed = false;
    for r in &rows {
        let result = if r.failures.is_empty() {
            "ok".to_string()
        } else {
            failed = true;
            format!("FAIL: {}", r.failures.join("; "))
        };
        println!(
            "{:<width$} {:<6} {:>9.0} {:>8.1} {:>13.2} {:>8} {:>16} {:<22} {:>6}  {}",
            r.backend,
            r.splice,
            r.req_per_s,
            r.mib_per_s,
            r.syscalls_per_req,
            r.eagain,
            r.splice_fallbacks,
            fmt_health(&r.health),
            format!("{}/{}", r.passed, r.checks),
            result
        );
    }
    println!(
        "req/s, syscalls/req: ping-pong part (relay's own counters); MiB/s: bulk, each way; EAGAINs, splice fallbacks: whole row; \
         health check: time for the relay to mark the killed server DOWN, then the restarted one UP (n/a: exercised on the splice=auto row)"
    );
    let secs = progress.start.elapsed().as_secs_f64();
    if failed {
        println!("FAIL after {secs:.1} s");
        ExitCode::FAILURE
    } else {
        println!("all {} rows OK in {secs:.1} s", rows.len());
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_does_not_depend_on_slicing() {
        let mut data = vec![0u8; 1000];
        Pattern::new(7).fill(&mut data);
        let whole = checksum(&data);
        for step in [1, 3, 7, 8, 13, 64, 999] {
            let mut c = Checksum::new();
            for chunk in data.chunks(step) {
                c.update(chunk);
            }
            assert_eq!(c.finish(), whole, "step {step}");
        }
        // One byte changed, a byte more, or a byte fewer: another checksum.
        let mut other = data.clone();
        other[500] ^= 1;
        assert_ne!(checksum(&other), whole);
        assert_ne!(checksum(&data[..999]), whole);
        let mut longer = data.clone();
        longer.push(0);
        assert_ne!(checksum(&longer), whole);
    }

    #[test]
    fn patterns_are_deterministic_and_differ_by_seed() {
        let (mut a, mut b, mut c) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        Pattern::new(1).fill(&mut a);
        Pattern::new(1).fill(&mut b);
        Pattern::new(2).fill(&mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn one_tiny_row_on_poll() {
        let mut farm = Farm::start(SERVERS).unwrap();
        let plan = Plan { ping: Duration::from_millis(50), clients: 2, bulk: 256 << 10, health: false };
        let progress = Progress { start: Instant::now() };
        let row = run_row(&mut farm, "poll", SpliceMode::Never, &plan, 42, &progress);
        assert!(row.failures.is_empty(), "{:?}", row.failures);
        assert!(row.requests > 0);
        assert_eq!(row.passed, row.checks);
    }
}
