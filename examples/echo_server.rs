//! A TCP echo server on the anypoll event loop.
//!
//! ```text
//! cargo run --example echo_server                      # 127.0.0.1, a free port (printed)
//! cargo run --example echo_server -- 7000              # 127.0.0.1:7000
//! cargo run --example echo_server -- --poller poll     # or ANYPOLL_POLLER=poll
//! cargo run --example echo_server -- --edge            # force the edge strategy (epoll, kqueue)
//! cargo run --example echo_server -- --selftest        # echo 4 × 512 KiB through itself, check, exit
//! ```
//!
//! What it shows:
//! * one [`EventLoop`] on a backend chosen at run time ([`registry::choose`]:
//!   `--poller`, then `ANYPOLL_POLLER`, then the best available);
//! * a listener that accepts in bounded batches ([`listener::accept_batch`]),
//!   which also pauses it when the process runs out of fds;
//! * connections in a slab (`Vec<Option<Conn>>`) whose index is the owner
//!   value given to the loop;
//! * speculative I/O with [`Ctx::recv`] / [`Ctx::send`]: a connection starts
//!   READY to send, reads until EAGAIN, keeps what a partial send left in
//!   its buffer and asks for send readiness only then; it stops reading
//!   while that buffer is full (back-pressure);
//! * half-close: after the client's EOF, the rest is sent, then the
//!   connection is closed;
//! * a clean stop on SIGINT or SIGTERM ([`EventLoop::handle_signals`]).
//!
//! `--selftest` runs clients in threads against the server, checks every
//! byte that comes back, then sends the process SIGTERM; the exit status is
//! 0 only if every client got its data back and the server stopped cleanly.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anypoll::backends::registry;
use anypoll::listener::{self, BatchEnd};
use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent, Strategy, TimerId};

/// The listener's owner value; connections use their slab index.
const LISTENER: usize = usize::MAX - 1;
/// Connections accepted per wake-up at most.
const MAX_ACCEPT: usize = 64;
/// Bytes a connection may hold unsent before it stops reading.
const MAX_PENDING: usize = 256 * 1024;
/// The self-test gives up after this long.
const SELFTEST_LIMIT: Duration = Duration::from_secs(30);

struct Conn {
    sock: OwnedFd,
    peer: SocketAddr,
    /// Received and not yet echoed: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// The client shut down its sending side.
    eof: bool,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }
}

#[derive(Default)]
struct Server {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    accepted: u64,
    echoed: u64,
    /// Set when the self-test's deadline passed.
    timed_out: bool,
}

impl Server {
    fn accept(&mut self, cx: &mut Ctx, fd: RawFd) {
        let Server { conns, free, accepted, .. } = self;
        let (_, end) = listener::accept_batch(cx, fd, MAX_ACCEPT, |cx, sock, peer| {
            let slot = free.pop().unwrap_or_else(|| {
                conns.push(None);
                conns.len() - 1
            });
            // A new connection may send at once; it reads once the client writes.
            match cx.register(&sock, slot, FdState::RECV_ACTIVE | FdState::SEND_READY | FdState::STREAM) {
                Ok(()) => {
                    *accepted += 1;
                    conns[slot] = Some(Conn { sock, peer, out: Vec::new(), sent: 0, eof: false });
                }
                Err(e) => {
                    eprintln!("echo_server: {peer}: cannot watch the connection: {e}");
                    free.push(slot);
                }
            }
        });
        if end == BatchEnd::Failed {
            eprintln!("echo_server: accept failed; the listener rests for a moment");
        }
    }

    fn close(&mut self, cx: &mut Ctx, slot: usize, why: Option<io::Error>) {
        if let Some(conn) = self.conns[slot].take() {
            if let Some(e) = why {
                eprintln!("echo_server: {}: {e}", conn.peer);
            }
            let _ = cx.deregister(conn.sock.as_raw_fd());
            self.free.push(slot);
            // Dropping `conn` closes the socket.
        }
    }

    fn conn_io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        let slot = ev.owner;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        let fd = ev.fd;
        if ev.ready.contains(anypoll::Directions::RECV) {
            let mut buf = [0u8; 16 * 1024];
            while !conn.eof && conn.pending() < MAX_PENDING {
                match cx.recv(fd, &mut buf) {
                    Io::Done(n) => conn.out.extend_from_slice(&buf[..n]),
                    Io::WouldBlock => break,
                    Io::Closed => conn.eof = true,
                    Io::Error(e) => return self.close(cx, slot, Some(e)),
                }
            }
        }
        // Echo what there is. A partial send keeps the rest for later.
        while conn.pending() > 0 {
            match cx.send(fd, &conn.out[conn.sent..], false) {
                Io::Done(n) => {
                    conn.sent += n;
                    self.echoed += n as u64;
                }
                Io::WouldBlock => break,
                Io::Closed => break,
                Io::Error(e) => return self.close(cx, slot, Some(e)),
            }
        }
        if conn.sent == conn.out.len() {
            conn.out.clear();
            conn.sent = 0;
        } else if conn.sent > conn.out.len() / 2 {
            conn.out.drain(..conn.sent);
            conn.sent = 0;
        }
        if conn.eof && conn.pending() == 0 {
            return self.close(cx, slot, None);
        }
        // Interests: send while something waits; read while there is room.
        // Changing them costs nothing until the next wait, and nothing at
        // all if they end up as they were.
        if conn.pending() > 0 {
            cx.want_send(fd);
        } else {
            cx.stop_send(fd);
        }
        if conn.eof || conn.pending() >= MAX_PENDING {
            cx.stop_recv(fd);
        } else {
            cx.want_recv(fd);
        }
    }
}

