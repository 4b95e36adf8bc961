//! A TCP port forwarder: every client accepted on a local port gets a
//! connection to the target, and a [`Stream`] moves the bytes both ways.
//!
//! ```text
//! cargo run --example forward -- 7000 127.0.0.1:8000  # 127.0.0.1:7000 -> 127.0.0.1:8000
//! cargo run --example forward -- --poller poll ...    # or ANYPOLL_POLLER=poll
//! cargo run --example forward -- --selftest           # forward clients to an echo server, check, exit
//! ```
//!
//! What it shows: a [`Connection`] per socket (the accepted client and a
//! non-blocking connect to the target), both registered under the same
//! owner value, the stream's slot; [`Stream::process`] on every event for
//! either, which also sets the fds' interests; half-close, passed on by the
//! stream in both directions (a client that shuts its write side still
//! gets the rest of the reply); [`Stream::close`] once
//! [`Stream::outcome`] says it is over.
//!
//! `--selftest` starts an echo server in threads that, after the client's
//! EOF, sends a trailer saying how many bytes it got; it runs clients
//! through the forwarder concurrently, each checking every echoed byte
//! and the trailer (which it can only get if its half-close reached the
//! server through the forwarder). It passes only if every client did and
//! every stream was closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anypoll::backends::registry;
use anypoll::connection::Connection;
use anypoll::listener;
use anypoll::sockops::Real;
use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent, Strategy};

/// The listener's owner value; a stream's two connections use its slot.
const LISTENER: usize = usize::MAX - 1;

struct Forwarder {
    target: SocketAddr,
    streams: Vec<Option<Stream>>,
    pools: Pools,
    /// Streams that ended cleanly, and with an error.
    finished: u64,
    failed: u64,
}

impl Forwarder {
    fn open(&mut self, cx: &mut Ctx, sock: std::os::fd::OwnedFd, peer: SocketAddr) -> io::Result<()> {
        let slot = self.streams.iter().position(Option::is_none).unwrap_or(self.streams.len());
        let mut front = Connection::from_connected(sock);
        front.ctrl_init(cx, slot, FdState::RECV_ACTIVE)?;
        front.xprt_init();
        let mut back = match Connection::connect(self.target) {
            Ok(b) => b,
            Err(e) => {
                front.force_close(cx);
                return Err(io::Error::new(e.kind(), format!("client {peer}: connect to {}: {e}", self.target)));
            }
        };
        // Writable once the connect has ended, either way.
        if let Err(e) = back.ctrl_init(cx, slot, FdState::SEND_ACTIVE) {
            front.force_close(cx);
            back.force_close(cx);
            return Err(e);
        }
        back.xprt_init();
        if slot == self.streams.len() {
            self.streams.push(None);
        }
        self.streams[slot] = Some(Stream::new(front, back, SpliceMode::from_env(SpliceMode::Auto)));
        Ok(())
    }

    fn accept(&mut self, cx: &mut Ctx, fd: RawFd) {
        let mut fresh = Vec::new();
        listener::accept_batch(cx, fd, 64, |_, sock, peer| fresh.push((sock, peer)));
        for (sock, peer) in fresh {
            if let Err(e) = self.open(cx, sock, peer) {
                eprintln!("forward: {e}");
            }
        }
    }

    fn stream_io(&mut self, cx: &mut Ctx, slot: usize) {
        let Some(stream) = self.streams.get_mut(slot).and_then(Option::as_mut) else { return };
        match stream.process(&mut Real, cx, &mut self.pools) {
            Outcome::Running => return,
            Outcome::Finished => self.finished += 1,
            other => {
                eprintln!("forward: stream {slot}: {other:?}");
                self.failed += 1;
            }
        }
        stream.close(cx, &mut self.pools);
        self.streams[slot] = None;
    }

    fn open_streams(&self) -> usize {
        self.streams.iter().filter(|s| s.is_some()).count()
    }
}

impl Handler for Forwarder {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        match ev.owner {
            LISTENER => self.accept(cx, ev.fd),
            slot => self.stream_io(cx, slot),
        }
    }

    fn signal(&mut self, cx: &mut Ctx, signal: anypoll::Signal) {
        println!("forward: signal {signal}, stopping");
        cx.stop();
    }
}

