//! `anypoll relay`: a TCP proxy built on the loop, the transport and
//! streams.
//!
//! # Threads
//!
//! `--threads N` runs N event loops, one per thread, each with its **own**
//! listening sockets bound with SO_REUSEPORT: the kernel spreads new
//! connections over them, and a connection lives and dies in the thread
//! that accepted it. Nothing on the data path is shared, so there is no
//! lock, no cross-thread hand-off and no wake-up per connection (one
//! accept loop handing fds to workers would cost a wake-up and a queue per
//! connection). What is shared is small and read-mostly: the servers'
//! health (atomics), the connection count for `maxconn` (an atomic), and
//! the counters each thread publishes once a second for the stats.
//! Thread 0 also runs the health checks, the stats endpoint and the
//! signals.
//!
//! # One connection
//!
//! accept → pick the next healthy server (round-robin) → non-blocking
//! connect → a [`Stream`] forwards both ways (splice or buffers) → both
//! sides closed. If the connect fails before anything was sent, another
//! healthy server is tried once. If no server is up, the client is closed
//! at once and the log says why. Every aborted transfer is logged with its
//! reason.

pub mod check;
pub mod config;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anypoll_backends::registry;

use crate::connection::{ConnectStatus, Connection};
use crate::counters::Counters;
use crate::listener::{accept_batch, bind, is_out_of_fds, pause_out_of_fds, BatchEnd};
use crate::sockops::Real;
use crate::stream::{Outcome, Phase, Pools, Stream};
use crate::timer::TimerId;
use crate::{Ctx, EventLoop, FdState, Handler, IoEvent};
use check::{check_timeout, parse_status_line, status_passes, CheckResult, Health};
use config::{CheckKind, RelayConfig};

const KIND_SHIFT: u32 = usize::BITS - 4;
const LISTENER: usize = 1;
const STREAM: usize = 2;
const CHECK: usize = 3;
const STATS_LISTENER: usize = 4;

fn owner(kind: usize, index: usize) -> usize {
    (kind << KIND_SHIFT) | index
}

fn split(owner: usize) -> (usize, usize) {
    (owner >> KIND_SHIFT, owner & ((1 << KIND_SHIFT) - 1))
}

/// The listen backlog asked for. The kernel caps it (Linux:
/// `net.core.somaxconn`, 4096 by default), so this means "as deep as the
/// system allows": a burst of connects waits in the queue instead of
/// overflowing it, which on Linux falls back to SYN cookies (the soak saw
/// those lose a connection's first bytes at a backend with a 1024 backlog).
const LISTEN_BACKLOG: i32 = 65535;

/// Timer data: kind in the top bits, index below (as for owners).
const T_STREAM: usize = 1;
const T_CHECK_START: usize = 2;
const T_CHECK_TIMEOUT: usize = 3;
const T_PUBLISH: usize = 4;
const T_GRACE: usize = 5;
const T_MAXCONN: usize = 6;

/// What one thread has done, published for the stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerStats {
    /// The loop's counters.
    pub counters: Counters,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections live now.
    pub active: u64,
    /// Client → server bytes.
    pub bytes_up: u64,
    /// Server → client bytes.
    pub bytes_down: u64,
    /// Streams that ended in an error or a timeout.
    pub aborted: u64,
    /// Clients closed because no server was up.
    pub no_server: u64,
    /// Server connects retried on another server.
    pub retries: u64,
    /// Spare pipes the pool keeps (two fds each), now.
    pub pipes_spare: u64,
    /// Pipes in use, now.
    pub pipes_in_use: u64,
}

impl WorkerStats {
    fn add(&mut self, o: &WorkerStats) {
        let c = &mut self.counters;
        let d = &o.counters;
        c.iterations += d.iterations;
        c.waits += d.waits;
        c.ctl += d.ctl;
        c.reads += d.reads;
        c.writes += d.writes;
        c.accepts += d.accepts;
        c.splices += d.splices;
        c.splice_fallbacks += d.splice_fallbacks;
        c.other += d.other;
        c.eagain += d.eagain;
        c.events += d.events;
        c.spec_calls += d.spec_calls;
        c.stale += d.stale;
        c.timers += d.timers;
        self.accepted += o.accepted;
        self.active += o.active;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
        self.aborted += o.aborted;
        self.no_server += o.no_server;
        self.retries += o.retries;
        self.pipes_spare += o.pipes_spare;
        self.pipes_in_use += o.pipes_in_use;
    }
}

