//! A line-based chat server on [`BufConn`]: every line a client sends goes
//! to every client (the sender included).
//!
//! ```text
//! cargo run --example chat -- [PORT] [--poller NAME]   # 127.0.0.1, a free port by default
//! cargo run --example chat -- --selftest [--poller NAME]
//! ```
//!
//! The library does the work: line splitting, a bounded output queue per
//! client (64 KiB), idle timeouts (a client that sends no line for 300 s
//! is dropped: the read timeout, since a listener still receives others'
//! lines), flush-then-close after a client's EOF. A client
//! whose queue is full is slow: it is disconnected, and nobody else waits
//! for it. Lines are sent as they are read (each `write` sends what the
//! socket takes at once), so a burst never piles up for fast readers.
//!
//! `--selftest` runs three fast clients that chat while they read, a slow
//! one that sends but never reads, and an idle one that reads but never
//! sends. It passes if the fast ones get every line of every fast client,
//! in order, the slow one is dropped for its full queue and the idle one
//! for its timeout (1 s in the self-test). The clients are in `selftest.rs`.

mod selftest;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anypoll::backends::registry;
use anypoll::bufconn::{BufConn, Config, Events, WriteError};
use anypoll::transport::RawSock;
use anypoll::{listener, Ctx, EventLoop, FdState, Handler, IoEvent, TimerId};

const LISTENER: usize = usize::MAX - 1;
/// The self-test gives up after this.
const LIMIT: Duration = Duration::from_secs(40);
/// Fast clients in the self-test.
const FAST: usize = 3;

#[derive(Default)]
struct Drops {
    /// Clients accepted: the fast ones write once every client is in.
    accepted: AtomicUsize,
    slow: AtomicUsize,
    idle: AtomicUsize,
}

struct Chat {
    clients: Vec<Option<BufConn<RawSock>>>,
    cfg: Config,
    drops: Arc<Drops>,
    timed_out: bool,
    /// A signal came: stop once the last client is gone (or at the limit).
    stopping: bool,
}

impl Chat {
    fn drop_client(&mut self, cx: &mut Ctx, slot: usize, why: &str) {
        if let Some(mut c) = self.clients[slot].take() {
            log::info!("client {slot}: {why}; {:?}", c.counters());
            c.close(cx);
        }
        if self.stopping && self.clients.iter().all(Option::is_none) {
            cx.stop();
        }
    }

    fn broadcast(&mut self, cx: &mut Ctx, line: &[u8]) {
        for slot in 0..self.clients.len() {
            let Some(c) = self.clients[slot].as_mut() else { continue };
            match c.write(cx, line) {
                Ok(()) => {}
                Err(WriteError::Full { .. }) => {
                    self.drops.slow.fetch_add(1, SeqCst);
                    self.drop_client(cx, slot, "slow: its output queue is full");
                }
                Err(WriteError::Closed) if c.is_closed() => self.drop_client(cx, slot, "gone"),
                Err(WriteError::Closed) => {} // closing after its EOF
            }
        }
    }

    fn event(&mut self, cx: &mut Ctx, slot: usize, ev: Events) {
        if ev.contains(Events::CLOSED) {
            return self.drop_client(cx, slot, "closed");
        }
        if ev.contains(Events::TIMEOUT) {
            self.drops.idle.fetch_add(1, SeqCst);
            return self.drop_client(cx, slot, "idle");
        }
        let mut line = Vec::new();
        while let Some(c) = self.clients[slot].as_mut() {
            line.clear();
            if c.read_line(cx, &mut line).is_none() {
                break;
            }
            self.broadcast(cx, &line);
        }
        let Some(c) = self.clients[slot].as_mut() else { return };
        if c.input_len() == self.cfg.input_capacity {
            return self.drop_client(cx, slot, "line too long");
        }
        if ev.contains(Events::READ_EOF) && c.close_when_flushed(cx).contains(Events::CLOSED) {
            self.drop_client(cx, slot, "done");
        }
    }
}