fn main() -> ExitCode {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let (mut poller, mut edge, mut selftest, mut rest) = (None, false, false, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--selftest" => selftest = true,
            "--edge" => edge = true,
            "--poller" => poller = args.next(),
            _ => rest.push(a),
        }
    }
    let run = || -> Result<bool, String> {
        let (p, source) = registry::choose(None, poller.as_deref()).map_err(|e| e.to_string())?;
        let mut el = EventLoop::new(p, edge.then_some(Strategy::Edge)).map_err(|e| e.to_string())?;
        let (port, target) = match (selftest, rest.as_slice()) {
            (true, []) => (0, echo_server().map_err(|e| format!("echo server: {e}"))?),
            (false, [port, target]) => (
                port.parse().map_err(|_| format!("not a port: {port}"))?,
                target.parse().map_err(|_| format!("not an address: {target}"))?,
            ),
            _ => return Err("usage: forward PORT TARGET_ADDR | --selftest [--poller NAME] [--edge]".into()),
        };
        let l = listener::bind(SocketAddr::from(([127, 0, 0, 1], port)), 1024, false).map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        el.cx().register(&l, LISTENER, FdState::RECV_ACTIVE).map_err(|e| format!("listener {addr}: {e}"))?;
        println!("forward: {addr} -> {target} (backend {} from {source})", el.cx().backend());
        let mut fwd = Forwarder { target, streams: Vec::new(), pools: Pools::new(16 * 1024), finished: 0, failed: 0 };
        if !selftest {
            el.handle_signals(&[anypoll::Signal::Int, anypoll::Signal::Term]).map_err(|e| e.to_string())?;
            el.run(&mut fwd).map_err(|e| e.to_string())?;
            return Ok(true);
        }
        self_test(&mut el, &mut fwd, addr)
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("forward: {e}");
            ExitCode::from(2)
        }
    }
}

// ---- the self-test -------------------------------------------------------

const CLIENTS: usize = 6;
const LIMIT: Duration = Duration::from_secs(30);

/// A blocking echo server, a thread per connection: echoes until EOF, then
/// writes `got N\n` and closes.
fn echo_server() -> io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().take(CLIENTS) {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || -> io::Result<()> {
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                loop {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n])?;
                    got += n;
                }
                s.write_all(format!("got {got}\n").as_bytes())
            });
        }
    });
    Ok(addr)
}

fn pattern(id: usize, off: usize) -> u8 {
    (off.wrapping_mul(31) ^ id.wrapping_mul(0x9E37)) as u8
}

/// Sends `len` bytes from a thread while it reads the echo, shuts its write
/// side, and expects the rest of the echo, then the trailer, then EOF.
fn client(id: usize, addr: SocketAddr, len: usize) -> Result<(), String> {
    let err = |what: &str, e: io::Error| format!("client {id}: {what}: {e}");
    let mut s = TcpStream::connect(addr).map_err(|e| err("connect", e))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| err("set_read_timeout", e))?;
    let mut w = s.try_clone().map_err(|e| err("try_clone", e))?;
    let writer = std::thread::spawn(move || -> io::Result<()> {
        let data: Vec<u8> = (0..len).map(|i| pattern(id, i)).collect();
        for chunk in data.chunks(1000 + id * 3000) {
            w.write_all(chunk)?;
        }
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| err(&format!("read after {} bytes", got.len()), e))?;
    writer.join().map_err(|_| format!("client {id}: writer panicked"))?.map_err(|e| err("write", e))?;
    let trailer = format!("got {len}\n");
    if got.len() != len + trailer.len() {
        return Err(format!("client {id}: {} bytes came back, {} expected", got.len(), len + trailer.len()));
    }
    if let Some(i) = (0..len).find(|&i| got[i] != pattern(id, i)) {
        return Err(format!("client {id}: byte {i} came back wrong"));
    }
    if got[len..] != *trailer.as_bytes() {
        return Err(format!("client {id}: trailer {:?}, expected {trailer:?}", String::from_utf8_lossy(&got[len..])));
    }
    Ok(())
}

fn self_test(el: &mut EventLoop, fwd: &mut Forwarder, addr: SocketAddr) -> Result<bool, String> {
    let clients: Vec<_> =
        (0..CLIENTS).map(|id| std::thread::spawn(move || client(id, addr, 100_000 + id * 150_000))).collect();
    let deadline = Instant::now() + LIMIT;
    // Until every client is done and every stream closed, or the deadline.
    while !(clients.iter().all(|c| c.is_finished()) && fwd.open_streams() == 0) {
        if Instant::now() > deadline {
            println!("forward: selftest FAILED: not done in {LIMIT:?}, {} streams open", fwd.open_streams());
            return Ok(false);
        }
        el.run_once(fwd, Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
    }
    let errors: Vec<String> = clients
        .into_iter()
        .filter_map(|c| c.join().unwrap_or_else(|_| Err("a client panicked".into())).err())
        .collect();
    let fds = el.cx().fd_count();
    println!("forward: {} streams finished, {} failed, {fds} fds registered", fwd.finished, fwd.failed);
    if errors.is_empty() && fwd.finished == CLIENTS as u64 && fwd.failed == 0 && fds == 1 {
        println!("forward: selftest passed");
        return Ok(true);
    }
    println!("forward: selftest FAILED: {errors:?}");
    Ok(false)
}