impl Handler for Server {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        if ev.owner == LISTENER {
            self.accept(cx, ev.fd);
        } else {
            self.conn_io(cx, ev);
        }
    }

    fn timer(&mut self, cx: &mut Ctx, _id: TimerId, _data: u64) {
        eprintln!("echo_server: the self-test did not finish in {SELFTEST_LIMIT:?}");
        self.timed_out = true;
        cx.stop();
    }

    fn signal(&mut self, cx: &mut Ctx, signal: anypoll::Signal) {
        println!("echo_server: signal {signal}, stopping");
        cx.stop();
    }
}

struct Options {
    port: u16,
    poller: Option<String>,
    edge: bool,
    selftest: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options { port: 0, poller: None, edge: false, selftest: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--selftest" => o.selftest = true,
            "--edge" => o.edge = true,
            "--poller" => o.poller = Some(args.next().ok_or("--poller needs a name")?),
            "-h" | "--help" => {
                return Err("usage: echo_server [PORT] [--poller NAME] [--edge] [--selftest]".into());
            }
            _ if a.starts_with("--poller=") => o.poller = Some(a["--poller=".len()..].to_string()),
            _ => o.port = a.parse().map_err(|_| format!("not a port or an option: {a}"))?,
        }
    }
    if std::env::var_os("ECHO_SELFTEST").is_some() {
        o.selftest = true;
    }
    Ok(o)
}

/// The byte at `off` of client `id`'s stream.
fn pattern(id: usize, off: usize) -> u8 {
    ((off as u64 ^ ((id as u64) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// One self-test client: sends `len` bytes in uneven chunks from a thread
/// while it reads the echo, then shuts down its side and expects EOF.
fn client(id: usize, addr: SocketAddr, len: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("client {id}: connect: {e}"))?;
    s.set_read_timeout(Some(SELFTEST_LIMIT)).map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let writer = std::thread::spawn(move || -> io::Result<()> {
        let data: Vec<u8> = (0..len).map(|i| pattern(id, i)).collect();
        let mut off = 0;
        let mut step = 1 + id * 7;
        while off < len {
            let n = step.min(len - off);
            w.write_all(&data[off..off + n])?;
            off += n;
            step = (step * 3 + 1) % 40_000 + 1;
        }
        w.shutdown(Shutdown::Write)
    });
    let mut got = 0;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("client {id}: read after {got} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern(id, got + i)) {
            return Err(format!("client {id}: byte {} came back wrong", got + i));
        }
        got += n;
    }
    writer.join().map_err(|_| format!("client {id}: writer panicked"))?.map_err(|e| format!("client {id}: {e}"))?;
    if got != len {
        return Err(format!("client {id}: {got} bytes came back, {len} were sent"));
    }
    Ok(())
}

fn selftest(addr: SocketAddr, result: Arc<Mutex<Option<Result<(), String>>>>) {
    std::thread::spawn(move || {
        let clients: Vec<_> =
            (0..4).map(|id| std::thread::spawn(move || client(id, addr, 512 * 1024 + id * 1000))).collect();
        let mut outcome = Ok(());
        for c in clients {
            let r = c.join().unwrap_or_else(|_| Err("a client panicked".into()));
            if outcome.is_ok() {
                outcome = r;
            }
        }
        *result.lock().unwrap() = Some(outcome);
        // Stop the server the way an operator would.
        // SAFETY: kill() on our own process with a signal the loop handles.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
}

fn main() -> ExitCode {
    env_logger::init();
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match serve(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(opts: &Options) -> io::Result<bool> {
    // --poller NAME, else ANYPOLL_POLLER, else the best backend here.
    let (poller, source) = registry::choose(None, opts.poller.as_deref())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut el = EventLoop::new(poller, opts.edge.then_some(Strategy::Edge))?;
    el.handle_signals(&[anypoll::Signal::Int, anypoll::Signal::Term])?;

    let l = listener::bind(SocketAddr::from(([127, 0, 0, 1], opts.port)), 1024, false)?;
    let addr = l.local_addr()?;
    el.cx().register(&l, LISTENER, FdState::RECV_ACTIVE)?;
    println!(
        "echo_server: listening on {addr} (backend {} from {source}, {} strategy); Ctrl-C stops",
        el.cx().backend(),
        el.cx().strategy().name()
    );

    let mut server = Server::default();
    let result = Arc::new(Mutex::new(None));
    if opts.selftest {
        el.cx().add_timer(SELFTEST_LIMIT, 0);
        selftest(addr, result.clone());
    }
    el.run(&mut server)?;

    let open = server.conns.iter().filter(|c| c.is_some()).count();
    for slot in 0..server.conns.len() {
        server.close(el.cx(), slot, None);
    }
    println!(
        "echo_server: stopped; {} connections, {} bytes echoed, {open} still open; {}",
        server.accepted,
        server.echoed,
        el.cx().counters()
    );
    if !opts.selftest {
        return Ok(true);
    }
    let outcome = result.lock().unwrap().take();
    match outcome {
        Some(Ok(())) if !server.timed_out && open == 0 => {
            println!("echo_server: selftest passed");
            Ok(true)
        }
        Some(Ok(())) => {
            println!("echo_server: selftest FAILED: {open} connections were left open");
            Ok(false)
        }
        Some(Err(e)) => {
            println!("echo_server: selftest FAILED: {e}");
            Ok(false)
        }
        None => {
            println!("echo_server: selftest FAILED: the clients did not finish");
            Ok(false)
        }
    }
}