impl Handler for Chat {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        if ev.owner != LISTENER {
            let Some(c) = self.clients.get_mut(ev.owner).and_then(Option::as_mut) else { return };
            let events = c.on_io(cx);
            return self.event(cx, ev.owner, events);
        }
        let (clients, cfg, drops) = (&mut self.clients, self.cfg, &self.drops);
        listener::accept_batch(cx, ev.fd, 64, |cx, sock, peer| {
            let slot = clients.iter().position(Option::is_none).unwrap_or_else(|| {
                clients.push(None);
                clients.len() - 1
            });
            match BufConn::accepted(cx, sock, slot, RawSock, cfg) {
                Ok(c) => {
                    clients[slot] = Some(c);
                    drops.accepted.fetch_add(1, SeqCst);
                }
                Err(e) => eprintln!("chat: {peer}: {e}"),
            }
        });
    }

    fn timer(&mut self, cx: &mut Ctx, id: TimerId, data: u64) {
        let slot = data as usize;
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            if !self.stopping {
                eprintln!("chat: the self-test did not finish in {LIMIT:?}");
                self.timed_out = true;
            }
            return cx.stop();
        };
        let events = c.on_timer(cx, id);
        self.event(cx, slot, events);
    }

    fn signal(&mut self, cx: &mut Ctx, _signal: anypoll::Signal) {
        self.stopping = true;
        if self.clients.iter().all(Option::is_none) {
            cx.stop();
        }
        cx.add_timer(Duration::from_secs(3), u64::MAX); // the last ones linger at most this
    }
}

fn main() -> ExitCode {
    env_logger::init();
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<bool> {
    let (mut port, mut poller, mut test) = (0u16, None, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--selftest" => test = true,
            "--poller" => poller = args.next(),
            _ => {
                port = a.parse().map_err(|_| {
                    io::Error::other(format!("usage: chat [PORT] [--poller NAME] [--selftest]; not a port: {a}"))
                })?
            }
        }
    }
    let (p, _) = registry::choose(None, poller.as_deref()).map_err(|e| io::Error::other(e.to_string()))?;
    let mut el = EventLoop::new(p, None)?;
    el.handle_signals(&[anypoll::Signal::Int, anypoll::Signal::Term])?;
    let l = listener::bind(SocketAddr::from(([127, 0, 0, 1], port)), 1024, false)?;
    let addr = l.local_addr()?;
    el.cx().register(&l, LISTENER, FdState::RECV_ACTIVE)?;
    let idle = if test { Duration::from_secs(1) } else { Duration::from_secs(300) };
    let cfg = Config { input_capacity: 4096, output_high: 64 * 1024, read_timeout: Some(idle), ..Config::default() };
    println!("chat: listening on {addr} (backend {})", el.cx().backend());
    let drops = Arc::new(Drops::default());
    let mut chat = Chat { clients: Vec::new(), cfg, drops: drops.clone(), timed_out: false, stopping: false };
    let results = Arc::new(Mutex::new(Vec::new()));
    if test {
        el.cx().add_timer(LIMIT + Duration::from_secs(5), u64::MAX);
        selftest::start(addr, idle, drops.clone(), results.clone());
    }
    el.run(&mut chat)?;
    let open = chat.clients.iter().filter(|c| c.is_some()).count();
    let (slow, idle) = (drops.slow.load(SeqCst), drops.idle.load(SeqCst));
    println!("chat: stopped; dropped {slow} slow, {idle} idle; {open} open");
    if !test {
        return Ok(true);
    }
    let results = results.lock().unwrap();
    results.iter().for_each(|r| println!("chat: {}", r.as_ref().unwrap_or_else(|e| e)));
    let ok = results.len() == FAST + 2 && results.iter().all(Result::is_ok);
    if ok && slow == 1 && idle == 1 && open == 0 && !chat.timed_out {
        println!("chat: selftest passed");
        return Ok(true);
    }
    println!("chat: selftest FAILED (want 1 slow and 1 idle dropped, every client ok, none open)");
    Ok(false)
}
