//! Helpers for the relay integration tests (`relay/tests/relay_*.rs`, `cli/tests/relay_*.rs`): a relay
//! that stops when dropped, stoppable in-test servers, clients with bounded
//! waits, and a deterministic data stream with a checksum (the `anypoll`
//! binary run as a child process is in `cli/tests/relay_proc`).
//!
//! Everything is on loopback, every port comes from binding port 0, and
//! every wait is bounded in time.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anypoll_relay::config::RelayConfig;
use anypoll_relay::{self as relay, RelayHandle, Shared, WorkerStats};

/// Read/write timeout on every test socket: a hang becomes an error.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// 127.0.0.1, port 0.
pub fn v4() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// [::1], port 0.
pub fn v6() -> SocketAddr {
    "[::1]:0".parse().expect("addr")
}

/// `Err(reason)` when binding [::1] fails here.
pub fn ipv6_available() -> Result<(), String> {
    TcpListener::bind(v6()).map(drop).map_err(|e| format!("binding [::1]:0 failed: {e}"))
}

/// Polls `f` every 10 ms until it is true or `limit` passed.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ----- the relay, in process -----

/// A relay configuration listening on 127.0.0.1:0 with roomy timeouts and
/// a short grace (so a drop never waits long).
pub fn config(servers: &[SocketAddr]) -> RelayConfig {
    RelayConfig {
        listen: vec![v4()],
        servers: servers.to_vec(),
        timeout_connect: Duration::from_secs(5),
        timeout_client: Duration::from_secs(20),
        timeout_server: Duration::from_secs(20),
        grace: Duration::from_secs(1),
        ..RelayConfig::default()
    }
}

/// A running relay (signals off: tests run in threads of one process).
/// Dropping it stops it.
pub struct Relay {
    handle: Option<RelayHandle>,
    /// The first listening address, port resolved.
    pub addr: SocketAddr,
}

impl Relay {
    /// Starts the relay; panics if it cannot.
    pub fn start(cfg: RelayConfig) -> Relay {
        let handle = relay::start(cfg, false).expect("relay starts");
        let addr = handle.shared.bound.lock().expect("lock")[0];
        Relay { handle: Some(handle), addr }
    }

    /// Every listening address, in the configured order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.shared().bound.lock().expect("lock").clone()
    }

    /// What the relay threads share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.handle.as_ref().expect("running").shared
    }

    /// Whether server `i` is marked up.
    pub fn server_up(&self, i: usize) -> bool {
        self.shared().servers[i].up.load(Ordering::Relaxed)
    }

    /// Waits (at most `limit`) for the published totals to satisfy `f`
    /// (threads publish once a second); returns the last totals seen.
    pub fn totals_until(&self, limit: Duration, mut f: impl FnMut(&WorkerStats) -> bool) -> WorkerStats {
        let mut last = self.shared().totals();
        wait_until(limit, || {
            last = self.shared().totals();
            f(&last)
        });
        last
    }

    /// Stops the relay (graceful, as SIGTERM), waits at most 10 s for its
    /// threads, and returns the final totals (every thread publishes on
    /// its way out).
    pub fn stop(mut self) -> WorkerStats {
        let shared = self.shared().clone();
        stop_and_join(self.handle.take().expect("running"));
        shared.totals()
    }
}

fn stop_and_join(handle: RelayHandle) {
    handle.stop();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => r.expect("relay threads end without error"),
        Err(_) => panic!("relay threads did not end within 10 s of stop()"),
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if std::thread::panicking() {
                h.stop();
            } else {
                stop_and_join(h);
            }
        }
    }
}

// ----- in-test servers -----

