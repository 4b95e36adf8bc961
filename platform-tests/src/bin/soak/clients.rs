//! The soak's clients: one thread (mio) keeping N connections to the relay
//! open, of five kinds, each checking every byte it gets back.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::Rng;

/// A client with no progress for this long is stuck: the relay should
/// have closed it (its idle timeouts are shorter).
pub const STUCK: Duration = Duration::from_secs(25);
/// New connections opened per loop turn at most: enough to keep N open
/// when short transfers end quickly, small enough for the relay's listen
/// backlog (1,024 per listener).
const OPEN_BURST: usize = 250;
const CHUNK: usize = 16 * 1024;

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sends a payload while reading the echo, half-closes, reads to EOF.
    Normal,
    /// Sends the whole payload and half-closes before reading anything.
    HalfClose,
    /// Sends part of a payload, then resets (SO_LINGER 0 + close).
    Reset,
    /// Trickles one byte every 100-500 ms.
    Slowloris,
    /// Sends 1-4 KiB every 100-300 ms, 10-30 times, reading the echo: a
    /// long-lived, mostly idle transfer (it keeps N connections open
    /// without the CPU that N busy ones would need).
    Paced,
    /// Random bytes, a half-close after a random count (0 included), then
    /// either reads the rest or closes without reading.
    Garbage,
}

impl Kind {
    /// Sends on a schedule rather than as fast as it can.
    fn paced(self) -> bool {
        matches!(self, Kind::Slowloris | Kind::Paced)
    }
}

/// All kinds, for reports.
pub const KINDS: [Kind; 6] = [Kind::Normal, Kind::HalfClose, Kind::Reset, Kind::Slowloris, Kind::Paced, Kind::Garbage];

/// How a client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// Every byte came back, in order, and the checksum matched.
    Completed,
    /// The relay closed or reset it before the whole echo came back (the
    /// bytes that came were a correct prefix).
    Truncated,
    /// It reset the connection itself, as planned.
    Reset,
    /// It closed without reading, as planned.
    Abandoned,
    /// Its connect failed.
    ConnectFailed,
    /// A byte differed, came in excess, or the checksum did not match.
    Corrupt,
    /// No progress for [`STUCK`].
    Stuck,
}

/// What the clients did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// (kind, end) → count.
    pub ends: HashMap<(Kind, End), u64>,
    /// Connections opened.
    pub opened: u64,
    /// Bytes of completed transfers (verified by byte and checksum).
    pub bytes_verified: u64,
    /// Bytes checked in truncated transfers (a correct prefix).
    pub prefix_bytes: u64,
    /// Local addresses of the clients that reset.
    pub resets: Vec<SocketAddr>,
    /// Most connections open at once.
    pub peak_live: usize,
    /// Connections open on average (over time) until `stop`.
    pub avg_live: f64,
    /// When the last client was closed.
    pub last_close: Option<Instant>,
    /// A few corrupt/stuck details.
    pub problems: Vec<String>,
}

impl LoadReport {
    /// How many ended so.
    pub fn count(&self, kind: Option<Kind>, end: End) -> u64 {
        self.ends.iter().filter(|((k, e), _)| *e == end && kind.is_none_or(|x| x == *k)).map(|(_, n)| n).sum()
    }
}

/// The bytes of a client's stream from offset `from`. A slowloris stream
/// is `tag << 4 | offset % 16` (tag = seed % 16), so that a stray byte
/// tells whose it is and where it was; the others are seeded noise.
fn pattern(kind: Kind, seed: u64, from: u64, out: &mut [u8]) {
    if kind == Kind::Slowloris {
        for (j, b) in out.iter_mut().enumerate() {
            *b = ((seed as u8 & 0xf) << 4) | ((from + j as u64) as u8 & 0xf);
        }
    } else {
        fill(seed, from, out);
    }
}