/// One server as all threads see it.
#[derive(Debug)]
pub struct ServerShared {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it takes traffic.
    pub up: AtomicBool,
    /// Checks passed / failed.
    pub passed: AtomicU64,
    /// Checks failed.
    pub failed: AtomicU64,
}

/// What the threads share.
#[derive(Debug)]
pub struct Shared {
    /// The settings.
    pub cfg: RelayConfig,
    /// The servers.
    pub servers: Vec<ServerShared>,
    /// Live connections over all threads.
    pub active: AtomicUsize,
    /// Set by SIGTERM/SIGINT (or [`RelayHandle::stop`]).
    pub stopping: AtomicBool,
    /// Each thread's last published stats.
    pub stats: Mutex<Vec<WorkerStats>>,
    wakers: Mutex<Vec<anypoll_backends::Waker>>,
    /// The listening addresses actually bound (port 0 resolved).
    pub bound: Mutex<Vec<SocketAddr>>,
    /// The stats address actually bound.
    pub stats_bound: Mutex<Option<SocketAddr>>,
}

impl Shared {
    /// The sum of every thread's stats.
    pub fn totals(&self) -> WorkerStats {
        let mut t = WorkerStats::default();
        for s in self.stats.lock().expect("stats lock").iter() {
            t.add(s);
        }
        t
    }

    /// The stats page: counters, then one line per server.
    pub fn render(&self) -> String {
        let t = self.totals();
        let c = &t.counters;
        let mut s = String::new();
        use std::fmt::Write as _;
        let _ = writeln!(s, "connections_total {}\nconnections_active {}", t.accepted, t.active);
        let _ = writeln!(s, "bytes_client_to_server {}\nbytes_server_to_client {}", t.bytes_up, t.bytes_down);
        let _ = writeln!(s, "aborted {}\nno_server {}\nconnect_retries {}", t.aborted, t.no_server, t.retries);
        let _ = writeln!(
            s,
            "syscalls {}\nsyscalls_wait {}\nsyscalls_ctl {}\nsyscalls_read {}\nsyscalls_write {}\nsyscalls_accept {}\nsyscalls_splice {}\nsyscalls_other {}",
            c.syscalls(),
            c.waits,
            c.ctl,
            c.reads,
            c.writes,
            c.accepts,
            c.splices,
            c.other
        );
        let _ = writeln!(
            s,
            "eagain {}\nsplice_fallbacks {}\nloop_iterations {}\npipes_spare {}\npipes_in_use {}",
            c.eagain, c.splice_fallbacks, c.iterations, t.pipes_spare, t.pipes_in_use
        );
        for sv in &self.servers {
            let _ = writeln!(
                s,
                "server {} {} checks_passed={} checks_failed={}",
                sv.addr,
                if sv.up.load(Ordering::Relaxed) { "UP" } else { "DOWN" },
                sv.passed.load(Ordering::Relaxed),
                sv.failed.load(Ordering::Relaxed)
            );
        }
        s
    }

    fn wake_all(&self) {
        for w in self.wakers.lock().expect("wakers lock").iter() {
            let _ = w.wake();
        }
    }
}

/// A running relay: its shared state and threads.
#[derive(Debug)]
pub struct RelayHandle {
    /// What the threads share.
    pub shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<io::Result<()>>>,
}

impl RelayHandle {
    /// Asks every thread for a graceful stop (as SIGTERM does).
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake_all();
    }

    /// Waits for every thread; the first error wins.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t.join().unwrap_or_else(|_| Err(io::Error::other("a relay thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

struct Entry {
    stream: Stream,
    server: usize,
    tried: u32,
    peer: SocketAddr,
    timer: Option<TimerId>,
    front_last: Instant,
    back_last: Instant,
    connect_started: Instant,
    seen: (u64, u64, u64, u64),
}

struct CheckState {
    health: Health,
    conn: Option<Connection>,
    sent: bool,
    reply: Vec<u8>,
    timeout: Option<TimerId>,
}

struct Worker {
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    stats_listener: Option<TcpListener>,
    streams: Vec<Option<Entry>>,
    free: Vec<usize>,
    pools: Pools,
    rr: usize,
    stats: WorkerStats,
    checks: Vec<CheckState>,
    paused: bool,
    /// One fd held for the next connection's server socket (see
    /// [`Worker::accept`]).
    spare: Option<std::os::unix::net::UnixDatagram>,
    stopping: bool,
    pending_signals: VecDeque<libc::c_int>,
}

