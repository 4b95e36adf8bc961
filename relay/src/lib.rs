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
//! accept → (a TLS listener: the client's handshake) → pick the next
//! healthy server (round-robin) → non-blocking connect → a [`Stream`]
//! forwards both ways (splice or buffers) → both sides closed. If the connect fails before anything was sent, another
//! healthy server is tried once. If no server is up, the client is closed
//! at once and the log says why. Every aborted transfer is logged with its
//! reason.
//!
//! # TLS
//!
//! Each side's transport is chosen at run time (`xprt.rs`): plain, or TLS
//! when the listeners terminate it (`--tls-cert`) or the servers speak it
//! (`--server-tls`). Plain↔plain streams keep splice; a TLS side moves
//! bytes through buffers. On a TLS listener the client's handshake comes
//! first, as with HAProxy's `ssl` on a bind: the server is chosen and
//! connected only once it is done (`handshake.rs`), so a client stalled in
//! its handshake holds its slot and two fds, never a server connection.
//! `--timeout-handshake` bounds each handshake: the client's from the
//! accept, the server's (`--server-tls`) from the connect, as well as the
//! connect timeout while that runs. A client that stops in the middle of
//! its handshake is closed then, and frees its slot; a failed handshake
//! closes the client, or ends the stream, with one line naming the client
//! and the TLS error.
//!
//! # Files
//!
//! This file holds the public API ([`start`], [`RelayHandle`], [`Shared`])
//! and the state of a thread; the others its behaviour, by concern:
//! `worker.rs` (start-up, event and timer dispatch, signals, stop),
//! `accept.rs` (accepting under `maxconn`, pausing), `handshake.rs` (a
//! connection slot's states; a TLS client's handshake), `streams.rs` (one
//! client's stream from connect to close, timeouts), `check_io.rs` (the
//! health checks' I/O), `stats.rs` (counters and the stats page), `tag.rs`
//! (typed fd owners and timer tags), `xprt.rs` (the transport per side),
//! [`tls_settings`] (the TLS settings), [`check`] (the check verdicts) and
//! [`config`] (the settings).

mod accept;
pub mod check;
mod check_io;
pub mod config;
mod handshake;
mod stats;
mod streams;
mod tag;
pub mod tls_settings;
mod worker;
mod xprt;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anypoll_backends::registry;

use anypoll::connection::Connection;
use anypoll::counters::Counters;
use anypoll::listener::bind;
use anypoll::stream::{Pools, Stream};
use anypoll::timer::TimerId;
use anypoll::{EventLoop, Signal};
use check::Health;
use config::RelayConfig;
use handshake::Slot;
pub use xprt::TlsContext;
use xprt::Xprt;

/// The listen backlog asked for. The kernel caps it (Linux:
/// `net.core.somaxconn`, 4096 by default), so this means "as deep as the
/// system allows": a burst of connects waits in the queue instead of
/// overflowing it, which on Linux falls back to SYN cookies (the soak saw
/// those lose a connection's first bytes at a backend with a 1024 backlog).
const LISTEN_BACKLOG: i32 = 65535;

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
    /// The TLS configurations, loaded once at start-up.
    pub tls: TlsContext,
}

