//! The soak's backend servers: K echo servers in one thread (mio), each of
//! which can be killed (listener and every connection closed at once, with
//! RST or FIN) and restarted on the same address.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// Bytes an echo connection holds before it stops reading.
const ECHO_BUF: usize = 64 * 1024;
const WAKE: Token = Token(usize::MAX);
const CONN_BASE: usize = 1 << 20;

enum Cmd {
    Kill(usize, bool),
    Restart(usize),
    Stop,
}

/// What the backends did, shared with the driver.
#[derive(Default)]
pub struct BackendStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed by a kill (their transfers were cut).
    pub killed_conns: AtomicU64,
    /// Bytes echoed.
    pub echoed: AtomicU64,
}

/// The running backends.
pub struct Backends {
    /// Their addresses (fixed across restarts).
    pub addrs: Vec<SocketAddr>,
    /// Counters.
    pub stats: Arc<BackendStats>,
    up: Vec<bool>,
    tx: mpsc::Sender<Cmd>,
    ack: mpsc::Receiver<io::Result<()>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// Listen backlog of the backends. mio's 1,024 overflows when 2,000
/// clients land on the one server left up: Linux then answers with SYN
/// cookies, and a cookie connection whose handshake ACK was dropped is set
/// up from a later data segment, up to 3 bytes in, silently losing the
/// first bytes (seen here as slowloris echoes missing their first bytes).
/// The kernel caps this at net.core.somaxconn.
const BACKLOG: i32 = 8192;

/// Binds `addr` with [`BACKLOG`].
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    // SAFETY: listen(2) on the listening socket we own; calling it again
    // only changes the backlog.
    if unsafe { libc::listen(l.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(l)
}

/// Binds 127.0.0.1 on a port below the ephemeral range, so that no
/// outgoing connection can take the port while the server is down (which
/// would make the restart fail with EADDRINUSE).
fn bind_low(rng: &mut crate::Rng) -> io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..200 {
        let port = 10_000 + (rng.next_u64() % 20_000) as u16;
        match bind(SocketAddr::from(([127, 0, 0, 1], port))) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port")))
}

impl Backends {
    /// Starts `k` echo servers.
    pub fn start(k: usize, rng: &mut crate::Rng) -> io::Result<Backends> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut listeners = Vec::new();
        for _ in 0..k {
            listeners.push(Some(bind_low(rng)?));
        }
        let addrs: Vec<SocketAddr> =
            listeners.iter().map(|l| l.as_ref().unwrap().local_addr()).collect::<Result<_, _>>()?;
        let stats = Arc::new(BackendStats::default());
        let (tx, rx) = mpsc::channel();
        let (ack_tx, ack) = mpsc::channel();
        let st = stats.clone();
        let a = addrs.clone();
        let thread = std::thread::Builder::new()
            .name("soak-backends".into())
            .spawn(move || run(poll, listeners, a, rx, ack_tx, st))?;
        Ok(Backends { addrs, stats, up: vec![true; k], tx, ack, waker, thread: Some(thread) })
    }

    /// Whether server `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }

    fn command(&mut self, cmd: Cmd) -> io::Result<()> {
        self.tx.send(cmd).map_err(|_| io::Error::other("backend thread gone"))?;
        self.waker.wake()?;
        self.ack.recv_timeout(Duration::from_secs(5)).map_err(|_| io::Error::other("backend thread: no answer"))?
    }

    /// Kills server `i`: closes its listener and every connection, with an
    /// RST (`rst`) or a FIN.
    pub fn kill(&mut self, i: usize, rst: bool) -> io::Result<()> {
        self.command(Cmd::Kill(i, rst))?;
        self.up[i] = false;
        Ok(())
    }

    /// Restarts server `i` on its address.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.command(Cmd::Restart(i))?;
        self.up[i] = true;
        Ok(())
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Echo {
    sock: TcpStream,
    server: usize,
    buf: Vec<u8>,
    start: usize,
    rd_eof: bool,
}

/// Moves bytes until nothing moves; `false` when the connection is over.
fn pump(e: &mut Echo, echoed: &AtomicU64) -> bool {
    loop {
        let mut progress = false;
        while e.start < e.buf.len() {
            match e.sock.write(&e.buf[e.start..]) {
                Ok(n) => {
                    e.start += n;
                    echoed.fetch_add(n as u64, Ordering::Relaxed);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if e.start == e.buf.len() {
            e.buf.clear();
            e.start = 0;
            if e.rd_eof {
                // Everything echoed and the peer is done sending: close
                // (a FIN, since nothing is left unread).
                return false;
            }
        }
        if !e.rd_eof && e.buf.len() < ECHO_BUF {
            let old = e.buf.len();
            e.buf.resize(ECHO_BUF, 0);
            match e.sock.read(&mut e.buf[old..]) {
                Ok(0) => {
                    e.buf.truncate(old);
                    e.rd_eof = true;
                    progress = true;
                }
                Ok(n) => {
                    e.buf.truncate(old + n);
                    progress = true;
                }
                Err(err) => {
                    e.buf.truncate(old);
                    match err.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                        _ => return false,
                    }
                }
            }
        }
        if !progress {
            return true;
        }
    }
}

/// Sets SO_LINGER to 0 so that the close sends an RST (best effort, as a
/// chaos step).
pub fn linger0(fd: i32) {
    let _ = platform_tests::net::set_linger_zero(fd);
}

fn run(
    mut poll: Poll,
    mut listeners: Vec<Option<TcpListener>>,
    addrs: Vec<SocketAddr>,
    rx: mpsc::Receiver<Cmd>,
    ack: mpsc::Sender<io::Result<()>>,
    stats: Arc<BackendStats>,
) {
    for (i, l) in listeners.iter_mut().enumerate() {
        if let Some(l) = l {
            poll.registry().register(l, Token(i), Interest::READABLE).expect("register listener");
        }
    }
    let mut conns: Vec<Option<Echo>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(500))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("backend poll: {e}");
        }
        for ev in events.iter() {
            let t = ev.token();
            if t == WAKE {
                continue;
            }
            if t.0 < CONN_BASE {
                let i = t.0;
                while let Some(l) = listeners[i].as_ref() {
                    match l.accept() {
                        Ok((mut sock, _)) => {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                            let idx = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry()
                                .register(&mut sock, Token(CONN_BASE + idx), Interest::READABLE | Interest::WRITABLE)
                                .expect("register conn");
                            let mut e = Echo { sock, server: i, buf: Vec::new(), start: 0, rd_eof: false };
                            if pump(&mut e, &stats.echoed) {
                                conns[idx] = Some(e);
                            } else {
                                let _ = poll.registry().deregister(&mut e.sock);
                                free.push(idx);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // ECONNABORTED, EMFILE...: try again on the next event.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let idx = t.0 - CONN_BASE;
            let Some(e) = conns.get_mut(idx).and_then(Option::as_mut) else { continue };
            if !pump(e, &stats.echoed) {
                let mut e = conns[idx].take().expect("conn");
                let _ = poll.registry().deregister(&mut e.sock);
                free.push(idx);
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Stop => return,
                Cmd::Kill(i, rst) => {
                    if let Some(mut l) = listeners[i].take() {
                        let _ = poll.registry().deregister(&mut l);
                    }
                    for (idx, slot) in conns.iter_mut().enumerate() {
                        if slot.as_ref().is_some_and(|e| e.server == i) {
                            let mut e = slot.take().expect("conn");
                            if rst {
                                linger0(e.sock.as_raw_fd());
                            }
                            let _ = poll.registry().deregister(&mut e.sock);
                            stats.killed_conns.fetch_add(1, Ordering::Relaxed);
                            free.push(idx);
                        }
                    }
                    let _ = ack.send(Ok(()));
                }
                Cmd::Restart(i) => {
                    // SO_REUSEADDR (set by mio) lets the address be bound
                    // again at once; retry briefly anyway.
                    let end = Instant::now() + Duration::from_secs(2);
                    let r = loop {
                        match bind(addrs[i]) {
                            Ok(mut l) => {
                                poll.registry().register(&mut l, Token(i), Interest::READABLE).expect("register");
                                listeners[i] = Some(l);
                                break Ok(());
                            }
                            Err(e) if Instant::now() >= end => break Err(e),
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    };
                    let _ = ack.send(r);
                }
            }
        }
    }
}