/// Starts the relay threads and returns at once. Bind errors are returned
/// before any thread runs.
pub fn start(cfg: RelayConfig, signals: bool) -> io::Result<RelayHandle> {
    let servers = cfg
        .servers
        .iter()
        .map(|&addr| ServerShared {
            addr,
            up: AtomicBool::new(true),
            passed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
        .collect();
    let threads = cfg.threads;
    let shared = Arc::new(Shared {
        servers,
        active: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        stats: Mutex::new(vec![WorkerStats::default(); threads]),
        wakers: Mutex::new(Vec::new()),
        bound: Mutex::new(Vec::new()),
        stats_bound: Mutex::new(None),
        cfg,
    });
    let mut workers = Vec::new();
    // Bind everything first, so an address in use is an error right away.
    // Thread 0 binds the requested addresses; with port 0, the others bind
    // the port the first one got, so all threads share each address.
    let mut addrs = shared.cfg.listen.clone();
    for id in 0..threads {
        let mut listeners = Vec::new();
        for a in addrs.iter_mut() {
            let l = bind(*a, LISTEN_BACKLOG, threads > 1)
                .map_err(|e| io::Error::new(e.kind(), format!("listen {a}: {e}")))?;
            *a = l.local_addr()?;
            listeners.push(l);
        }
        let stats_listener = match (id, shared.cfg.stats) {
            (0, Some(a)) => {
                let l = bind(a, 64, false).map_err(|e| io::Error::new(e.kind(), format!("stats {a}: {e}")))?;
                *shared.stats_bound.lock().expect("lock") = Some(l.local_addr()?);
                Some(l)
            }
            _ => None,
        };
        workers.push((listeners, stats_listener));
    }
    *shared.bound.lock().expect("lock") = addrs;
    let mut loops = Vec::new();
    for (id, (listeners, stats_listener)) in workers.into_iter().enumerate() {
        let poller = match &shared.cfg.poller {
            Some(name) => registry::create(name, registry::Source::Flag),
            None => registry::choose(None, None).map(|(p, _)| p),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut el = EventLoop::new(poller, None)?;
        if id == 0 && signals {
            el.handle_signals(&[crate::Signal::Int, crate::Signal::Term, crate::Signal::Usr1])?;
        }
        shared.wakers.lock().expect("lock").push(el.cx().waker());
        loops.push((id, el, listeners, stats_listener));
    }
    let mut handles = Vec::new();
    for (id, mut el, listeners, stats_listener) in loops {
        let shared = shared.clone();
        let t = std::thread::Builder::new().name(format!("relay-{id}")).spawn(move || {
            let checks = if id == 0 { shared.servers.iter().map(|_| CheckState::new()).collect() } else { Vec::new() };
            let mut w = Worker {
                id,
                pools: Pools::new(shared.cfg.bufsize),
                shared,
                listeners,
                stats_listener,
                streams: Vec::new(),
                free: Vec::new(),
                rr: id,
                stats: WorkerStats::default(),
                checks,
                paused: false,
                spare: None,
                stopping: false,
                pending_signals: VecDeque::new(),
            };
            w.setup(el.cx())?;
            let r = el.run(&mut w);
            w.publish(el.cx());
            r
        })?;
        handles.push(t);
    }
    Ok(RelayHandle { shared, threads: handles })
}

impl CheckState {
    fn new() -> CheckState {
        CheckState { health: Health::new(), conn: None, sent: false, reply: Vec::new(), timeout: None }
    }
}

impl Worker {
    fn setup(&mut self, cx: &mut Ctx) -> io::Result<()> {
        if !self.listeners.is_empty() {
            self.spare = Some(spare_fd()?);
        }
        for (i, l) in self.listeners.iter().enumerate() {
            cx.register(l, owner(LISTENER, i), FdState::RECV_ACTIVE | FdState::RECV_READY)?;
        }
        if let Some(l) = &self.stats_listener {
            cx.register(l, owner(STATS_LISTENER, 0), FdState::RECV_ACTIVE)?;
        }
        if self.id == 0 && self.shared.cfg.check != CheckKind::None {
            for i in 0..self.checks.len() {
                // Spread the first checks over the interval.
                // Divided first: interval × i overflows a Duration for a
                // huge interval (u64::MAX ms) and a thousand servers.
                let n = self.checks.len() as u32;
                let at = self.shared.cfg.check_interval / n.max(1) * i as u32;
                cx.add_timer(at, owner(T_CHECK_START, i) as u64);
            }
        }
        cx.add_timer(Duration::from_secs(1), owner(T_PUBLISH, 0) as u64);
        Ok(())
    }

    fn publish(&mut self, cx: &Ctx) {
        self.stats.counters = *cx.counters();
        self.stats.active = self.streams.iter().filter(|e| e.is_some()).count() as u64;
        self.stats.pipes_spare = self.pools.pipes.spare() as u64;
        self.stats.pipes_in_use = self.pools.pipes.in_use() as u64;
        if let Ok(mut v) = self.shared.stats.lock() {
            v[self.id] = self.stats;
        }
    }

    fn pick_server(&mut self, exclude: Option<usize>) -> Option<usize> {
        let n = self.shared.servers.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            if Some(i) != exclude && self.shared.servers[i].up.load(Ordering::Relaxed) {
                self.rr = i + 1;
                return Some(i);
            }
        }
        None
    }

    /// Accepts up to `maxaccept` clients from listener `fd`, one at a time.
    ///
    /// Each client needs a slot under `maxconn` and a second fd for its
    /// server, and both are taken before the client is:
    ///
    /// * the slot is reserved in the shared count with a compare-and-swap
    ///   (with several threads, a load then an add would let two threads
    ///   take the last slot each);
    /// * the server's fd is held in advance as a spare fd, closed just
    ///   before the server socket is made. Out of fds, the spare cannot be
    ///   had again, so the next client stays queued in the kernel and the
    ///   listener pauses, rather than a client being accepted, then closed
    ///   because its server socket failed with EMFILE.
    fn accept(&mut self, cx: &mut Ctx, fd: RawFd) {
        for _ in 0..self.shared.cfg.maxaccept.max(1) {
            if !self.reserve_slot() {
                self.pause_listeners(cx);
                return;
            }
            if self.spare.is_none() {
                match spare_fd() {
                    Ok(f) => self.spare = Some(f),
                    Err(e) => {
                        self.release_slot();
                        // No fd to spare for a client's server: rest as when
                        // accept itself finds none.
                        pause_out_of_fds(cx, fd, &format_args!("no fd for a server connection ({e})"));
                        return;
                    }
                }
            }
            let mut got = None;
            let (_, end) = accept_batch(cx, fd, 1, |_, sock, peer| got = Some((sock, peer)));
            match got {
                Some((sock, peer)) => {
                    self.stats.accepted += 1;
                    // Its fd number goes to the server socket.
                    self.spare = None;
                    self.open(cx, sock, peer);
                }
                None => self.release_slot(),
            }
            if end != BatchEnd::Budget {
                return;
            }
        }
    }

    /// Takes one connection slot under `maxconn`; false when all are taken.
    fn reserve_slot(&self) -> bool {
        let max = self.shared.cfg.maxconn;
        self.shared.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| (a < max).then_some(a + 1)).is_ok()
    }

    fn release_slot(&self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }

    fn pause_listeners(&mut self, cx: &mut Ctx) {
        // Always stop polling, even if already paused: an EMFILE pause that
        // ends meanwhile re-enables the listeners, and a listener polled
        // with no slot to fill would be reported ready again and again.
        for l in &self.listeners {
            cx.stop_recv(l.as_raw_fd());
        }
        if !self.paused {
            self.paused = true;
            log::info!("maxconn {} reached: accepting paused", self.shared.cfg.maxconn);
            // Other threads free connections too: look again soon.
            cx.add_timer(Duration::from_millis(50), owner(T_MAXCONN, 0) as u64);
        }
    }

    fn maybe_resume(&mut self, cx: &mut Ctx) {
        if self.paused && !self.stopping && self.shared.active.load(Ordering::Relaxed) < self.shared.cfg.maxconn {
            self.paused = false;
            log::info!("below maxconn again: accepting resumed");
            for l in &self.listeners {
                cx.want_recv(l.as_raw_fd());
                cx.may_recv(l.as_raw_fd());
            }
        }
    }

    /// Starts the stream of an accepted client, whose slot is reserved
    /// (and released here if the stream does not start).
    fn open(&mut self, cx: &mut Ctx, sock: OwnedFd, peer: SocketAddr) {
        let Some(server) = self.pick_server(None) else {
            self.release_slot();
            self.stats.no_server += 1;
            log::warn!("client {peer}: closed at once, no server is up");
            drop(sock);
            return;
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.streams.push(None);
            self.streams.len() - 1
        });
        let mut front = Connection::from_connected(sock);
        if let Err(e) = front.ctrl_init(cx, owner(STREAM, slot * 2), FdState::RECV_ACTIVE) {
            log::warn!("client {peer}: cannot register: {e}");
            front.force_close(cx);
            self.free.push(slot);
            self.release_slot();
            return;
        }
        front.xprt_init();
        let back = match self.connect_back(cx, slot, server) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("client {peer}: connect to server {}: {e}", self.shared.servers[server].addr);
                front.force_close(cx);
                self.free.push(slot);
                self.release_slot();
                return;
            }
        };
        let now = Instant::now();
        let stream = Stream::new(front, back, self.shared.cfg.splice);
        let timer = cx.add_timer(self.shared.cfg.timeout_connect, owner(T_STREAM, slot) as u64);
        self.streams[slot] = Some(Entry {
            stream,
            server,
            tried: 1,
            peer,
            timer: Some(timer),
            front_last: now,
            back_last: now,
            connect_started: now,
            seen: (0, 0, 0, 0),
        });
    }

    fn connect_back(&mut self, cx: &mut Ctx, slot: usize, server: usize) -> io::Result<Connection> {
        let mut back = Connection::connect(self.shared.servers[server].addr)?;
        cx.counters_mut().other += 2; // socket + connect
        if let Err(e) = back.ctrl_init(cx, owner(STREAM, slot * 2 + 1), FdState::SEND_ACTIVE) {
            back.force_close(cx);
            return Err(e);
        }
        back.xprt_init();
        Ok(back)
    }

    fn stream_io(&mut self, cx: &mut Ctx, slot: usize) {
        let Some(e) = self.streams.get_mut(slot).and_then(Option::as_mut) else { return };
        let connecting = e.stream.phase() == Phase::Connect;
        let outcome = e.stream.process(&mut Real, cx, &mut self.pools);
        let s = &e.stream;
        let seen = (s.req.bytes_in, s.res.bytes_out, s.res.bytes_in, s.req.bytes_out);
        let now = cx.now();
        if seen.0 != e.seen.0 || seen.1 != e.seen.1 {
            e.front_last = now;
        }
        if seen.2 != e.seen.2 || seen.3 != e.seen.3 {
            e.back_last = now;
        }
        self.stats.bytes_up += seen.3 - e.seen.3;
        self.stats.bytes_down += seen.1 - e.seen.1;
        e.seen = seen;
        if connecting && e.stream.phase() == Phase::Data {
            // Connected: the timer was armed for the connect timeout; the
            // idle timeouts apply now and may be shorter.
            if let Some(t) = e.timer.take() {
                cx.cancel_timer(t);
            }
            let cfg = &self.shared.cfg;
            let deadline = (e.front_last + cfg.timeout_client).min(e.back_last + cfg.timeout_server);
            e.timer = Some(cx.add_timer_at(deadline, owner(T_STREAM, slot) as u64));
        }
        match outcome {
            Outcome::Running => {}
            Outcome::ConnectFailed(err) if e.stream.req.bytes_out == 0 && e.tried < 2 => {
                let (failed, peer) = (e.server, e.peer);
                match self.pick_server(Some(failed)) {
                    Some(next) => {
                        log::info!(
                            "client {}: server {} {err}; retrying on {}",
                            peer,
                            self.shared.servers[failed].addr,
                            self.shared.servers[next].addr
                        );
                        self.stats.retries += 1;
                        self.retry(cx, slot, next);
                    }
                    None => self.finish(cx, slot),
                }
            }
            _ => self.finish(cx, slot),
        }
    }

    fn retry(&mut self, cx: &mut Ctx, slot: usize, server: usize) {
        match self.connect_back(cx, slot, server) {
            Ok(back) => {
                let e = self.streams[slot].as_mut().expect("live stream");
                e.stream.replace_back(cx, back);
                e.server = server;
                e.tried += 1;
                e.connect_started = Instant::now();
            }
            Err(err) => {
                log::warn!("server {}: {err}", self.shared.servers[server].addr);
                self.finish(cx, slot);
            }
        }
    }

    fn finish(&mut self, cx: &mut Ctx, slot: usize) {
        let Some(mut e) = self.streams[slot].take() else { return };
        let outcome = e.stream.outcome();
        let lost = e.stream.req.pending() + e.stream.res.pending();
        let server = self.shared.servers[e.server].addr;
        match outcome {
            Outcome::Finished | Outcome::Running => {
                log::debug!("client {} ↔ server {server}: done, {} B up, {} B down", e.peer, e.seen.3, e.seen.1)
            }
            Outcome::ConnectFailed(err) => {
                self.stats.aborted += 1;
                log::warn!("client {}: connect to server {server} failed: {err}; {lost} B not delivered", e.peer);
            }
            // Bytes dropped are a warning (seen at the default level); an
            // abort that lost nothing (a client gone between requests) is
            // information.
            Outcome::FrontError(err) => {
                self.stats.aborted += 1;
                let level = if lost > 0 { log::Level::Warn } else { log::Level::Info };
                log::log!(level, "client {} ↔ server {server}: client side: {err}; {lost} B not delivered", e.peer);
            }
            Outcome::BackError(err) => {
                self.stats.aborted += 1;
                let level = if lost > 0 { log::Level::Warn } else { log::Level::Info };
                log::log!(level, "client {} ↔ server {server}: server side: {err}; {lost} B not delivered", e.peer);
            }
        }
        if let Some(t) = e.timer.take() {
            cx.cancel_timer(t);
        }
        e.stream.close(cx, &mut self.pools);
        self.free.push(slot);
        self.release_slot();
        self.maybe_resume(cx);
        if self.stopping && self.live() == 0 {
            cx.stop();
        }
    }

    fn live(&self) -> usize {
        self.streams.len() - self.free.len()
    }

    fn stream_timer(&mut self, cx: &mut Ctx, slot: usize) {
        let cfg = &self.shared.cfg;
        let (tc, ts, tcon) = (cfg.timeout_client, cfg.timeout_server, cfg.timeout_connect);
        let Some(e) = self.streams.get_mut(slot).and_then(Option::as_mut) else { return };
        e.timer = None;
        let now = Instant::now();
        let (deadline, what) = match e.stream.phase() {
            Phase::Connect => (e.connect_started + tcon, "connect timeout"),
            Phase::Done => return,
            Phase::Data => {
                let c = e.front_last + tc;
                let s = e.back_last + ts;
                if c <= s {
                    (c, "client timeout")
                } else {
                    (s, "server timeout")
                }
            }
        };
        if deadline <= now {
            e.stream.abort(match what {
                "client timeout" => Outcome::FrontError(crate::connection::ConnError::Timeout),
                "connect timeout" => Outcome::ConnectFailed(crate::connection::ConnError::Timeout),
                _ => Outcome::BackError(crate::connection::ConnError::Timeout),
            });
            log::info!("client {}: {what}", e.peer);
            self.finish(cx, slot);
        } else {
            e.timer = Some(cx.add_timer_at(deadline, owner(T_STREAM, slot) as u64));
        }
    }

    // ----- health checks -----

    fn check_start(&mut self, cx: &mut Ctx, i: usize) {
        let interval = self.shared.cfg.check_interval;
        cx.add_timer(interval, owner(T_CHECK_START, i) as u64);
        if self.checks[i].conn.is_some() || self.stopping {
            return;
        }
        let addr = self.shared.servers[i].addr;
        let mut conn = match Connection::connect(addr) {
            Ok(c) => c,
            // Out of fds says nothing of the server: marking it down would
            // turn clients away once fds are back. Skip this check.
            Err(e) if is_out_of_fds(&e) => return log::debug!("server {addr}: check skipped: {e}"),
            Err(e) => return self.check_done(cx, i, CheckResult::Failed(e.to_string())),
        };
        if let Err(e) = conn.ctrl_init(cx, owner(CHECK, i), FdState::SEND_ACTIVE | FdState::RECV_ACTIVE) {
            conn.force_close(cx);
            return self.check_done(cx, i, CheckResult::Failed(e.to_string()));
        }
        conn.xprt_init();
        let c = &mut self.checks[i];
        c.conn = Some(conn);
        c.sent = false;
        c.reply.clear();
        c.timeout = Some(cx.add_timer(check_timeout(interval), owner(T_CHECK_TIMEOUT, i) as u64));
    }

    fn check_io(&mut self, cx: &mut Ctx, i: usize) {
        let kind = self.shared.cfg.check.clone();
        let Some(conn) = self.checks[i].conn.as_mut() else { return };
        match conn.confirm_connect(&mut Real, cx) {
            ConnectStatus::Pending => return,
            ConnectStatus::Failed => {
                let err = conn.error();
                return self.check_done(cx, i, CheckResult::Failed(format!("connect: {err}")));
            }
            ConnectStatus::Connected => {}
        }
        let path = match kind {
            CheckKind::Http(p) => p,
            _ => return self.check_done(cx, i, CheckResult::Ok),
        };
        let fd = conn.fd();
        let c = &mut self.checks[i];
        if !c.sent {
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: anypoll-check\r\n\r\n",
                self.shared.servers[i].addr
            );
            match cx.send(fd, req.as_bytes(), false) {
                crate::Io::Done(n) if n == req.len() => {
                    c.sent = true;
                    cx.stop_send(fd);
                }
                crate::Io::WouldBlock => return,
                other => return self.check_done(cx, i, CheckResult::Failed(format!("sending the request: {other:?}"))),
            }
        }
        let mut buf = [0u8; 512];
        loop {
            match cx.recv(fd, &mut buf) {
                crate::Io::Done(n) => {
                    let c = &mut self.checks[i];
                    c.reply.extend_from_slice(&buf[..n]);
                    if c.reply.contains(&b'\n') || c.reply.len() > 4096 {
                        break;
                    }
                }
                crate::Io::WouldBlock => return,
                crate::Io::Closed => break,
                crate::Io::Error(e) => {
                    return self.check_done(cx, i, CheckResult::Failed(format!("reading the reply: {e}")))
                }
            }
        }
        let result = match parse_status_line(&self.checks[i].reply) {
            Ok(code) if status_passes(code) => CheckResult::Ok,
            Ok(code) => CheckResult::Failed(format!("HTTP status {code}")),
            Err(e) => CheckResult::Failed(e),
        };
        self.check_done(cx, i, result);
    }

    fn check_done(&mut self, cx: &mut Ctx, i: usize, result: CheckResult) {
        let (rise, fall) = (self.shared.cfg.rise, self.shared.cfg.fall);
        let c = &mut self.checks[i];
        if let Some(mut conn) = c.conn.take() {
            conn.force_close(cx);
        }
        if let Some(t) = c.timeout.take() {
            cx.cancel_timer(t);
        }
        let sv = &self.shared.servers[i];
        match &result {
            CheckResult::Ok => sv.passed.fetch_add(1, Ordering::Relaxed),
            CheckResult::Failed(_) => sv.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(up) = c.health.record(&result, rise, fall) {
            sv.up.store(up, Ordering::Relaxed);
            let n_up = self.shared.servers.iter().filter(|s| s.up.load(Ordering::Relaxed)).count();
            let total = self.shared.servers.len();
            if up {
                log::warn!("server {} is UP again ({n_up}/{total} up)", sv.addr);
            } else {
                let why = c.health.last_error.clone().unwrap_or_default();
                log::warn!("server {} is DOWN: {why} ({n_up}/{total} up)", sv.addr);
            }
        }
    }

    // ----- stats, signals, stop -----

    fn serve_stats(&mut self, cx: &mut Ctx, fd: RawFd) {
        let mut conns = Vec::new();
        accept_batch(cx, fd, 16, |_, sock, _| conns.push(sock));
        if conns.is_empty() {
            return;
        }
        self.publish(cx);
        let page = self.shared.render();
        for sock in conns {
            // A small page on a fresh socket fits its send buffer; a client
            // that does not read it loses it rather than blocking us.
            let mut s = std::net::TcpStream::from(sock);
            let _ = s.write(page.as_bytes());
            cx.counters_mut().writes += 1;
        }
    }

    fn begin_stop(&mut self, cx: &mut Ctx) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        log::warn!(
            "thread {}: stopping: no more accepts, {} live connection(s) get {:?} to finish",
            self.id,
            self.live(),
            self.shared.cfg.grace
        );
        for l in self.listeners.drain(..) {
            let _ = cx.close(l.into());
        }
        if let Some(l) = self.stats_listener.take() {
            let _ = cx.close(l.into());
        }
        for i in 0..self.checks.len() {
            if let Some(mut conn) = self.checks[i].conn.take() {
                conn.force_close(cx);
            }
        }
        if self.live() == 0 {
            cx.stop();
        } else {
            cx.add_timer(self.shared.cfg.grace, owner(T_GRACE, 0) as u64);
        }
    }
}