impl Shared {
    pub(crate) fn wake_all(&self) {
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

/// Starts the relay threads and returns at once. Bind errors are returned
/// before any thread runs.
pub fn start(cfg: RelayConfig, signals: bool) -> io::Result<RelayHandle> {
    let tls = TlsContext::load(&cfg)?;
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
    let mut cfg = cfg;
    let mut workers = Vec::new();
    // Bind everything first, so an address in use is an error right away.
    // Thread 0 binds the requested addresses; with port 0, the others bind
    // the port the first one got, so all threads share each address.
    let mut addrs = cfg.listen.clone();
    let mut stats_bound = None;
    for id in 0..threads {
        let mut listeners = Vec::new();
        for a in addrs.iter_mut() {
            let l = bind(*a, LISTEN_BACKLOG, threads > 1)
                .map_err(|e| io::Error::new(e.kind(), format!("listen {a}: {e}")))?;
            *a = l.local_addr()?;
            listeners.push(l);
        }
        let stats_listener = match (id, cfg.stats) {
            (0, Some(a)) => {
                let l = bind(a, 64, false).map_err(|e| io::Error::new(e.kind(), format!("stats {a}: {e}")))?;
                stats_bound = Some(l.local_addr()?);
                Some(l)
            }
            _ => None,
        };
        workers.push((listeners, stats_listener));
    }
    let mut loops = Vec::new();
    let mut wakers = Vec::new();
    for (id, (listeners, stats_listener)) in workers.into_iter().enumerate() {
        let poller = match &cfg.poller {
            Some(name) => registry::create(name, registry::Source::Flag),
            None => registry::choose(None, None).map(|(p, _)| p),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut el = EventLoop::new(poller, None)?;
        if id == 0 && signals {
            el.handle_signals(&[Signal::Int, Signal::Term, Signal::Usr1])?;
        }
        wakers.push(el.cx().waker());
        loops.push((id, el, listeners, stats_listener));
    }
    // Every fd of the start-up is open now: what is left below the
    // backend's fd limit bounds maxconn.
    if let Some((limit, backend)) = loops.first_mut().and_then(|(_, el, _, _)| {
        let cx = el.cx();
        cx.fd_limit().map(|l| (l, cx.backend()))
    }) {
        let open = accept::open_fds_below(limit);
        let max = accept::FdBudget::of(&cfg).maxconn(cfg.maxconn, limit, open);
        if max < cfg.maxconn {
            log::info!(
                "{backend} backend watches fds < {limit} ({open} open): maxconn {} lowered to {max}",
                cfg.maxconn
            );
            cfg.maxconn = max;
        }
    }
    let shared = Arc::new(Shared {
        servers,
        active: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        stats: Mutex::new(vec![WorkerStats::default(); threads]),
        wakers: Mutex::new(wakers),
        bound: Mutex::new(addrs),
        stats_bound: Mutex::new(stats_bound),
        tls,
        cfg,
    });
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

// ----- the state of a thread (its behaviour is in the files above) -----

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

/// One thread's relay: its listeners, streams, checks (thread 0) and stats.
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) listeners: Vec<TcpListener>,
    pub(crate) stats_listener: Option<TcpListener>,
    /// The connection slots, by index (the owner tags'): see handshake.rs.
    pub(crate) streams: Vec<Option<Slot>>,
    pub(crate) free: Vec<usize>,
    pub(crate) pools: Pools,
    pub(crate) rr: usize,
    pub(crate) stats: WorkerStats,
    pub(crate) checks: Vec<CheckState>,
    pub(crate) paused: bool,
    /// One fd held for the next connection's server socket (see
    /// [`Worker::accept`]).
    pub(crate) spare: Option<std::os::unix::net::UnixDatagram>,
    pub(crate) stopping: bool,
    pub(crate) pending_signals: VecDeque<Signal>,
}

/// A live stream and what the relay tracks of it.
pub(crate) struct Entry {
    pub(crate) stream: Stream<Xprt, Xprt>,
    pub(crate) server: usize,
    pub(crate) tried: u32,
    pub(crate) peer: SocketAddr,
    pub(crate) timer: Option<TimerId>,
    pub(crate) front_last: Instant,
    pub(crate) back_last: Instant,
    pub(crate) connect_started: Instant,
    /// While a TLS handshake runs on either side: when it must be done.
    pub(crate) handshake_until: Option<Instant>,
    /// The byte counts when the stream was last processed.
    pub(crate) seen: Seen,
}

/// A stream's byte counts, by side and direction. Which of them moved
/// since the last look tells which side was active (the idle timeouts);
/// the bytes to the server and to the client are the stats' up and down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Read from the client.
    pub(crate) from_client: u64,
    /// Written to the client.
    pub(crate) to_client: u64,
    /// Read from the server.
    pub(crate) from_server: u64,
    /// Written to the server.
    pub(crate) to_server: u64,
}

impl Seen {
    pub(crate) fn of(s: &Stream<Xprt, Xprt>) -> Seen {
        Seen {
            from_client: s.req.bytes_in,
            to_client: s.res.bytes_out,
            from_server: s.res.bytes_in,
            to_server: s.req.bytes_out,
        }
    }
}

/// One server's check as thread 0 runs it.
pub(crate) struct CheckState {
    pub(crate) health: Health,
    pub(crate) conn: Option<Connection>,
    pub(crate) sent: bool,
    pub(crate) reply: Vec<u8>,
    pub(crate) timeout: Option<TimerId>,
}

impl CheckState {
    pub(crate) fn new() -> CheckState {
        CheckState { health: Health::new(), conn: None, sent: false, reply: Vec::new(), timeout: None }
    }
}