/// A listener served by a thread; each connection gets its own thread
/// running the handler. [`Backend::stop`] closes the listener (new
/// connects are refused); connections already accepted go on.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Listens on `addr` (port 0 for a fresh one; a known port to restart).
    pub fn try_spawn(addr: SocketAddr, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> io::Result<Backend> {
        let l = TcpListener::bind(addr)?;
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                        let h = handler.clone();
                        std::thread::spawn(move || h(s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Backend { addr, stop, thread: Some(thread) })
    }

    /// As [`Backend::try_spawn`], panicking on error.
    pub fn spawn(addr: SocketAddr, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Backend {
        Backend::try_spawn(addr, handler).expect("backend binds")
    }

    /// Closes the listener; returns once it is closed.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An echo server that tags its replies and answers health checks.
///
/// A connection whose first 4 bytes are `GET ` is a health check: the
/// request is read to its blank line and answered `200` while `healthy`,
/// `503` otherwise. Any other connection is data: it is counted in
/// `served`, gets the server's `id` byte, then everything it sends echoed
/// back. A connection that closes before 4 bytes (a TCP check) is ignored.
pub struct EchoServer {
    /// The listener.
    pub backend: Backend,
    /// The tag sent first on each data connection.
    pub id: u8,
    /// Whether health checks get 200.
    pub healthy: Arc<AtomicBool>,
    /// Data connections served.
    pub served: Arc<AtomicUsize>,
}

impl EchoServer {
    /// A fresh echo server on `addr` (port 0).
    pub fn start(id: u8, addr: SocketAddr) -> EchoServer {
        EchoServer::try_start(id, addr).expect("echo server binds")
    }

    /// As [`EchoServer::start`], returning bind errors.
    pub fn try_start(id: u8, addr: SocketAddr) -> io::Result<EchoServer> {
        let healthy = Arc::new(AtomicBool::new(true));
        let served = Arc::new(AtomicUsize::new(0));
        let backend = EchoServer::listen(id, addr, healthy.clone(), served.clone())?;
        Ok(EchoServer { backend, id, healthy, served })
    }

    fn listen(id: u8, addr: SocketAddr, healthy: Arc<AtomicBool>, served: Arc<AtomicUsize>) -> io::Result<Backend> {
        Backend::try_spawn(addr, move |s| serve_echo(s, id, &healthy, &served))
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    /// Closes the listener: connects are refused from now on.
    pub fn stop(&mut self) {
        self.backend.stop();
    }

    /// Listens again on the same port (SO_REUSEADDR), retrying for 2 s.
    pub fn restart(&mut self) {
        let addr = self.backend.addr;
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            match EchoServer::listen(self.id, addr, self.healthy.clone(), self.served.clone()) {
                Ok(b) => {
                    self.backend = b;
                    return;
                }
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("cannot listen on {addr} again: {e}"),
            }
        }
    }
}

fn serve_echo(mut s: TcpStream, id: u8, healthy: &AtomicBool, served: &AtomicUsize) {
    let mut head = [0u8; 4];
    if s.read_exact(&mut head).is_err() {
        return;
    }
    if &head == b"GET " {
        let mut req = head.to_vec();
        let mut b = [0u8; 512];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
        }
        let status = if healthy.load(Ordering::SeqCst) { "200 OK" } else { "503 Service Unavailable" };
        let _ = write!(s, "HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    served.fetch_add(1, Ordering::SeqCst);
    if s.write_all(&[id]).is_err() || s.write_all(&head).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// A port nobody listens on (bound, then closed).
pub fn dead_port() -> SocketAddr {
    TcpListener::bind(v4()).and_then(|l| l.local_addr()).expect("bind")
}

// ----- clients -----

/// Connects with [`IO_TIMEOUT`] on reads and writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Sends `ping` to an [`EchoServer`] through the relay; returns its id.
pub fn ping(s: &mut TcpStream) -> io::Result<u8> {
    s.write_all(b"ping")?;
    let mut r = [0u8; 5];
    s.read_exact(&mut r)?;
    if &r[1..] != b"ping" {
        return Err(io::Error::other(format!("bad echo {r:?}")));
    }
    Ok(r[0])
}

/// After [`ping`], a plain echo of `data` on the same connection.
pub fn echo(s: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    s.write_all(data)?;
    let mut r = vec![0u8; data.len()];
    s.read_exact(&mut r)?;
    if r != data {
        return Err(io::Error::other(format!("bad echo {r:?}")));
    }
    Ok(())
}

/// One connection, one ping, closed; returns the server's id.
pub fn ping_once(addr: SocketAddr) -> u8 {
    let mut s = connect(addr);
    ping(&mut s).unwrap_or_else(|e| panic!("ping through {addr}: {e}"))
}

/// How a read-until-closed ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// An orderly EOF.
    Eof,
    /// A reset.
    Reset,
}

/// Reads until the peer closes (EOF or reset), at most `limit`. Returns
/// how, and the bytes that arrived before. `Err` if still open at `limit`.
pub fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<(Closed, Vec<u8>), String> {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("still open after {limit:?} ({} bytes read)", got.len()));
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200)))).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => return Ok((Closed::Eof, got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                return Ok((Closed::Reset, got))
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Fetches the stats page (the server writes it and closes).
pub fn fetch_stats(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    let (_, page) = read_until_closed(&mut s, Duration::from_secs(5)).expect("stats page");
    String::from_utf8(page).expect("utf-8 stats")
}

/// The value of `name` in a stats page.
pub fn stat(page: &str, name: &str) -> Option<u64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ----- a deterministic stream and its checksum -----

/// xorshift64 words as little-endian bytes.
pub struct Gen(u64);

impl Gen {
    /// A generator; `seed` must not be 0.
    pub fn new(seed: u64) -> Gen {
        Gen(seed | 1)
    }

    /// Fills `buf` (a multiple of 8 bytes long).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_exact_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            c.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// FNV-1a over 64-bit little-endian words (the tail zero-padded), fed in
/// chunks of any size; also counts the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sum {
    h: u64,
    n: u64,
    tail: [u8; 8],
    tl: usize,
}

impl Sum {
    /// An empty checksum.
    pub fn new() -> Sum {
        Sum { h: 0xcbf2_9ce4_8422_2325, ..Sum::default() }
    }

    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }

    /// Adds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.n += data.len() as u64;
        if self.tl > 0 {
            let k = (8 - self.tl).min(data.len());
            self.tail[self.tl..self.tl + k].copy_from_slice(&data[..k]);
            self.tl += k;
            data = &data[k..];
            if self.tl < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.tail));
            self.tl = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tl = rest.len();
    }

    /// (bytes, checksum).
    pub fn finish(&self) -> (u64, u64) {
        let mut s = *self;
        if s.tl > 0 {
            s.tail[s.tl..].fill(0);
            s.word(u64::from_le_bytes(s.tail));
        }
        (s.n, s.h)
    }
}