/// Byte `i` of the stream seeded with `seed`.
fn fill(seed: u64, from: u64, out: &mut [u8]) {
    let mut i = from;
    let mut k = 0;
    while k < out.len() {
        let word = crate::splitmix(seed ^ (i / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let bytes = word.to_le_bytes();
        let off = (i % 8) as usize;
        let n = (8 - off).min(out.len() - k);
        out[k..k + n].copy_from_slice(&bytes[off..off + n]);
        k += n;
        i += n as u64;
    }
}

fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

struct Client {
    kind: Kind,
    sock: TcpStream,
    seed: u64,
    len: u64,
    sent: u64,
    recvd: u64,
    send_hash: u64,
    recv_hash: u64,
    connected: bool,
    wr_shut: bool,
    rd_eof: bool,
    reset_at: u64,
    abandon: bool,
    /// Bytes per step for the paced kinds.
    step: usize,
    next_drip: Instant,
    last_progress: Instant,
    local: Option<SocketAddr>,
    /// What was wrong, for a corrupt end.
    why: String,
}

enum Step {
    Continue,
    Done(End),
}

fn is_wouldblock(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Client {
    fn new(kind: Kind, sock: TcpStream, rng: &mut Rng, now: Instant) -> Client {
        let seed = rng.next_u64();
        // Log-uniform sizes: many small transfers, some large.
        let log_len = |rng: &mut Rng, max_bits: u64| 1u64 << (rng.next_u64() % max_bits);
        let len = match kind {
            Kind::Normal => log_len(rng, 18) + rng.next_u64() % 1024,
            Kind::HalfClose => (log_len(rng, 16) + rng.next_u64() % 1024).min(64 * 1024),
            Kind::Reset => 2 + log_len(rng, 18) + rng.next_u64() % 1024,
            Kind::Slowloris => 3 + rng.next_u64() % 13,
            Kind::Paced => 0, // set from the step below
            Kind::Garbage => {
                if rng.next_u64() & 3 == 0 {
                    0
                } else {
                    rng.next_u64() % 8192
                }
            }
        };
        let step = match kind {
            Kind::Slowloris => 1,
            Kind::Paced => 1024 + (rng.next_u64() % 3072) as usize,
            _ => CHUNK,
        };
        let len = if kind == Kind::Paced { step as u64 * (10 + rng.next_u64() % 21) } else { len };
        let reset_at = if kind == Kind::Reset { 1 + rng.next_u64() % (len - 1) } else { u64::MAX };
        Client {
            kind,
            sock,
            seed,
            len,
            sent: 0,
            recvd: 0,
            send_hash: FNV0,
            recv_hash: FNV0,
            connected: false,
            wr_shut: false,
            rd_eof: false,
            reset_at,
            step,
            abandon: kind == Kind::Garbage && rng.next_u64() & 1 == 0,
            next_drip: now,
            last_progress: now,
            local: None,
            why: String::new(),
        }
    }

    fn drive(&mut self, now: Instant, rng: &mut Rng, scratch: &mut [u8], expect: &mut [u8]) -> Step {
        if !self.connected {
            if let Ok(Some(_)) | Err(_) = self.sock.take_error() {
                return Step::Done(End::ConnectFailed);
            }
            match self.sock.peer_addr() {
                Ok(_) => {
                    self.connected = true;
                    self.local = self.sock.local_addr().ok();
                    self.last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Continue,
                Err(_) => return Step::Done(End::ConnectFailed),
            }
        }
        // Send.
        while self.sent < self.len && !self.wr_shut {
            if self.sent >= self.reset_at {
                break;
            }
            let mut n = (self.len - self.sent).min(CHUNK as u64).min(self.reset_at - self.sent) as usize;
            if self.kind.paced() {
                if now < self.next_drip {
                    break;
                }
                n = n.min(self.step);
                self.next_drip = now
                    + match self.kind {
                        Kind::Slowloris => Duration::from_millis(100 + rng.next_u64() % 400),
                        _ => Duration::from_millis(100 + rng.next_u64() % 200),
                    };
            }
            pattern(self.kind, self.seed, self.sent, &mut scratch[..n]);
            match self.sock.write(&scratch[..n]) {
                Ok(k) => {
                    self.send_hash = fnv(self.send_hash, &scratch[..k]);
                    self.sent += k as u64;
                    self.last_progress = now;
                }
                Err(e) if is_wouldblock(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The relay closed or reset us (no server up, server
                // killed): whatever came back is checked below.
                Err(_) => return self.end_early(now, scratch, expect),
            }
            if self.kind.paced() {
                break;
            }
        }
        if self.sent >= self.reset_at {
            linger0(&self.sock);
            return Step::Done(End::Reset);
        }
        if self.sent == self.len && !self.wr_shut {
            if self.sock.shutdown(Shutdown::Write).is_err() {
                return self.end_early(now, scratch, expect);
            }
            self.wr_shut = true;
            if self.abandon {
                return Step::Done(End::Abandoned);
            }
        }
        // Receive (a half-closing client only once it has sent it all).
        if self.kind == Kind::HalfClose && !self.wr_shut {
            return Step::Continue;
        }
        match self.read_all(now, scratch, expect) {
            Err(end) => Step::Done(end),
            Ok(false) => Step::Continue,
            Ok(true) if self.wr_shut && self.recvd == self.len => {
                if self.recv_hash == self.send_hash {
                    Step::Done(End::Completed)
                } else {
                    Step::Done(End::Corrupt)
                }
            }
            Ok(true) => Step::Done(End::Truncated),
        }
    }

    /// The relay closed or reset us early: checks what came back.
    fn end_early(&mut self, now: Instant, scratch: &mut [u8], expect: &mut [u8]) -> Step {
        match self.read_all(now, scratch, expect) {
            Err(end) => Step::Done(end),
            Ok(_) => Step::Done(End::Truncated),
        }
    }

    /// Reads what is there; `Ok(true)` at EOF or a reset, `Err` on
    /// corruption.
    fn read_all(&mut self, now: Instant, scratch: &mut [u8], expect: &mut [u8]) -> Result<bool, End> {
        loop {
            match self.sock.read(scratch) {
                Ok(0) => {
                    self.rd_eof = true;
                    self.last_progress = now;
                    return Ok(true);
                }
                Ok(n) => {
                    self.last_progress = now;
                    if self.recvd + n as u64 > self.sent {
                        self.why =
                            format!("{n} B read at {}, more than sent: {:02x?}", self.recvd, &scratch[..n.min(24)]);
                        return Err(End::Corrupt);
                    }
                    pattern(self.kind, self.seed, self.recvd, &mut expect[..n]);
                    if scratch[..n] != expect[..n] {
                        let at = (0..n).find(|&i| scratch[i] != expect[i]).unwrap_or(0);
                        self.why = format!(
                            "{n} B read at {}: byte {at} differs: got {:02x?} expected {:02x?}",
                            self.recvd,
                            &scratch[..n.min(24)],
                            &expect[..n.min(24)]
                        );
                        return Err(End::Corrupt);
                    }
                    self.recv_hash = fnv(self.recv_hash, &scratch[..n]);
                    self.recvd += n as u64;
                }
                Err(e) if is_wouldblock(&e) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(true),
            }
        }
    }
}

fn linger0(sock: &TcpStream) {
    crate::backend::linger0(sock.as_raw_fd());
}

/// Load settings.
pub struct Load {
    /// The relay's address.
    pub relay: SocketAddr,
    /// Connections to keep open.
    pub conns: usize,
    /// Seed.
    pub seed: u64,
    /// Set to stop opening connections; the live ones are then finished.
    pub stop: Arc<AtomicBool>,
    /// Live connections now (for the driver).
    pub live: Arc<AtomicUsize>,
    /// How long to wait for the last ones after `stop`.
    pub drain: Duration,
}

fn pick_kind(rng: &mut Rng) -> Kind {
    match rng.next_u64() % 100 {
        0..=24 => Kind::Normal,
        25..=34 => Kind::HalfClose,
        35..=49 => Kind::Reset,
        50..=59 => Kind::Slowloris,
        60..=89 => Kind::Paced,
        _ => Kind::Garbage,
    }
}

/// Runs the load until `stop` and the drain; blocking.
pub fn run(load: Load) -> io::Result<LoadReport> {
    let mut rng = Rng(load.seed);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live = 0usize;
    let mut report = LoadReport::default();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let mut stopped_at: Option<Instant> = None;
    let mut last_scan = Instant::now();
    let mut slow: Vec<usize> = Vec::new();
    let (t0, mut t_last, mut live_time) = (Instant::now(), Instant::now(), 0f64);
    loop {
        let now = Instant::now();
        if stopped_at.is_none() {
            live_time += live as f64 * now.duration_since(t_last).as_secs_f64();
            t_last = now;
            report.avg_live = live_time / now.duration_since(t0).as_secs_f64().max(1e-9);
        }
        if stopped_at.is_none() && load.stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        if stopped_at.is_none() {
            let mut opened = 0;
            while live < load.conns && opened < OPEN_BURST {
                opened += 1;
                let mut sock = match TcpStream::connect(load.relay) {
                    Ok(s) => s,
                    Err(e) => {
                        *report.ends.entry((Kind::Normal, End::ConnectFailed)).or_default() += 1;
                        if report.problems.len() < 20 {
                            report.problems.push(format!("connect: {e}"));
                        }
                        continue;
                    }
                };
                let idx = free.pop().unwrap_or_else(|| {
                    clients.push(None);
                    clients.len() - 1
                });
                poll.registry().register(&mut sock, Token(idx), Interest::READABLE | Interest::WRITABLE)?;
                let kind = pick_kind(&mut rng);
                if kind.paced() {
                    slow.push(idx);
                }
                clients[idx] = Some(Client::new(kind, sock, &mut rng, now));
                live += 1;
                report.opened += 1;
            }
            report.peak_live = report.peak_live.max(live);
        }
        load.live.store(live, Ordering::Relaxed);
        if let Some(t) = stopped_at {
            if live == 0 {
                break;
            }
            if now.duration_since(t) > load.drain {
                for c in clients.iter_mut().filter_map(Option::take) {
                    record(&mut report, &c, End::Stuck, now);
                }
                break;
            }
        }
        match poll.poll(&mut events, Some(Duration::from_millis(20))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let mut due: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        slow.retain(|&i| clients[i].as_ref().is_some_and(|c| c.kind.paced()));
        due.extend(slow.iter().copied().filter(|&i| clients[i].as_ref().is_some_and(|c| c.next_drip <= now)));
        let scan = now.duration_since(last_scan) > Duration::from_millis(500);
        for idx in due {
            let Some(c) = clients.get_mut(idx).and_then(Option::as_mut) else { continue };
            if let Step::Done(end) = c.drive(now, &mut rng, &mut scratch, &mut expect) {
                let mut c = clients[idx].take().expect("client");
                let _ = poll.registry().deregister(&mut c.sock);
                record(&mut report, &c, end, now);
                free.push(idx);
                live -= 1;
            }
        }
        if scan {
            last_scan = now;
            for (idx, slot) in clients.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|c| now.duration_since(c.last_progress) > STUCK) {
                    let mut c = slot.take().expect("client");
                    let _ = poll.registry().deregister(&mut c.sock);
                    record(&mut report, &c, End::Stuck, now);
                    free.push(idx);
                    live -= 1;
                }
            }
        }
    }
    load.live.store(0, Ordering::Relaxed);
    Ok(report)
}

fn record(report: &mut LoadReport, c: &Client, end: End, now: Instant) {
    *report.ends.entry((c.kind, end)).or_default() += 1;
    match end {
        End::Completed => report.bytes_verified += c.len,
        End::Truncated => report.prefix_bytes += c.recvd,
        End::Reset => report.resets.extend(c.local),
        End::Corrupt | End::Stuck if report.problems.len() < 20 => report.problems.push(format!(
            "{:?} client {:?} ({:?}): sent {}/{} B, got {} B, write shut {}, EOF {}, {:?} since progress {}",
            end,
            c.local,
            c.kind,
            c.sent,
            c.len,
            c.recvd,
            c.wr_shut,
            c.rd_eof,
            now.duration_since(c.last_progress),
            c.why
        )),
        _ => {}
    }
    report.last_close = Some(now);
}