/// An fd to hold in reserve: an unbound Unix datagram socket (close-on-exec;
/// no file system path needed, so it works in a chroot too).
fn spare_fd() -> io::Result<std::os::unix::net::UnixDatagram> {
    std::os::unix::net::UnixDatagram::unbound()
}

impl Handler for Worker {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        let (kind, index) = split(ev.owner);
        match kind {
            LISTENER => self.accept(cx, ev.fd),
            STREAM => self.stream_io(cx, index / 2),
            CHECK => self.check_io(cx, index),
            STATS_LISTENER => self.serve_stats(cx, ev.fd),
            _ => log::error!("fd {}: unknown owner {:#x}", ev.fd, ev.owner),
        }
    }

    fn timer(&mut self, cx: &mut Ctx, _id: TimerId, data: u64) {
        let (kind, index) = split(data as usize);
        match kind {
            T_STREAM => self.stream_timer(cx, index),
            T_CHECK_START => self.check_start(cx, index),
            T_CHECK_TIMEOUT => {
                self.checks[index].timeout = None;
                // The loop runs due timers before it dispatches the events
                // of the same turn: after a turn longer than the timeout,
                // the check's answer may be polled already but not handled.
                // Let it count before the timeout does.
                if self.checks[index].conn.is_some() {
                    self.check_io(cx, index);
                }
                if self.checks[index].conn.is_some() {
                    self.check_done(cx, index, CheckResult::Failed("check timed out".into()));
                }
            }
            T_PUBLISH => {
                self.publish(cx);
                if self.shared.stopping.load(Ordering::Relaxed) {
                    self.begin_stop(cx);
                }
                cx.add_timer(Duration::from_secs(1), owner(T_PUBLISH, 0) as u64);
            }
            T_GRACE => {
                let slots: Vec<usize> = (0..self.streams.len()).filter(|&i| self.streams[i].is_some()).collect();
                for slot in slots {
                    if let Some(e) = self.streams[slot].as_mut() {
                        log::warn!("client {}: grace period over, closing", e.peer);
                        e.stream.abort(Outcome::FrontError(crate::connection::ConnError::Timeout));
                    }
                    self.finish(cx, slot);
                }
                cx.stop();
            }
            T_MAXCONN => {
                self.maybe_resume(cx);
                if self.paused {
                    cx.add_timer(Duration::from_millis(50), owner(T_MAXCONN, 0) as u64);
                }
            }
            _ => {}
        }
    }

    fn signal(&mut self, cx: &mut Ctx, signal: crate::Signal) {
        self.pending_signals.push_back(signal.as_raw());
        while let Some(sig) = self.pending_signals.pop_front() {
            match sig {
                libc::SIGUSR1 => {
                    self.publish(cx);
                    log::warn!("counters:\n{}", self.shared.render());
                }
                _ => {
                    self.shared.stopping.store(true, Ordering::SeqCst);
                    self.shared.wake_all();
                    self.begin_stop(cx);
                }
            }
        }
    }

    fn wake(&mut self, cx: &mut Ctx) {
        if self.shared.stopping.load(Ordering::Relaxed) {
            self.begin_stop(cx);
        }
    }
}