/// Writes `total` bytes (a multiple of 64 KiB) of the stream `seed`;
/// returns (bytes, checksum) of what was written.
pub fn send_stream(w: &mut impl Write, seed: u64, total: u64) -> io::Result<(u64, u64)> {
    const CHUNK: usize = 64 * 1024;
    let mut g = Gen::new(seed);
    let mut sum = Sum::new();
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..total / CHUNK as u64 {
        g.fill(&mut buf);
        w.write_all(&buf)?;
        sum.update(&buf);
    }
    Ok(sum.finish())
}

/// Reads to EOF; returns (bytes, checksum).
pub fn recv_stream(r: &mut impl Read) -> io::Result<(u64, u64)> {
    let mut sum = Sum::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(sum.finish()),
            n => sum.update(&buf[..n]),
        }
    }
}

/// Sends `total` bytes of stream `seed` and half-closes, while reading the
/// peer's stream to EOF. Returns ((sent, sent sum), (received, received sum)).
pub fn exchange(s: &TcpStream, seed: u64, total: u64) -> io::Result<((u64, u64), (u64, u64))> {
    let mut w = s.try_clone()?;
    let writer = std::thread::spawn(move || {
        let r = send_stream(&mut w, seed, total);
        let _ = w.shutdown(Shutdown::Write);
        r
    });
    let mut r = s.try_clone()?;
    let got = recv_stream(&mut r);
    let sent = writer.join().map_err(|_| io::Error::other("writer panicked"))?;
    Ok((sent?, got?))
}

/// Closes `s` with a reset (SO_LINGER on, 0 s): the peer gets RST, not FIN.
pub fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let lin = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a live linger struct
    // and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lin as *const libc::linger).cast(),
            std::mem::size_of_val(&lin) as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", io::Error::last_os_error());
    drop(s);
}

/// A file in the temp directory, named `anypoll-test-PID-NAME`, removed on
/// drop: the config files of the relay tests.
pub struct TempFile(std::path::PathBuf);

impl TempFile {
    /// Writes `text` to a new file named after `name` (and this process).
    pub fn new(name: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("anypoll-test-{}-{name}", std::process::id()));
        std::fs::write(&p, text).expect("write config");
        TempFile(p)
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