/// A panic in any relay thread ends the process with status 70
/// (EX_SOFTWARE), after the usual panic message and an error log line.
/// Without this, a panic would end only its thread: if that were thread 0,
/// nothing would answer signals, run the checks or serve the stats any
/// more, while the other threads went on relaying: a half-dead daemon that
/// a supervisor cannot see. Only the command sets this hook; a program that
/// embeds the relay with [`start`] keeps its own panic policy.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        log::error!("{}: panic, exiting: {info}", std::thread::current().name().unwrap_or("relay"));
        std::process::exit(70);
    }));
}

/// `anypoll relay`: runs until SIGTERM/SIGINT and the grace period.
pub fn main(args: &config::RelayArgs, poller: Option<&str>) -> ExitCode {
    let cfg = match RelayConfig::from_args(args, poller) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("anypoll relay: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(name) = &cfg.poller {
        if let Err(e) = registry::create(name, registry::Source::Flag) {
            eprintln!("anypoll relay: {e}");
            return ExitCode::from(2);
        }
    }
    exit_on_panic();
    let handle = match start(cfg, true) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("anypoll relay: {e}");
            return ExitCode::from(if e.kind() == io::ErrorKind::InvalidInput { 2 } else { 1 });
        }
    };
    let bound = handle.shared.bound.lock().expect("lock").clone();
    let stats = *handle.shared.stats_bound.lock().expect("lock");
    let names: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
    log::warn!(
        "relay listening on {} → {} server(s), {} thread(s){}",
        names.join(", "),
        handle.shared.servers.len(),
        handle.shared.cfg.threads,
        stats.map(|s| format!(", stats on {s}")).unwrap_or_default()
    );
    match handle.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anypoll relay: {e}");
            ExitCode::FAILURE
        }
    }
}
